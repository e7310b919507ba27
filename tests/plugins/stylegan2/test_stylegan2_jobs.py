"""Airflow-side StyleGAN2 logic without AWS: names, request configs, parameter checks, upload events."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from reelforge.sagemaker_requests import JOB_NAME_RE, InvalidParamsError, run_key
from reelforge.stylegan2.plan import METRIC_DEFINITIONS, dataset_fingerprint, plan_training, training_params
from reelforge.stylegan2.settings import StyleGAN2Settings
from reelforge.stylegan2.tasks import dataset_from_events

SETTINGS = StyleGAN2Settings(
    image_uri="acct.dkr.ecr.eu-west-1.amazonaws.com/reelforge-stylegan2:1", role_arn="arn:aws:iam::1:role/r",
    artifacts_bucket="art", artifacts_prefix="sg2/", output_bucket="out", output_prefix="sg2/",
    batch_input_bucket="in", batch_input_prefix="sg2/batch/", model_package_group="g", topic_arn="t",
    prep_instance_type="ml.m5.xlarge", generate_instance_type="ml.g4dn.xlarge", training_volume_gb=50,
    processing_volume_gb=20,
)
PARAMS = {"resolution": 256, "kimg": 1000, "gamma": None, "augment": "ada", "mirror": True, "snapshot_ticks": 25,
          "transfer": "none", "instance_type": "ml.g5.2xlarge", "spot": True, "max_runtime_hours": 10,
          "max_wait_hours": 20, "max_fid": 40, "approval": "Approved", "samples": 16, "truncation": 0.7,
          "checkpoint_uri": ""}
OBJECTS = [{"Key": "d/a.png", "ETag": '"e1"', "Size": 10}, {"Key": "d/b.png", "ETag": '"e2"', "Size": 20}]
RUN_AFTER = datetime(2026, 5, 1, 12, 30, 5, tzinfo=UTC)


def plan(**overrides):
    return plan_training(params={**PARAMS, **overrides}, run_id="manual__2026-05-01T12:30:05+00:00",
                         run_after=RUN_AFTER, dataset_uri="s3://in/d/", dataset_objects=OBJECTS, settings=SETTINGS)


def test_names_are_deterministic_valid_and_per_run():
    a, b = plan(), plan()
    assert a == b
    assert a["key"] == run_key(RUN_AFTER, "manual__2026-05-01T12:30:05+00:00")
    assert a["key"].startswith("20260501123005-")
    for name in a["names"].values():
        assert JOB_NAME_RE.fullmatch(name) and len(name) <= 63 and name.startswith("reelforge-sg2-")
    other = plan_training(params=PARAMS, run_id="manual__other", run_after=RUN_AFTER, dataset_uri="s3://in/d/",
                          dataset_objects=OBJECTS, settings=SETTINGS)
    assert other["names"]["train"] != a["names"]["train"]
    assert other["names"]["prep"] == a["names"]["prep"]  # same images and resolution: one prepared dataset


def test_dataset_fingerprint_follows_content_resolution_and_prep_code():
    fp = dataset_fingerprint(OBJECTS, resolution=256, image_uri="i:1")
    assert fp == dataset_fingerprint(list(reversed(OBJECTS)), resolution=256, image_uri="i:1")
    assert fp != dataset_fingerprint([{**OBJECTS[0], "ETag": '"changed"'}, OBJECTS[1]], resolution=256,
                                     image_uri="i:1")
    assert fp != dataset_fingerprint(OBJECTS, resolution=128, image_uri="i:1")
    assert fp != dataset_fingerprint(OBJECTS, resolution=256, image_uri="i:2")


def test_training_request_spot_checkpoints_metrics_and_hyperparameters():
    p = plan(gamma=2.5, transfer="ffhq256")
    t = p["training_config"]
    assert t["EnableManagedSpotTraining"] is True
    assert t["StoppingCondition"] == {"MaxRuntimeInSeconds": 36000, "MaxWaitTimeInSeconds": 72000}
    assert t["CheckpointConfig"] == {"S3Uri": f"s3://art/sg2/runs/{p['key']}/checkpoints/",
                                     "LocalPath": "/opt/ml/checkpoints"}
    assert t["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == p["prepared_dataset_uri"]
    assert t["HyperParameters"] == {"kimg": "1000", "aug": "ada", "mirror": "1", "snap": "25", "gamma": "2.5",
                                    "metrics": "fid50k_full,kid50k_full", "transfer": "ffhq256"}
    assert all(isinstance(v, str) for v in t["HyperParameters"].values())
    assert t["AlgorithmSpecification"]["MetricDefinitions"] == METRIC_DEFINITIONS
    on_demand = plan(spot=False)["training_config"]
    assert on_demand["EnableManagedSpotTraining"] is False
    assert "MaxWaitTimeInSeconds" not in on_demand["StoppingCondition"]
    assert plan(checkpoint_uri="s3://art/old/ck")["training_config"]["CheckpointConfig"]["S3Uri"] == "s3://art/old/ck/"


def test_metric_definitions_match_train_py_and_the_final_line():
    nvlabs = json.dumps({"results": {"fid50k_full": 23.417}, "metric": "fid50k_full",
                         "snapshot_pkl": "network-snapshot-000200.pkl"})
    final = "reelforge final metrics " + json.dumps({"fid50k_full": 12.5, "kid50k_full": 1.2e-05, "kimg": 200})
    fid = next(m["Regex"] for m in METRIC_DEFINITIONS if m["Name"] == "fid50k_full")
    kid = next(m["Regex"] for m in METRIC_DEFINITIONS if m["Name"] == "kid50k_full")
    assert float(re.search(fid, nvlabs).group(1)) == 23.417
    assert float(re.search(fid, final).group(1)) == 12.5
    assert float(re.search(kid, final).group(1)) == 1.2e-05


@pytest.mark.parametrize(("change", "message"), [
    ({"max_wait_hours": 5}, "max_wait_hours (5) must be at least max_runtime_hours (10)"),
    ({"resolution": 300}, "resolution must be one of"),
    ({"augment": "fixed"}, "augment must be ada or noaug"),
    ({"approval": "Rejected"}, "approval must be"),
    ({"checkpoint_uri": "/local/path"}, "not an s3:// URI"),
    ({"kimg": "lots"}, "bad parameter"),
])
def test_bad_parameters_fail_with_a_reason(change, message):
    with pytest.raises(InvalidParamsError, match=re.escape(message)):
        training_params({**PARAMS, **change})


def test_no_objects_under_the_dataset_uri_is_refused():
    with pytest.raises(InvalidParamsError, match="no objects under"):
        plan_training(params=PARAMS, run_id="r", run_after=RUN_AFTER, dataset_uri="s3://in/empty/",
                      dataset_objects=[], settings=SETTINGS)


def _events(*keys: str) -> dict:
    records = [{"eventName": "ObjectCreated:Put", "s3": {"bucket": {"name": "in"}, "object": {"key": k}}}
               for k in keys]
    payload = {"message_batch": [{"Body": json.dumps({"Records": records})}]}
    return {"asset": [SimpleNamespace(extra={"payload": payload})]}


def test_uploads_that_start_a_training_run():
    assert dataset_from_events(_events("stylegan2/datasets/anime+faces/_READY")) == \
        "s3://in/stylegan2/datasets/anime faces/"
    assert dataset_from_events(_events("stylegan2/datasets/faces.ZIP")) == "s3://in/stylegan2/datasets/faces.ZIP"
    assert dataset_from_events(_events("stylegan2/datasets/x/img001.png")) is None
    assert dataset_from_events(None) is None
