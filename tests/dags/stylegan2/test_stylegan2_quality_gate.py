"""The quality gate: which metrics file it reads, and what it decides (no stack: an in-memory S3)."""

from __future__ import annotations

import io
import json
import tarfile

import pytest

from reelforge.stylegan2.tasks import container_metrics, final_fid, judge

CHECKPOINTS = "s3://artifacts/sg2/runs/k/checkpoints/"
MODEL = "s3://artifacts/sg2/runs/k/model/job/output/model.tar.gz"


class FakeS3:
    """``get_object`` over a dict, raising the client's ``NoSuchKey`` as boto3 does."""

    class exceptions:  # noqa: N801 - boto3's attribute name
        class NoSuchKey(Exception):
            pass

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects

    def get_object(self, Bucket: str, Key: str) -> dict:  # noqa: N803 - boto3's argument names
        uri = f"s3://{Bucket}/{Key}"
        if uri not in self.objects:
            raise self.exceptions.NoSuchKey(uri)
        return {"Body": io.BytesIO(self.objects[uri])}


def output_archive(member: str, metrics: dict) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        data = json.dumps(metrics).encode()
        info = tarfile.TarInfo(member)
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


JOB = {"TrainingJobName": "job", "ModelArtifacts": {"S3ModelArtifacts": MODEL}}


def test_the_checkpoint_copy_is_read_first():
    s3 = FakeS3({CHECKPOINTS + "reelforge-metrics.json": json.dumps({"fid50k_full": 9.0, "kimg": 5}).encode(),
                 MODEL.replace("model.tar.gz", "output.tar.gz"): output_archive("data/metrics.json", {"kimg": 1})})
    metrics, source = container_metrics(JOB, CHECKPOINTS, s3)
    assert metrics == {"fid50k_full": 9.0, "kimg": 5}
    assert source == CHECKPOINTS + "reelforge-metrics.json"


@pytest.mark.parametrize("member", ["data/metrics.json", "metrics.json", "./data/metrics.json"])
def test_without_synced_checkpoints_the_output_archive_beside_the_model_is_read(member):
    archive = MODEL.replace("model.tar.gz", "output.tar.gz")
    s3 = FakeS3({archive: output_archive(member, {"kimg": 1, "resolution": 64})})
    metrics, source = container_metrics(JOB, CHECKPOINTS, s3)
    assert metrics == {"kimg": 1, "resolution": 64}
    assert source.startswith(archive + ":") and source.endswith("metrics.json")


def test_no_metrics_file_anywhere():
    metrics, source = container_metrics(JOB, CHECKPOINTS, FakeS3({}))
    assert metrics is None and "reelforge-metrics.json" in source and "output.tar.gz" in source


def test_sagemakers_final_metric_wins_over_the_file():
    job = {**JOB, "FinalMetricDataList": [{"MetricName": "fid50k_full", "Value": 7.5}]}
    assert final_fid(job, {"fid50k_full": 99.0}, "file") == (7.5, "SageMaker final metric fid50k_full")
    assert final_fid(JOB, {"fid50k_full": 99.0}, "file") == (99.0, "file")
    assert final_fid(JOB, {"kimg": 3}, "file") == (None, "file")


@pytest.mark.parametrize(("max_fid", "fid", "metrics", "passed", "text"), [
    (30.0, 12.5, {"kimg": 200}, True, "quality gate passed: FID 12.50"),
    (30.0, 400.0, {"kimg": 200}, False, "FID 400.00 of training job job is above the limit 30"),
    (30.0, None, {"kimg": 200}, False, "reported no usable FID"),
    (30.0, float("nan"), {"kimg": 200}, False, "reported no usable FID"),
    (None, None, {"kimg": 200}, True, "no FID limit set"),
    (None, None, {"kimg": 150}, False, "reports 150 of 200 kimg trained"),
    (None, None, None, False, "left no metrics file"),
])
def test_the_gate(max_fid, fid, metrics, passed, text):
    ok, message = judge(name="job", max_fid=max_fid, kimg=200, fid=fid, metrics=metrics, source="src",
                        checkpoint_uri=CHECKPOINTS)
    assert ok is passed
    assert text in message
    if fid == 400.0:  # too high: how to train on from where it stopped
        assert f"checkpoint_uri={CHECKPOINTS}" in message
