"""Helpers for the reliability tests that drive the real DAG: which run came from which upload, logs, Slurm."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace

from airflow_local import AirflowError
from reelforge.storage import S3Object
from reelforge.uploads import sources_from_asset_events
from tests.e2e.test_sr_dag import DAG_ID, INGEST


def run_sources(airflow, run_id: str) -> list[S3Object]:
    """The objects named by the notifications behind a run, read the way prepare reads them."""
    events = airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/upstreamAssetEvents")["asset_events"]
    return sources_from_asset_events({"ingest": [SimpleNamespace(extra=e.get("extra")) for e in events]})


def wait_for_runs(airflow, known: set[str], want: Callable[[list[dict]], bool], timeout: float = 120) -> list[dict]:
    """Poll new runs (not in ``known``) until ``want([{run_id, sources}, ...])`` holds."""
    seen: dict[str, list[S3Object]] = {}
    deadline = time.monotonic() + timeout
    while True:
        for run in airflow.runs(DAG_ID):
            rid = run["dag_run_id"]
            # Airflow 3.3.2 answers 500 for the events of a run that has not started (start_date null)
            if rid not in known and rid not in seen and run.get("start_date"):
                try:
                    seen[rid] = run_sources(airflow, rid)
                except AirflowError:
                    pass
        found = [{"run_id": rid, "sources": s} for rid, s in seen.items()]
        if want(found):
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"runs seen so far: {found}")
        time.sleep(1)


def runs_of_key(found: list[dict], key: str) -> list[str]:
    """Runs that process ``key``: their first source (prepare hands any further ones back to the queue)."""
    return [r["run_id"] for r in found if r["sources"] and r["sources"][0].key == key]


def claiming_run(airflow, key: str, known: set[str], timeout: float = 180) -> str:
    """The run of ``key`` whose prepare claimed it.

    S3 notifications and SQS deliver at least once, so an upload may have more than one run; the claim
    lets one of them work and the others skip. This waits for the one whose prepare succeeded and checks
    that no other did.
    """
    deadline = time.monotonic() + timeout
    runs: list[str] = []
    listed_at = 0.0
    while True:
        if not runs or time.monotonic() - listed_at > 10:  # a later delivery's run: look again now and then
            left = max(1.0, deadline - time.monotonic())
            runs = runs_of_key(wait_for_runs(airflow, known, lambda f: bool(runs_of_key(f, key)), timeout=left), key)
            listed_at = time.monotonic()
        prepared = {r: airflow.task_states(DAG_ID, r).get("prepare") for r in runs}
        worked = [r for r, state in prepared.items() if state == "success"]
        assert len(worked) <= 1, f"two runs claimed {key}: {prepared}"
        if worked:
            return worked[0]
        if time.monotonic() > deadline:
            raise AssertionError(f"no run of {key} got past prepare: {prepared}")
        time.sleep(1)


def s3_event(bucket: str, key: str, put: dict, size: int) -> str:
    """The body S3 sends to SQS for one ObjectCreated:Put (key URL-encoded, as S3 does)."""
    from urllib.parse import quote_plus

    obj = {"key": quote_plus(key), "size": size, "eTag": put["ETag"].strip('"'), "sequencer": "0"}
    if put.get("VersionId"):
        obj["versionId"] = put["VersionId"]
    return json.dumps({"Records": [{
        "eventVersion": "2.1", "eventSource": "aws:s3", "awsRegion": "us-east-1", "eventName": "ObjectCreated:Put",
        "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": bucket, "arn": f"arn:aws:s3:::{bucket}"}, "object": obj},
    }]})


def task_log(run_id: str, task_id: str) -> str:
    base = Path(os.environ["AIRFLOW__LOGGING__BASE_LOG_FOLDER"]) / f"dag_id={DAG_ID}" / f"run_id={run_id}"
    return "\n".join(p.read_text(errors="replace") for p in sorted((base / f"task_id={task_id}").glob("*.log")))


def slurm_job_names() -> list[str]:
    """Names of every job Slurm still knows (``MinJobAge`` keeps finished ones for 300 s)."""
    out = subprocess.run(["squeue", "-t", "all", "-h", "-o", "%j"], capture_output=True, text=True, check=True)
    return out.stdout.split()


def delete_versions(s3, prefix: str, bucket: str = INGEST) -> None:
    versions = s3.list_object_versions(Bucket=bucket, Prefix=prefix)
    for v in versions.get("Versions", []) + versions.get("DeleteMarkers", []):
        s3.delete_object(Bucket=bucket, Key=v["Key"], VersionId=v["VersionId"])
