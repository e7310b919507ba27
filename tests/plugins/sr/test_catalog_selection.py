"""The backfill's selection (day, folder or manifest), settings for every video, and the estimate (moto)."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from reelforge.sr.catalog import CATALOG_PARAMS, list_videos, plan_day, read_manifest
from reelforge.sr.job import build_job
from reelforge.sr.settings import SRSettings
from reelforge.storage import InvalidSourceError, S3Object

SETTINGS = SRSettings(
    ingest_bucket="archive", ingest_prefix="sr/incoming/", output_bucket="output", output_prefix="sr/",
    topic_arn="", cluster_work_root="/fsx/reelforge", worker_venv="/opt/venv", model_dir="/fsx/models",
    container_image="", cpu_partition="cpu", gpu_partition="gpu", gpu_gres="", array_throttle=4,
    max_source_bytes=1 << 30,
)


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        for bucket in ("archive", "output"):
            client.create_bucket(Bucket=bucket)
        for key in ("dvd/s1/e1.vob", "dvd/s1/e2.mkv", "dvd/s1/notes.txt", "dvd/s2/e1.mp4"):
            client.put_object(Bucket="archive", Key=key, Body=key.encode())
        yield client


def test_a_folder_lists_its_videos_and_refuses_paths_that_are_not_folders(s3):
    assert [o.key for o in list_videos(s3, "archive", "dvd/s1/")] == ["dvd/s1/e1.vob", "dvd/s1/e2.mkv"]
    assert len(list_videos(s3, "archive", "dvd/")) == 3
    for bad in ("/dvd/", "dvd/s1", "dvd/../secret/"):
        with pytest.raises(InvalidSourceError, match="must be a folder"):
            list_videos(s3, "archive", bad)


def test_a_manifest_by_uri_json_or_csv(s3):
    s3.put_object(Bucket="archive", Key="m/a.json", Body=json.dumps(["s3://archive/dvd/s1/e1.vob",
                                                                     {"source_uri": "s3://archive/dvd/s2/e1.mp4"}]))
    s3.put_object(Bucket="archive", Key="m/b.csv", Body=b"source_uri,title\ns3://archive/dvd/s1/e2.mkv,Two\n")
    assert [o.key for o in read_manifest(s3, "s3://archive/m/a.json")] == ["dvd/s1/e1.vob", "dvd/s2/e1.mp4"]
    assert [o.key for o in read_manifest(s3, "s3://archive/m/b.csv")] == ["dvd/s1/e2.mkv"]
    with pytest.raises(InvalidSourceError, match="does not exist"):
        read_manifest(s3, "s3://archive/m/none.json")
    with pytest.raises(InvalidSourceError, match=".json or .csv"):
        read_manifest(s3, "s3://archive/dvd/s1/e1.vob")


def test_the_form_settings_reach_every_run_and_delivered_videos_are_skipped_and_estimated(s3):
    sources = list_videos(s3, "archive", "dvd/s1/")
    params = {**CATALOG_PARAMS, "scale": 2, "model": "anime"}
    done = build_job(sources[1], params, SETTINGS)
    s3.put_object(Bucket="output", Key=f"{done['output_prefix']}report.json", Body=b"{}")
    # delivered at scale 4 is not delivered at scale 2
    other = build_job(sources[0], CATALOG_PARAMS, SETTINGS)
    s3.put_object(Bucket="output", Key=f"{other['output_prefix']}report.json", Body=b"{}")
    estimates = {"dvd/s1/e1.vob": 120.0}
    plan = plan_day(s3, sources, SETTINGS, "2026-03-01", params, estimate=lambda o: estimates.get(o.key))
    (todo,) = plan["todo"]
    assert todo["source"] == "s3://archive/dvd/s1/e1.vob" and todo["conf"]["scale"] == 2
    assert todo["conf"]["model"] == "anime" and todo["model_seconds"] == 120.0
    assert [s["source"] for s in plan["skipped"]] == ["s3://archive/dvd/s1/e2.mkv"]
    assert plan["estimate"] == {"videos": 1, "model_seconds": 120.0, "unknown": 0}
    assert todo["job_id"] == build_job(S3Object("archive", "dvd/s1/e1.vob", etag=sources[0].etag), params,
                                       SETTINGS)["job_id"]
