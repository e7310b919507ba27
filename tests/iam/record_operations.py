"""Regenerate the ``recorded`` sections of ``include/iam/operations.json`` from the tests' AWS calls.

    # record while running the tests that drive the DAGs (Airflow on :8080: take the shared lock)
    flock /tmp/reelforge-airflow.lock .venv/bin/python tests/iam/record_operations.py --worker --run \\
        tests/dags/stylegan2 tests/dags/avatar tests/e2e/test_sr_dag.py tests/e2e/test_ingest_reconciler.py \\
        tests/e2e/test_catalog_backfill.py tests/e2e/animate_anyone
    # or fold in logs recorded earlier (REELFORGE_AWS_CALL_LOG=... pytest ...)
    .venv/bin/python tests/iam/record_operations.py --log /tmp/calls.jsonl [--replace]

``--worker`` also records the jobs that Slurm runs over SSH (no environment of ours reaches them): for the
run it writes ``zz_reelforge_aws_recorder.pth`` into the SR worker venv and the AnimateAnyone job venv
(where they exist) and the log path into
``/tmp/reelforge-aws-recorder.path``, and removes both afterwards.

Without ``--replace`` the new calls are added to what the record lists (a partial run keeps the rest);
with it, the ``recorded`` section of every policy this log touches is rebuilt from the log alone.
``principal`` and ``unrecorded`` (hand-written reasons) are kept as they are.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # run as a script too (python tests/iam/record_...)
from recording import load_calls_module  # noqa: E402

_calls = load_calls_module()
PREFIX_MARK, RECORD, ROOT, attribute, load_calls = (_calls.PREFIX_MARK, _calls.RECORD, _calls.ROOT, _calls.attribute,
                                                    _calls.load_calls)

GROUPS_PER_FAMILY = 6
MAX_BY = 12
RECORDER_DIR = ROOT / "tests" / "support" / "aws_recorder"
# The venvs the Slurm jobs run with: the SR worker's, and the AnimateAnyone jobs' (tests/e2e/animate_anyone).
WORKER_VENVS = [Path(os.environ.get("REELFORGE_WORKER_VENV", "/opt/reelforge/worker-venv")),
                Path(os.environ.get("REELFORGE_AA_VENV", "/opt/reelforge/animate-anyone-venv"))]
WORKER_FLAG = Path("/tmp/reelforge-aws-recorder.path")
PTH = "zz_reelforge_aws_recorder.pth"


def merge(record: dict, calls: list[dict], replace: bool) -> tuple[dict, list[dict]]:
    found, unattributed = attribute(calls)
    policies = record.setdefault("policies", {})
    fresh: dict[str, dict[str, dict]] = {}
    for need in found:
        entry = fresh.setdefault(need.policy, {}).setdefault(need.action, {"resources": set(), "by": set()})
        entry["resources"].add(need.arn)
        entry["by"].add(need.source)
    for policy, actions in fresh.items():
        section = policies.setdefault(policy, {"principal": "", "recorded": {}, "unrecorded": {}})
        recorded = {} if replace else section.get("recorded", {})
        for action, entry in actions.items():
            old = recorded.get(action, {"resources": [], "by": []})
            resources = examples(set(old["resources"]) | entry["resources"])
            recorded[action] = {"resources": resources, "by": sorted(set(old["by"]) | entry["by"])[:MAX_BY]}
        section["recorded"] = dict(sorted(recorded.items()))
        section.get("unrecorded", {}).pop("", None)
        for action in section["recorded"]:
            section.get("unrecorded", {}).pop(action, None)  # recorded now: its reason is obsolete
    return record, unattributed


def _group(arn: str) -> tuple[str, str]:
    """(family, group): S3 examples group by their first three key folders (policies scope to prefixes that
    deep), within a family of bucket and first folder; other ARNs by their type."""
    if arn.startswith("arn:aws:s3:::"):
        path, mark, _ = arn.partition(PREFIX_MARK)
        bucket, _, key = path.partition("/")
        folders = key.split("/")[:-1][:3]
        return f"{bucket}/{folders[0] if folders else ''}{mark}", "/".join([bucket, *folders]) + mark
    return arn.rsplit("/", 1)[0], arn.rsplit("/", 1)[0]


def examples(arns: set[str]) -> list[str]:
    """One example per folder group, at most GROUPS_PER_FAMILY groups per bucket folder (fixed folders such
    as ``_claims`` first), so that every prefix a policy names and a call touched stays represented."""
    groups: dict[tuple[str, str], str] = {}
    for arn in sorted(arns, key=lambda a: (len(a), a)):
        groups.setdefault(_group(arn), arn)
    kept: dict[str, list[str]] = {}
    for (family, _), arn in sorted(groups.items(), key=lambda item: ("/_" not in item[0][1], item[0][1])):
        if len(kept.setdefault(family, [])) < GROUPS_PER_FAMILY:
            kept[family].append(arn)
    return sorted(a for family in kept.values() for a in family)


def site_packages(venv: Path) -> Path:
    return next((venv / "lib").glob("python3*/site-packages"))


def run_recorded(tests: list[str], log: Path, worker: bool) -> int:
    log.touch()
    log.chmod(0o666)  # the SR worker runs as the cluster user
    pths = [site_packages(venv) / PTH for venv in WORKER_VENVS if venv.is_dir()] if worker else []
    if pths:
        WORKER_FLAG.write_text(str(log))
        WORKER_FLAG.chmod(0o644)
    for pth in pths:
        pth.write_text(f"{RECORDER_DIR}\nimport reelforge_aws_recorder; reelforge_aws_recorder.install_worker()\n")
    try:
        env = {**os.environ, "REELFORGE_AWS_CALL_LOG": str(log), "REELFORGE_AWS_CALL_CHECK": "off"}
        return subprocess.call([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *tests], env=env,
                               cwd=ROOT)
    finally:
        for pth in pths:
            pth.unlink(missing_ok=True)
        if pths:
            WORKER_FLAG.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log", action="append", default=[], help="a recorded call log (JSON lines); repeatable")
    parser.add_argument("--run", nargs=argparse.REMAINDER, metavar="PYTEST_ARG",
                        help="(last) run pytest with these arguments and recording on, first")
    parser.add_argument("--worker", action="store_true", help="also record the SR worker on the Slurm nodes")
    parser.add_argument("--replace", action="store_true", help="rebuild the touched policies' recorded sections")
    parser.add_argument("--record", type=Path, default=RECORD)
    args = parser.parse_args(argv)
    logs = [Path(p) for p in args.log]
    if args.run:
        log = Path(tempfile.mkdtemp(prefix="reelforge-aws-calls-")) / "calls.jsonl"
        Path(log.parent).chmod(0o755)
        rc = run_recorded(args.run, log, args.worker)
        print(f"pytest exited {rc}; calls in {log}")
        logs.append(log)
    calls = [c for p in logs for c in load_calls(p)]
    record, unattributed = merge(json.loads(args.record.read_text()), calls, args.replace)
    args.record.write_text(json.dumps(record, indent=2) + "\n")
    print(f"{len(calls)} calls folded into {args.record}")
    for call in unattributed:
        print("unattributed:", json.dumps(call)[:300])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
