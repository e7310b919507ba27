"""Issue 23: StyleGAN2, avatar and AnimateAnyone start from a plain S3 upload, with no notification set up.

The local stack sets no queue URL for these workflows and the ingest bucket notifies nothing for their
prefixes, so the only way a run can start is the workflow's upload reconciler. Each test uploads what
the workflow counts as an upload, sees the reconciler's run start with that upload version in its conf,
sees its first task record the version in the ledger and claim it, and sees the next passes start no
second run for the same version. The runs are then stopped: what follows is each workflow's own test.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Iterator
from datetime import datetime

import pytest

from tests.e2e.conftest import AIRFLOW_ENV
from tests.reliability.e2e_helpers import delete_versions

pytestmark = [pytest.mark.stack, pytest.mark.slow]

INGEST = "reelforge-ingest"
DATASET_PREFIX = AIRFLOW_ENV["AIRFLOW_VAR_REELFORGE_STYLEGAN2_DATASET_PREFIX"]  # the session Airflow's
MANIFEST_PREFIX = AIRFLOW_ENV["AIRFLOW_VAR_REELFORGE_ANIMATE_ANYONE_MANIFEST_PREFIX"]
SELFIE_PREFIX = os.environ.get("AIRFLOW_VAR_REELFORGE_AVATAR_INGEST_PREFIX", "avatar/incoming/")
QUEUE_VARIABLES = ("REELFORGE_STYLEGAN2_DATASET_QUEUE_URL", "REELFORGE_AVATAR_SELFIE_QUEUE_URL",
                   "REELFORGE_AA_MANIFEST_QUEUE_URL")


@pytest.fixture(scope="module")
def watched(airflow, aws) -> Iterator:
    """The three workflows and their reconcilers unpaused for this module; notifications provably off."""
    assert not [v for v in QUEUE_VARIABLES if os.environ.get(v)], "these tests need notifications switched off"
    notified = aws.s3.get_bucket_notification_configuration(Bucket=INGEST).get("QueueConfigurations", [])
    for rule in notified:
        prefixes = [r["Value"] for r in rule.get("Filter", {}).get("Key", {}).get("FilterRules", [])
                    if r["Name"].lower() == "prefix"]
        assert prefixes and not any(p.startswith(("stylegan2/", "avatar/", "animate-anyone/")) for p in prefixes), rule
    dags = ["stylegan2_training", "avatar_personalization", "animate_anyone_training",
            "stylegan2_upload_reconciler", "avatar_upload_reconciler", "animate_anyone_upload_reconciler"]
    paused = {}
    for dag_id in dags:
        airflow.wait_for_dag(dag_id)
        paused[dag_id] = airflow.api("GET", f"/dags/{dag_id}")["is_paused"]
        airflow.unpause(dag_id)
    yield airflow
    for dag_id in dags[3:]:
        airflow.pause(dag_id)  # they list S3 every 15 s here: not while other tests run
    for dag_id in dags[:3]:
        if paused[dag_id]:
            airflow.pause(dag_id)


def put(aws, key: str, body: bytes = b"") -> dict:
    answer = aws.s3.put_object(Bucket=INGEST, Key=key, Body=body)
    return {"uri": f"s3://{INGEST}/{key}", "version_id": answer["VersionId"], "etag": answer["ETag"].strip('"')}


def runs_for(airflow, dag_id: str, upload: dict) -> list[dict]:
    return [r for r in airflow.runs(dag_id)
            if ((r.get("conf") or {}).get("reelforge_upload") or {}).get("version_id") == upload["version_id"]]


def wait_until(what: str, timeout: float, probe, interval: float = 2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := probe():
            return found
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def state_objects(aws, bucket: str, prefix: str) -> list[dict]:
    listed = aws.s3.list_objects_v2(Bucket=bucket, Prefix=prefix).get("Contents", [])
    return [json.loads(aws.s3.get_object(Bucket=bucket, Key=o["Key"])["Body"].read()) for o in listed]


def stop(airflow, dag_id: str, run_id: str) -> None:
    """The rest of the workflow is its own test's business: fail this run so it stops here."""
    airflow.api("PATCH", f"/dags/{dag_id}/dagRuns/{run_id}", json={"state": "failed"})


