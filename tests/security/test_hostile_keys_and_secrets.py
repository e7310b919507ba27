"""Issue 10, security: hostile S3 keys reach the cluster only as data; no secret in any log.

(Host-key verification is tested in tests/plugins/slurm/test_slurm_cluster.py; hostile job names,
paths and env values through the Slurm operator there too. Here: the SR DAG's own path.)
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import uuid
from pathlib import Path

import pytest

from reelforge.operators.slurm import slurm_job_name
from tests.e2e.test_sr_dag import DAG_ID, INGEST, job_for, sr_dag  # noqa: F401
from tests.media_utils import make_clip
from tests.reliability.e2e_helpers import (
    claiming_run,
    delete_versions,
    runs_of_key,
    s3_event,
    slurm_job_names,
    task_log,
    wait_for_runs,
)

pytestmark = [pytest.mark.stack]
WORK_ROOT = Path(os.environ.get("AIRFLOW_VAR_REELFORGE_CLUSTER_WORK_ROOT", "/srv/reelforge"))


@pytest.mark.slow
def test_hostile_keys_through_the_dag_are_never_executed(sr_dag, aws, sns_inbox, shared_data, tmp_path):  # noqa: F811
    tag = uuid.uuid4().hex[:8]
    markers = [Path(f"/tmp/rf-pwned-{tag}"), Path(f"/home/reelforge/rf-pwned-{tag}")]
    touch = f"touch {markers[0]}"
    hostile = (f"sr/incoming/security-{tag}/it's \"q\"; {touch}; $({touch}) `{touch}` | {touch} & "
               f"> out < in \\ $HOME %s %j {{}} *.mp4")
    newline = f"sr/incoming/security-{tag}/line\n{touch}.mp4"
    dotdot = f"sr/incoming/security-{tag}/../../escape.mp4"  # the worker refuses it: so must prepare (issue 21)
    # a real (tiny) video: the hostile key travels through S3 events, SSH, sbatch, every Slurm step and
    # the delivery; the newline key is refused by prepare
    body = make_clip(shared_data / "video" / "moviepy_doc_example2_bbb.mp4", tmp_path / "clip.mp4",
                     width=32, height=18, seconds=0.5, tone=500).read_bytes()
    known = {r["dag_run_id"] for r in sr_dag.runs(DAG_ID)}
    try:
        put = aws.s3.put_object(Bucket=INGEST, Key=hostile, Body=body)
        # moto refuses a newline in a key (real S3 allows it): deliver its notification by hand
        aws.sqs.send_message(QueueUrl=os.environ["REELFORGE_SR_INGEST_QUEUE_URL"],
                             MessageBody=s3_event(INGEST, newline, {"ETag": '"0"'}, 4096))
        aws.sqs.send_message(QueueUrl=os.environ["REELFORGE_SR_INGEST_QUEUE_URL"],
                             MessageBody=s3_event(INGEST, dotdot, {"ETag": '"0"'}, 4096))
        found = wait_for_runs(sr_dag, known, lambda f: all(runs_of_key(f, k) for k in (hostile, newline, dotdot)))
        # refused keys fail at prepare in every run; of the hostile key's runs, one claims it
        run_nl, run_dd = (runs_of_key(found, k)[0] for k in (newline, dotdot))
        run = claiming_run(sr_dag, hostile, known)
        assert sr_dag.wait_for_run(DAG_ID, run, timeout=300) == "success", sr_dag.task_states(DAG_ID, run)
        assert sr_dag.wait_for_run(DAG_ID, run_nl, timeout=180) == "failed"
        assert sr_dag.wait_for_run(DAG_ID, run_dd, timeout=180) == "failed"
    finally:
        delete_versions(aws.s3, f"sr/incoming/security-{tag}/")

    # the hostile key reached the worker byte for byte: it fetched exactly this object
    job = job_for(hostile, put)
    fetched = json.loads((Path(job["workdir"]) / "input" / "source.mp4.s3.json").read_text())
    assert fetched["key"] == hostile
    digest = hashlib.sha256((Path(job["workdir"]) / "input" / "source.mp4").read_bytes()).hexdigest()
    assert digest == hashlib.sha256(body).hexdigest()
    delivered = aws.s3.list_objects_v2(Bucket="reelforge-output", Prefix=job["output_prefix"]).get("Contents", [])
    assert any(o["Key"].endswith("report.json") for o in delivered), "the hostile key's video was not delivered"
    # the newline and '..' keys are refused by prepare, at the first try and with the reason: no Slurm job at all
    failures = {m["run_id"]: m for m in sns_inbox() if m.get("event") == "sr_failed"}
    assert run not in failures
    for refused, why in ((run_nl, "contains control characters"), (run_dd, "'..' path segment")):
        assert sr_dag.task_states(DAG_ID, refused)["prepare"] == "failed"
        assert why in task_log(refused, "prepare")
        assert slurm_job_name(DAG_ID, refused, "plan_segments") not in slurm_job_names()
        assert why in failures[refused]["reason"] and failures[refused]["try_number"] == 1

    for marker in markers + [Path(job["workdir"]) / f"rf-pwned-{tag}", Path(job["workdir"]) / "input" / "in"]:
        assert not marker.exists(), f"{marker} exists: part of a key was executed"
    assert not any(p.name.startswith("rf-pwned-") for p in Path(job["workdir"]).rglob("*"))


# ------------------------------------------------------------------------------ secrets in logs

def _secrets() -> dict[str, re.Pattern[str]]:
    """What must never be logged: private-key material and connection passwords/secrets."""
    found: dict[str, re.Pattern[str]] = {}
    key_files = {os.environ.get("REELFORGE_SSH_KEY", "")}
    for name, value in os.environ.items():
        if not name.startswith("AIRFLOW_CONN_"):
            continue
        conn = json.loads(value)
        extra = conn.get("extra") or {}
        key_files.add(extra.get("key_file", ""))
        for field, secret in (("password", conn.get("password")), ("aws_secret_access_key",
                                                                 extra.get("aws_secret_access_key"))):
            if not secret:
                continue
            if len(secret) >= 12:
                found[f"{name} {field}"] = re.compile(re.escape(secret))
            else:  # a short local secret ("testing") is a common word: look for it as a credential
                found[f"{name} {field}"] = re.compile(
                    rf"(?i)(secret|password|passwd|credential)[\w\"']*\s*[:=]\s*[\"']?{re.escape(secret)}\b")
        if extra.get("private_key"):
            key_files.add("")
            found[f"{name} private_key"] = re.compile(re.escape(extra["private_key"].strip().splitlines()[1]))
    for path in filter(None, key_files):
        lines = Path(path).read_text().strip().splitlines()
        for i, line in enumerate(lines[1:-1]):
            if len(line) >= 16:
                found[f"{path} line {i + 1}"] = re.compile(re.escape(line))
    found["any private key"] = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")
    return found


def _log_files() -> list[Path]:
    files = [p for p in Path(os.environ["AIRFLOW__LOGGING__BASE_LOG_FOLDER"]).rglob("*") if p.is_file()]
    for sub in ("logs", ".slurm"):  # Slurm task logs and the submitted scripts (their env exports)
        files += [p for p in WORK_ROOT.glob(f"**/{sub}/*") if p.is_file()]
    return files


def _leaks(files: list[Path], secrets: dict[str, re.Pattern[str]]) -> list[str]:
    leaks = []
    for path in files:
        text = path.read_bytes()[:5_000_000].decode(errors="replace")
        leaks += [f"{path}: {what}" for what, pattern in secrets.items() if pattern.search(text)]
    return leaks


def test_no_secret_in_airflow_task_logs_or_slurm_logs(tmp_path):
    secrets = _secrets()
    assert any("line" in k for k in secrets), "no SSH private key found to look for"
    files = _log_files()
    assert any("dag_id=" in str(p) for p in files) and any(WORK_ROOT in p.parents for p in files), files[:5]
    # the scan does see a leak when there is one
    planted = tmp_path / "planted.log"
    key_line = next(p for k, p in secrets.items() if "line" in k).pattern.replace("\\", "")
    planted.write_text(f"debug: key {key_line}\nextra={{'password': 'testing'}}\n")
    assert _leaks([planted], secrets)
    assert _leaks(files, secrets) == []
