"""Overhead of the whole SR pipeline on the local stack: a short clip from upload to delivered video.

Prints: seconds from the S3 upload to the first Slurm task starting, total wall time (upload → run
finished), the sum of worker (Slurm task) time, the critical path of worker time (plan + longest
array task + assemble), overhead ratio = wall / worker-sum and fixed overhead = wall − critical path.

Needs the local stack (`make stack`) and no other Airflow on :8080. Slurm accounting is switched
on for the measurement (sacct gives start/end per array task) and restored afterwards.

    source .local-stack/env.sh && .venv/bin/python bench/pipeline_overhead.py [--seconds 4]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "scripts"), str(ROOT / "plugins")]

from airflow_local import LocalAirflow  # noqa: E402

DAG_ID = "video_super_resolution"
SLURM_TASKS = ("plan_segments", "upscale_segments", "assemble_and_deliver")


def accounting() -> str:
    return os.environ.get("REELFORGE_SLURM_ACCOUNTING", "off")


def switch_accounting(mode: str) -> None:
    subprocess.run(["bash", str(ROOT / "scripts/local-stack"), "accounting", mode], check=True,
                   capture_output=True)
    os.environ["REELFORGE_SLURM_ACCOUNTING"] = mode


def sacct_times(job_ids: list[str]) -> list[tuple[str, datetime, datetime]]:
    """(job step id, start, end) of every task of these jobs, once all are recorded."""
    out = subprocess.run(
        ["sacct", "-X", "-P", "-n", "-j", ",".join(job_ids), "--format=JobID,Start,End,State"],
        capture_output=True, text=True, check=True,
    ).stdout
    rows = []
    for line in out.splitlines():
        job, start, end, state = line.split("|")
        if start in ("Unknown", "None") or end in ("Unknown", "None"):
            raise RuntimeError(f"sacct has not recorded {job} yet ({state})")
        rows.append((job, datetime.fromisoformat(start), datetime.fromisoformat(end)))
    return rows


def make_clip(seconds: float, path: Path) -> Path:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=160x90:rate=24:duration={seconds}",
         "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={seconds}",
         "-c:v", "libx264", "-g", "24", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(path)],
        check=True,
    )
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=4.0, help="clip length (160x90, 24 fps)")
    args = parser.parse_args()

    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    s3 = S3Hook(aws_conn_id="aws_default").get_conn()
    original = accounting()
    if original != "on":
        switch_accounting("on")
    state = Path(os.environ.get("REELFORGE_STATE_DIR", ROOT / ".local-stack"))
    airflow = LocalAirflow(state / "logs" / "airflow-bench.log")
    try:
        airflow.start()
        airflow.wait_for_dag(DAG_ID)
        airflow.unpause(DAG_ID)
        known = {r["dag_run_id"] for r in airflow.runs(DAG_ID)}
        time.sleep(3)
        with tempfile.TemporaryDirectory() as tmp:
            clip = make_clip(args.seconds, Path(tmp) / "bench.mp4")
            key = f"sr/incoming/bench/{uuid.uuid4().hex[:8]}.mp4"
            uploaded_at = datetime.now().astimezone()
            s3.upload_file(str(clip), "reelforge-ingest", key)
        run_id = airflow.wait_for_new_run(DAG_ID, known, timeout=120)
        if airflow.wait_for_run(DAG_ID, run_id, timeout=1800) != "success":
            print(f"run failed: {airflow.task_states(DAG_ID, run_id)}", file=sys.stderr)
            return 1
        run = airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")
        finished_at = datetime.fromisoformat(run["end_date"])
        job_ids = []
        for task in SLURM_TASKS:
            xcom = airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/{task}/xcomEntries/return_value",
                               params={"deserialize": "true"})["value"]
            job_ids += list(xcom["job_ids"])
        for _ in range(30):  # sacct lags squeue by seconds
            try:
                rows = sacct_times(job_ids)
                break
            except RuntimeError:
                time.sleep(1)
        else:
            raise RuntimeError("sacct never recorded every task")
    finally:
        airflow.stop()
        if original != "on":
            switch_accounting(original)

    tz = uploaded_at.tzinfo
    rows = [(j, s.replace(tzinfo=tz), e.replace(tzinfo=tz)) for j, s, e in rows]  # sacct prints local time
    first_start = min(s for _, s, _ in rows)
    worker_sum = sum((e - s).total_seconds() for _, s, e in rows)
    by_job: dict[str, list[float]] = {}
    for job, s, e in rows:
        by_job.setdefault(job.split("_")[0], []).append((e - s).total_seconds())
    critical = sum(max(v) for v in by_job.values())
    wall = (finished_at - uploaded_at).total_seconds()
    print(f"clip: 160x90, {args.seconds:g} s at 24 fps; {len(rows)} Slurm tasks in {len(by_job)} jobs")
    print(f"upload → first Slurm task start : {(first_start - uploaded_at).total_seconds():7.1f} s")
    print(f"total wall (upload → run done)  : {wall:7.1f} s")
    print(f"sum of worker time              : {worker_sum:7.1f} s")
    print(f"critical path of worker time    : {critical:7.1f} s")
    print(f"overhead ratio wall / worker-sum: {wall / worker_sum:7.2f}")
    print(f"fixed overhead wall − critical  : {wall - critical:7.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