def started_once(airflow, aws, *, name: str, dag_id: str, upload: dict, conf: dict, state: tuple[str, str],
                 next_task: str, uploaded_at: float) -> dict:
    """The reconciler starts one run for ``upload``; its claim_upload records and claims it; no second run."""
    (run,) = wait_until(f"a {dag_id} run for {upload['uri']}", 180, lambda: runs_for(airflow, dag_id, upload))
    assert run["dag_run_id"].startswith("reconcile__"), run
    assert run["conf"] == {**conf, "reelforge_upload": upload}
    print(f"{dag_id}: upload → run queued after "
          f"{datetime.fromisoformat(run['queued_at']).timestamp() - uploaded_at:.0f} s")
    states = wait_until(f"claim_upload of {run['dag_run_id']}", 180, lambda: (
        s if (s := airflow.task_states(dag_id, run["dag_run_id"])).get("claim_upload") in ("success", "failed",
                                                                                             "skipped") else None))
    assert states["claim_upload"] == "success", states
    bucket, prefix = state
    ledger = [e for e in state_objects(aws, bucket, f"{prefix}_intake/") if e["source"] == upload["uri"]]
    assert [(e["version_id"], e["etag"], e["run_id"]) for e in ledger] == [
        (upload["version_id"], upload["etag"], run["dag_run_id"])]
    claims = [c for c in state_objects(aws, bucket, f"{prefix}_claims/") if c["uri"] == upload["uri"]]
    assert [(c["version_id"], c["run_id"]) for c in claims] == [(upload["version_id"], run["dag_run_id"])]
    # the workflow's own first task reads the upload from the run's conf
    done = ("success", "failed", "upstream_failed", "skipped")
    wait_until(f"{next_task} to finish", 180, interval=0.5,
               probe=lambda: airflow.task_states(dag_id, run["dag_run_id"]).get(next_task) in done)
    stop(airflow, dag_id, run["dag_run_id"])
    assert airflow.task_states(dag_id, run["dag_run_id"])[next_task] == "success"

    # two more passes after the run exists: still one run for this version
    reconciler = f"{name}_upload_reconciler"
    created = datetime.fromisoformat(run["queued_at"])
    wait_until("two more reconciler passes", 120, lambda: len([
        r for r in airflow.runs(reconciler) if r["state"] == "success" and r.get("start_date")
        and datetime.fromisoformat(r["start_date"]) > created]) >= 2)
    assert [r["dag_run_id"] for r in runs_for(airflow, dag_id, upload)] == [run["dag_run_id"]]
    return run


def test_a_stylegan2_dataset_upload_starts_one_training_run(watched, aws):
    folder = f"{DATASET_PREFIX}faces-{uuid.uuid4().hex[:6]}/"
    try:
        for i in range(3):
            put(aws, f"{folder}img{i:03d}.png", b"\x89PNG\r\n\x1a\n" + os.urandom(64))
        marker, at = put(aws, f"{folder}_READY"), time.time()
        run = started_once(watched, aws, name="stylegan2", dag_id="stylegan2_training", upload=marker,
                           conf={"dataset_uri": f"s3://{INGEST}/{folder}"},
                           state=("reelforge-artifacts", "stylegan2/"), next_task="plan", uploaded_at=at)

        # a late notification's run of the same upload (same version): it finds the claim and does nothing
        late = watched.trigger("stylegan2_training", run["conf"], run_id=f"late__{uuid.uuid4().hex[:8]}")
        assert watched.wait_for_run("stylegan2_training", late, timeout=180) == "success"
        states = watched.task_states("stylegan2_training", late)
        assert (states["claim_upload"], states["plan"]) == ("skipped", "skipped"), states
    finally:
        delete_versions(aws.s3, folder)


def test_an_avatar_selfie_set_starts_one_personalization_run(watched, aws):
    user = f"e2e-{uuid.uuid4().hex[:6]}"
    folder = f"{SELFIE_PREFIX}{user}/set-1/"
    try:
        for i in range(10):
            put(aws, f"{folder}selfie-{i:02d}.jpg", b"\xff\xd8\xff\xe0" + os.urandom(64))
        marker, at = put(aws, f"{folder}_READY"), time.time()
        started_once(watched, aws, name="avatar", dag_id="avatar_personalization", upload=marker,
                           conf={"user_id": user, "selfies_uri": f"s3://{INGEST}/{folder}"},
                           state=("reelforge-artifacts", "avatar/"), next_task="plan", uploaded_at=at)
    finally:
        delete_versions(aws.s3, folder)


def test_an_animate_anyone_manifest_upload_starts_one_training_run(watched, aws):
    key = f"{MANIFEST_PREFIX}dance-{uuid.uuid4().hex[:6]}.json"
    entries = [{"video_path": f"/fsx/data/dance/{i:03d}.mp4", "kps_path": f"/fsx/data/dance/{i:03d}_kps.mp4"}
               for i in range(2)]
    try:
        manifest, at = put(aws, key, json.dumps(entries).encode()), time.time()
        started_once(watched, aws, name="animate_anyone", dag_id="animate_anyone_training", upload=manifest,
                           conf={"manifest_uri": manifest["uri"]},
                           state=("reelforge-output", "animate-anyone/"), next_task="stage_manifest", uploaded_at=at)
    finally:
        delete_versions(aws.s3, key)
