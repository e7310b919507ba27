"""A 3-day archive processed by `airflow backfill create`, one clip already done and skipped."""

from __future__ import annotations

import json
import os
import subprocess
import time
import uuid
from datetime import UTC, datetime

import pytest

from reelforge.sr.catalog import CATALOG_PARAMS
from reelforge.sr.job import build_job
from reelforge.storage import S3Object
from tests.e2e.test_sr_dag import local_settings
from tests.media_utils import make_clip

pytestmark = [pytest.mark.stack, pytest.mark.slow]
DAG_ID = "video_catalog_backfill"
DAYS = ["2026-03-01", "2026-03-02", "2026-03-03"]


def create_backfill(airflow, attempts: int = 3) -> None:
    """``airflow backfill create`` for DAYS, as a user runs it.

    The local stack's database outlives test sessions, so the days may have runs already (they are
    reprocessed) and a backfill whose scheduler stopped before marking it complete may linger (it is
    cancelled: only one runs per DAG). On SQLite the CLI can lose a write race with the running
    scheduler ("database is locked", raised at once, not after the busy timeout); it then left a
    half-made backfill behind, which is cancelled before the command is run again.
    """
    for attempt in range(attempts):
        for backfill in airflow.api("GET", "/backfills", params={"dag_id": DAG_ID})["backfills"]:
            if not backfill["completed_at"]:
                airflow.api("PUT", f"/backfills/{backfill['id']}/cancel")
        result = subprocess.run(
            ["airflow", "backfill", "create", "--dag-id", DAG_ID, "--from-date", DAYS[0], "--to-date", DAYS[-1],
             "--run-backwards", "--reprocess-behavior", "completed"],
            capture_output=True, text=True, timeout=120,
        )
        if result.returncode == 0:
            return
        if "database is locked" not in result.stderr or attempt == attempts - 1:
            raise AssertionError(result.stdout + result.stderr)
        time.sleep(2)


def this_backfill(airflow, started: str) -> dict[str, dict]:
    """The backfill runs (by day) queued since ``started``."""
    return {r["logical_date"][:10]: r for r in airflow.runs(DAG_ID)
            if r["run_type"] == "backfill" and (r.get("queued_at") or "") >= started}


def test_backfill_processes_each_day_and_skips_done_videos(airflow, aws, shared_data, tmp_path):
    airflow.wait_for_dag(DAG_ID)
    airflow.wait_for_dag("video_super_resolution")
    airflow.unpause("video_super_resolution")
    tag = uuid.uuid4().hex[:6]
    prefix = f"archive-{tag}/"
    puts = {}
    for n, day in enumerate(DAYS):
        clip = make_clip(shared_data / "video" / "moviepy_doc_example2_bbb.mp4", tmp_path / f"{day}.mp4",
                         width=64, height=36, seconds=1.0, tone=300 + 100 * n)
        key = f"{prefix}{day}/reel {n}.mp4"
        puts[day] = (key, aws.s3.put_object(Bucket="reelforge-ingest", Key=key, Body=clip.read_bytes()))
    aws.s3.put_object(Bucket="reelforge-ingest", Key=f"{prefix}{DAYS[1]}/notes.txt", Body=b"not a video")
    # The third day's clip was delivered earlier: its report exists at the deterministic location.
    key, put = puts[DAYS[2]]
    done = build_job(S3Object("reelforge-ingest", key, put.get("VersionId"), put["ETag"].strip('"')),
                     CATALOG_PARAMS, local_settings())
    aws.s3.put_object(Bucket="reelforge-output", Key=f"{done['output_prefix']}report.json", Body=b"{}")

    airflow.api("POST", "/variables", json={"key": "reelforge_backfill_archive_prefix", "value": prefix})
    started = datetime.now(UTC).isoformat()
    try:
        create_backfill(airflow)
        deadline = time.monotonic() + 900
        while time.monotonic() < deadline:
            runs = this_backfill(airflow, started)
            if set(DAYS) <= set(runs) and all(r["state"] in {"success", "failed"} for r in runs.values()):
                break
            time.sleep(5)
        runs = this_backfill(airflow, started)
        assert set(DAYS) <= set(runs), runs.keys()
        assert all(runs[d]["state"] == "success" for d in DAYS), {d: runs[d]["state"] for d in DAYS}
    finally:
        airflow.api("DELETE", "/variables/reelforge_backfill_archive_prefix")

    reports = {}
    for day in DAYS:
        body = aws.s3.get_object(Bucket="reelforge-output", Key=f"sr/_catalog_reports/{day}.json")["Body"].read()
        reports[day] = json.loads(body)["counts"]
        listed = aws.s3.list_objects_v2(Bucket="reelforge-output", Prefix=f"sr/_catalog_reports/{day}.announced/")
        sent = [o for o in listed.get("Contents", []) if o["LastModified"] >= datetime.fromisoformat(started)]
        assert len(sent) == 1, f"{day}: the summary's receipt of this backfill ({listed.get('Contents')})"
        receipt = json.loads(aws.s3.get_object(Bucket="reelforge-output", Key=sent[0]["Key"])["Body"].read())
        assert receipt["run_id"] == runs[day]["dag_run_id"] and receipt["message_id"]
    assert reports[DAYS[0]] == {"done": 1, "skipped": 0, "failed": 0}
    assert reports[DAYS[1]] == {"done": 1, "skipped": 0, "failed": 0}  # notes.txt is not a video
    assert reports[DAYS[2]] == {"done": 0, "skipped": 1, "failed": 0}
    sr_runs = {r["dag_run_id"] for r in airflow.runs("video_super_resolution")}
    assert not any(done["job_id"] in r for r in sr_runs), "the already-done video was processed again"


