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


WORKFLOWS = {"stylegan2": ("stylegan2_training", "plan"), "avatar": ("avatar_personalization", "plan"),
             "animate_anyone": ("animate_anyone_training", "stage_manifest")}
DONE = ("success", "failed", "upstream_failed", "skipped")


@pytest.fixture(scope="module")
def uploads(watched, aws) -> Iterator[dict[str, tuple[dict, float, str]]]:
    """One upload per workflow, all made at once so that the three reconcilers work side by side:
    ``{workflow: (the upload's version, when it was made, what to delete afterwards)}``."""
    made: dict[str, tuple[dict, float, str]] = {}
    folder = f"{DATASET_PREFIX}faces-{uuid.uuid4().hex[:6]}/"
    for i in range(3):
        put(aws, f"{folder}img{i:03d}.png", b"\x89PNG\r\n\x1a\n" + os.urandom(64))
    made["stylegan2"] = (put(aws, f"{folder}_READY"), time.time(), folder)
    user = f"e2e-{uuid.uuid4().hex[:6]}"
    selfies = f"{SELFIE_PREFIX}{user}/set-1/"
    for i in range(10):
        put(aws, f"{selfies}selfie-{i:02d}.jpg", b"\xff\xd8\xff\xe0" + os.urandom(64))
    made["avatar"] = (put(aws, f"{selfies}_READY"), time.time(), selfies)
    key = f"{MANIFEST_PREFIX}dance-{uuid.uuid4().hex[:6]}.json"
    entries = [{"video_path": f"/fsx/data/dance/{i:03d}.mp4", "kps_path": f"/fsx/data/dance/{i:03d}_kps.mp4"}
               for i in range(2)]
    made["animate_anyone"] = (put(aws, key, json.dumps(entries).encode()), time.time(), key)
    try:
        yield made
    finally:
        for _, _, prefix in made.values():
            delete_versions(aws.s3, prefix)


@pytest.fixture(scope="module")
def started(watched, uploads) -> dict[str, tuple[dict, dict]]:
    """Each upload's run, followed side by side and stopped as soon as the task after ``claim_upload``
    has ended (the rest of each workflow is its own test's business): ``{workflow: (run, task states)}``."""
    pending, seen = dict(WORKFLOWS), {}
    deadline = time.monotonic() + 240
    while pending and time.monotonic() < deadline:
        for name, (dag_id, next_task) in list(pending.items()):
            runs = runs_for(watched, dag_id, uploads[name][0])
            if runs and (states := watched.task_states(dag_id, runs[0]["dag_run_id"])).get(next_task) in DONE:
                stop(watched, dag_id, runs[0]["dag_run_id"])
                seen[name] = (runs[0], states)
                del pending[name]
        time.sleep(2)  # three DAGs polled: gently, the API server shares SQLite with the scheduler
    return seen


def started_once(airflow, aws, started: dict, *, name: str, upload: dict, uploaded_at: float, conf: dict,
                 state: tuple[str, str]) -> dict:
    """The reconciler started one run for ``upload``; its claim_upload recorded and claimed it; the task after
    it read the upload from the run's conf; and later passes start no second run."""
    dag_id, next_task = WORKFLOWS[name]
    assert name in started, f"no {dag_id} run for {upload['uri']} reached {next_task} within 240 s"
    run, states = started[name]
    assert run["dag_run_id"].startswith("reconcile__"), run
    assert run["conf"] == {**conf, "reelforge_upload": upload}
    print(f"{dag_id}: upload → run queued after "
          f"{datetime.fromisoformat(run['queued_at']).timestamp() - uploaded_at:.0f} s")
    assert (states["claim_upload"], states[next_task]) == ("success", "success"), states
    bucket, prefix = state
    ledger = [e for e in state_objects(aws, bucket, f"{prefix}_intake/") if e["source"] == upload["uri"]]
    assert [(e["version_id"], e["etag"], e["run_id"]) for e in ledger] == [
        (upload["version_id"], upload["etag"], run["dag_run_id"])]
    claims = [c for c in state_objects(aws, bucket, f"{prefix}_claims/") if c["uri"] == upload["uri"]]
    assert [(c["version_id"], c["run_id"]) for c in claims] == [(upload["version_id"], run["dag_run_id"])]

    # two more passes after the run exists: still one run for this version
    reconciler = f"{name}_upload_reconciler"
    created = datetime.fromisoformat(run["queued_at"])
    wait_until("two more reconciler passes", 120, lambda: len([
        r for r in airflow.runs(reconciler) if r["state"] == "success" and r.get("start_date")
        and datetime.fromisoformat(r["start_date"]) > created]) >= 2)
    assert [r["dag_run_id"] for r in runs_for(airflow, dag_id, upload)] == [run["dag_run_id"]]
    return run


def test_a_stylegan2_dataset_upload_starts_one_training_run(watched, uploads, started, aws):
    marker, at, folder = uploads["stylegan2"]
    run = started_once(watched, aws, started, name="stylegan2", upload=marker, uploaded_at=at,
                       conf={"dataset_uri": f"s3://{INGEST}/{folder}"}, state=("reelforge-artifacts", "stylegan2/"))

    # a late notification's run of the same upload (same version): it finds the claim and does nothing
    late = watched.trigger("stylegan2_training", run["conf"], run_id=f"late__{uuid.uuid4().hex[:8]}")
    assert watched.wait_for_run("stylegan2_training", late, timeout=180) == "success"
    states = watched.task_states("stylegan2_training", late)
    assert (states["claim_upload"], states["plan"]) == ("skipped", "skipped"), states


def test_an_avatar_selfie_set_starts_one_personalization_run(watched, uploads, started, aws):
    marker, at, folder = uploads["avatar"]
    user = folder[len(SELFIE_PREFIX):].split("/")[0]
    started_once(watched, aws, started, name="avatar", upload=marker, uploaded_at=at,
                 conf={"user_id": user, "selfies_uri": f"s3://{INGEST}/{folder}"},
                 state=("reelforge-artifacts", "avatar/"))


def test_an_animate_anyone_manifest_upload_starts_one_training_run(watched, uploads, started, aws):
    manifest, at, _ = uploads["animate_anyone"]
    started_once(watched, aws, started, name="animate_anyone", upload=manifest, uploaded_at=at,
                 conf={"manifest_uri": manifest["uri"]}, state=("reelforge-output", "animate-anyone/"))
