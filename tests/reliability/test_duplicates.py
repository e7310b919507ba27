"""Issue 10, duplicates and races through the real DAG (claims.py and prepare's version pinning).

* the same S3 notification delivered twice → two runs, one claim: one plan job, one delivery;
* two uploads of one key in quick succession → the run of the first version skips as superseded,
  the latest version is processed once.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

import pytest

from reelforge.operators.slurm import slurm_job_name
from tests.e2e.test_sr_dag import DAG_ID, INGEST, job_for, sr_dag  # noqa: F401
from tests.media_utils import make_clip, probe
from tests.reliability.e2e_helpers import (
    delete_versions,
    runs_of_key,
    s3_event,
    slurm_job_names,
    task_log,
    wait_for_runs,
)

pytestmark = [pytest.mark.stack, pytest.mark.slow]
QUEUE_URL = os.environ.get("REELFORGE_SR_INGEST_QUEUE_URL", "")


@pytest.fixture
def tiny_clip(shared_data, tmp_path):
    """12 frames of 32x18 with audio: the cheapest clip the whole pipeline processes."""
    def make(name: str, tone: int):
        return make_clip(shared_data / "video" / "moviepy_doc_example2_bbb.mp4", tmp_path / name,
                         width=32, height=18, seconds=0.5, tone=tone)
    return make


def _delivered_keys(aws, job: dict) -> list[str]:
    listed = aws.s3.list_object_versions(Bucket="reelforge-output", Prefix=job["output_prefix"])
    return [v["Key"] for v in listed.get("Versions", [])]


def two_successful_runs(airflow, known: set[str], key: str) -> dict[str, dict]:
    """Wait for the two runs the key's notifications start; both must succeed. Their task states, by run."""
    found = wait_for_runs(airflow, known, lambda f: len(runs_of_key(f, key)) >= 2)
    runs = runs_of_key(found, key)
    assert len(runs) == 2, found
    for run_id in runs:
        assert airflow.wait_for_run(DAG_ID, run_id, timeout=300) == "success", airflow.task_states(DAG_ID, run_id)
    return {r: airflow.task_states(DAG_ID, r) for r in runs}


def test_same_notification_twice_is_one_run_of_work(sr_dag, aws, sns_inbox, tiny_clip):  # noqa: F811
    clip = tiny_clip("dup.mp4", 550)
    # outside the notified prefix, so the only notifications are the two identical ones sent here
    key = f"manual/reliability/dup-{uuid.uuid4().hex[:6]}/clip.mp4"
    put = aws.s3.put_object(Bucket=INGEST, Key=key, Body=clip.read_bytes())
    body = s3_event(INGEST, key, put, clip.stat().st_size)
    known = {r["dag_run_id"] for r in sr_dag.runs(DAG_ID)}
    try:
        aws.sqs.send_message(QueueUrl=QUEUE_URL, MessageBody=body)
        aws.sqs.send_message(QueueUrl=QUEUE_URL, MessageBody=body)
        states = two_successful_runs(sr_dag, known, key)
        runs = list(states)
        worked = [r for r in runs if states[r]["plan_segments"] == "success"]
        skipped = [r for r in runs if states[r]["prepare"] == "skipped"]
        assert len(worked) == 1 and len(skipped) == 1, states
        assert all(v == "skipped" for t, v in states[skipped[0]].items() if t != "prepare"), states
        assert f"is already handled by run {worked[0]}" in task_log(skipped[0], "prepare")

        names = slurm_job_names()
        for task in ("plan_segments", "upscale_segments", "assemble_and_deliver"):
            assert names.count(slurm_job_name(DAG_ID, worked[0], task)) == 1, task
            assert slurm_job_name(DAG_ID, skipped[0], task) not in names, task
        job = job_for(key, put)
        delivered = _delivered_keys(aws, job)
        assert sorted(delivered) == sorted(set(delivered)), "an object was delivered twice"
        assert f"{job['output_prefix']}report.json" in delivered
        done = [m for m in sns_inbox() if m.get("event") == "sr_succeeded" and m.get("job_id") == job["job_id"]]
        assert len(done) == 1, done
    finally:
        delete_versions(aws.s3, key)


def test_two_quick_uploads_of_one_key_process_only_the_latest(sr_dag, aws, sns_inbox, tiny_clip, tmp_path):  # noqa: F811
    first, second = tiny_clip("v1.mp4", 440), tiny_clip("v2.mp4", 880)
    assert first.read_bytes() != second.read_bytes()
    key = f"sr/incoming/reliability/race-{uuid.uuid4().hex[:6]}/clip.mp4"
    known = {r["dag_run_id"] for r in sr_dag.runs(DAG_ID)}
    try:
        put1 = aws.s3.put_object(Bucket=INGEST, Key=key, Body=first.read_bytes())
        put2 = aws.s3.put_object(Bucket=INGEST, Key=key, Body=second.read_bytes())
        assert put1["VersionId"] != put2["VersionId"], "the ingest bucket must be versioned"
        states = two_successful_runs(sr_dag, known, key)
        runs = list(states)
        (new,) = [r for r in runs if states[r]["notify_success"] == "success"]
        (old,) = [r for r in runs if states[r]["prepare"] == "skipped"]
        # Real S3 names the version in the event and prepare skips the older one as superseded; moto's
        # events carry no versionId, so both runs pin the latest version and the claim drops the second.
        assert re.search(f"was superseded by {re.escape(put2['VersionId'])}|is already handled by run {re.escape(new)}",
                         task_log(old, "prepare")), task_log(old, "prepare")[-2000:]
        names = slurm_job_names()
        assert slurm_job_name(DAG_ID, old, "plan_segments") not in names
        assert names.count(slurm_job_name(DAG_ID, new, "plan_segments")) == 1
        stale, latest = job_for(key, put1), job_for(key, put2)
        assert not _delivered_keys(aws, stale), "the superseded version was processed"
        # the cluster fetched exactly the second version; the first never reached shared storage
        fetched = json.loads((Path(latest["workdir"]) / "input" / "source.mp4.s3.json").read_text())
        assert fetched["version_id"] == put2["VersionId"]
        assert not Path(stale["workdir"]).exists()
        video = next(k for k in _delivered_keys(aws, latest) if k.endswith(".mp4"))
        out = tmp_path / "out.mp4"
        aws.s3.download_file("reelforge-output", video, str(out))
        streams = probe(out)["streams"]
        assert [s["nb_read_frames"] for s in streams if s["codec_type"] == "video"] == ["12"]
        assert [s["codec_type"] for s in streams].count("audio") == 1
        done = [m for m in sns_inbox() if m.get("event") == "sr_succeeded" and m.get("job_id") == latest["job_id"]]
        assert len(done) == 1, done
    finally:
        delete_versions(aws.s3, key)