def test_a_dry_run_from_the_form_lists_the_work_and_its_estimate_and_starts_nothing(airflow, aws, shared_data,
                                                                                    tmp_path):
    airflow.wait_for_dag(DAG_ID)
    airflow.unpause(DAG_ID)
    prefix = f"dry-{uuid.uuid4().hex[:6]}/season 1/"
    puts = {}
    for n in range(2):
        clip = make_clip(shared_data / "video" / "moviepy_doc_example2_bbb.mp4", tmp_path / f"{n}.mp4",
                         width=64, height=36, seconds=1.0, tone=300 + 100 * n)  # 24 frames of 64x36
        key = f"{prefix}episode {n}.mp4"
        puts[key] = aws.s3.put_object(Bucket="reelforge-ingest", Key=key, Body=clip.read_bytes())
    form = {"archive_prefix": prefix, "manifest_uri": "", "model": "anime", "scale": 2, "dry_run": True}
    delivered_key = f"{prefix}episode 1.mp4"
    put = puts[delivered_key]
    done = build_job(S3Object("reelforge-ingest", delivered_key, put.get("VersionId"), put["ETag"].strip('"')),
                     {**CATALOG_PARAMS, "model": "anime", "scale": 2}, local_settings())
    aws.s3.put_object(Bucket="reelforge-output", Key=f"{done['output_prefix']}report.json", Body=b"{}")
    sr_before = {r["dag_run_id"] for r in airflow.runs("video_super_resolution")}

    run_id = airflow.trigger(DAG_ID, form)
    assert airflow.wait_for_run(DAG_ID, run_id, timeout=300) == "success", airflow.task_states(DAG_ID, run_id)

    run = airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}")
    day = (run["logical_date"] or run["run_after"])[:10]  # a form run has no logical date: the day it ran
    report = json.loads(aws.s3.get_object(Bucket="reelforge-output",
                                          Key=f"sr/_catalog_reports/{day}.dry-run.json")["Body"].read())
    assert report["selection"] == f"s3://reelforge-ingest/{prefix}"
    assert report["counts"] == {"would_run": 1, "skipped": 1, "invalid": 0}
    (todo,) = report["todo"]
    assert todo["source"] == f"s3://reelforge-ingest/{prefix}episode 0.mp4"
    assert todo["conf"]["scale"] == 2 and todo["conf"]["model"] == "anime"
    rate = float(os.environ.get("AIRFLOW_VAR_REELFORGE_SR_MPIX_PER_SECOND", "2.0"))
    assert todo["model_seconds"] == pytest.approx(24 * 64 * 36 / 1e6 / rate, rel=0.01)
    assert report["estimate"]["model_seconds"] == pytest.approx(todo["model_seconds"], abs=0.1)
    assert report["skipped"][0]["source"].endswith("episode 1.mp4")
    assert {r["dag_run_id"] for r in airflow.runs("video_super_resolution")} == sr_before, "a dry run started work"
    assert airflow.task_states(DAG_ID, run_id)["upscale_video"] in {"skipped", "success"}
