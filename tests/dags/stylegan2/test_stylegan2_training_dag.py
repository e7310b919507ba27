"""``stylegan2_training`` under ``airflow dags test`` on moto: requests, registry, gate, SNS."""

from __future__ import annotations

import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[3]
IMAGE = "123456789012.dkr.ecr.us-east-1.amazonaws.com/reelforge-stylegan2:0.1.0"
INGEST, ARTIFACTS, OUTPUT = "reelforge-ingest", "reelforge-artifacts", "reelforge-output"


def test_the_dag_declares_its_deadline_and_the_dagstest_variant_only_drops_it():
    sys.path.insert(0, str(ROOT / "dags"))
    import stylegan2_training
    import stylegan2_weekly_batch

    from reelforge.deadlines import RunQueuedDeadline

    for module in (stylegan2_training, stylegan2_weekly_batch):
        (alert,) = module.dag.deadline
        # ours, not DAGRUN_QUEUED_AT: Airflow 3.3.2 cannot clear runs of a DAG with that (reelforge/deadlines.py)
        assert isinstance(alert.reference, RunQueuedDeadline)
        assert alert.interval.total_seconds() > 3600
        assert module.build_dag(with_deadline=False).deadline in (None, [])
        variant = module.build_dag(with_deadline=False)
        assert sorted(variant.task_dict) == sorted(module.dag.task_dict)


@pytest.fixture(scope="module")
def dataset(stack, shared_data, tmp_path_factory):
    """Images uploaded as a dataset, and the prep job's output as the real prep code makes it.

    moto's processing job writes nothing; the prepared location is content-addressed, so the test
    derives it as the DAG does and uploads what ``reelforge-stylegan2 prep`` builds from the same images.
    """
    sys.path.insert(0, str(ROOT / "containers" / "stylegan2" / "src"))
    from reelforge_stylegan2.prep import prepare_dataset

    from reelforge.stylegan2.jobs import dataset_fingerprint

    prefix = f"{stack.artifacts_prefix}raw/anime/"
    for path in sorted((shared_data / "images" / "anime").iterdir()):
        stack.s3.put_object(Bucket=INGEST, Key=prefix + path.name, Body=path.read_bytes())
    objects = stack.s3.list_objects_v2(Bucket=INGEST, Prefix=prefix)["Contents"]
    fingerprint = dataset_fingerprint(objects, resolution=64, image_uri=IMAGE)
    out = tmp_path_factory.mktemp("prep")
    report = prepare_dataset(shared_data / "images" / "anime", out, resolution=64)
    prepared = f"{stack.artifacts_prefix}datasets/{fingerprint}/"
    for name in ("dataset.zip", "report.json"):
        stack.s3.upload_file(str(out / name), ARTIFACTS, prepared + name)
    return {"uri": f"s3://{INGEST}/{prefix}", "prepared": f"s3://{ARTIFACTS}/{prepared}", "fingerprint": fingerprint,
            "accepted": report["accepted"]}


def conf(dataset: dict, checkpoint_uri: str) -> dict:
    return {"dataset_uri": dataset["uri"], "resolution": 64, "kimg": 200, "gamma": 0.5, "augment": "ada",
            "instance_type": "ml.g4dn.xlarge", "spot": True, "max_runtime_hours": 2, "max_wait_hours": 4,
            "max_fid": 30, "samples": 8, "truncation": 0.6, "checkpoint_uri": checkpoint_uri,
            "snapshot_ticks": 10}


def seed_metrics(stack, name: str, fid: float) -> str:
    """Checkpoints of an earlier run to continue from, with the metrics file the train entry writes."""
    prefix = f"{stack.artifacts_prefix}checkpoints/{name}/"
    body = {"fid50k_full": fid, "kid50k_full": fid / 5000, "kimg": 200,
            "snapshot": "00001-x/network-snapshot-000200.pkl"}
    stack.s3.put_object(Bucket=ARTIFACTS, Key=prefix + "reelforge-metrics.json", Body=json.dumps(body).encode())
    return f"s3://{ARTIFACTS}/{prefix}"


def training_job_for(stack, checkpoint_uri: str, since: datetime) -> dict:
    summaries = stack.sm.list_training_jobs(NameContains="reelforge-sg2-train-", CreationTimeAfter=since,
                                            MaxResults=100)["TrainingJobSummaries"]
    jobs = [stack.sm.describe_training_job(TrainingJobName=s["TrainingJobName"]) for s in summaries]
    (job,) = [j for j in jobs if j["CheckpointConfig"]["S3Uri"] == checkpoint_uri]
    return job


def packages_of(stack, training_job: str) -> list[dict]:
    summaries = stack.sm.list_model_packages(ModelPackageGroupName=stack.model_package_group,
                                             MaxResults=100)["ModelPackageSummaryList"]
    described = [stack.sm.describe_model_package(ModelPackageName=s["ModelPackageArn"]) for s in summaries]
    return [p for p in described if p.get("CustomerMetadataProperties", {}).get("training_job") == training_job]


def test_training_run_prepares_trains_on_spot_registers_and_samples(stack, dataset, inbox):
    checkpoint_uri = seed_metrics(stack, "good", 12.5)
    since = datetime.now(UTC).replace(microsecond=0)
    time.sleep(1)
    result = stack.dags_test("stylegan2_training", "2026-03-01T10:00:00+00:00", conf(dataset, checkpoint_uri))
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    job = training_job_for(stack, checkpoint_uri, since)
    name = job["TrainingJobName"]
    key = name.removeprefix("reelforge-sg2-train-")
    assert job["AlgorithmSpecification"]["TrainingImage"] == IMAGE
    assert job["AlgorithmSpecification"]["TrainingInputMode"] == "File"
    (channel,) = job["InputDataConfig"]
    assert channel["ChannelName"] == "train"
    assert channel["DataSource"]["S3DataSource"]["S3Uri"] == dataset["prepared"]
    assert job["HyperParameters"] == {"kimg": "200", "gamma": "0.5", "aug": "ada", "mirror": "1", "snap": "10",
                                      "metrics": "fid50k_full,kid50k_full"}
    assert job["EnableManagedSpotTraining"] is True
    assert job["StoppingCondition"] == {"MaxRuntimeInSeconds": 7200, "MaxWaitTimeInSeconds": 14400}
    assert job["CheckpointConfig"] == {"S3Uri": checkpoint_uri, "LocalPath": "/opt/ml/checkpoints"}
    assert job["ResourceConfig"]["InstanceType"] == "ml.g4dn.xlarge"
    assert job["OutputDataConfig"]["S3OutputPath"] == f"s3://{ARTIFACTS}/{stack.artifacts_prefix}runs/{key}/model/"
    assert job["RoleArn"].endswith(":role/reelforge-stylegan2-sagemaker")

    prep = stack.sm.describe_processing_job(ProcessingJobName=f"reelforge-sg2-prep-{dataset['fingerprint']}")
    assert prep["AppSpecification"] == {
        "ImageUri": IMAGE, "ContainerEntrypoint": ["reelforge-stylegan2"],
        "ContainerArguments": ["prep", "--resolution", "64", "--input", "/opt/ml/processing/input/images",
                               "--output", "/opt/ml/processing/output/dataset"]}
    assert prep["ProcessingInputs"][0]["S3Input"]["S3Uri"] == dataset["uri"]
    assert prep["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"] == dataset["prepared"]

    gen = stack.sm.describe_processing_job(ProcessingJobName=f"reelforge-sg2-gen-{key}")
    model_url = job["ModelArtifacts"]["S3ModelArtifacts"]
    assert gen["ProcessingInputs"][0]["S3Input"]["S3Uri"] == model_url
    assert gen["AppSpecification"]["ContainerArguments"][:2] == ["generate", "--model"]
    assert "--seeds" in gen["AppSpecification"]["ContainerArguments"]
    assert gen["AppSpecification"]["ContainerArguments"][-1] == "0-7"
    samples_uri = f"s3://{OUTPUT}/{stack.output_prefix}samples/{key}/"
    assert gen["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"] == samples_uri

    (package,) = packages_of(stack, name)
    assert package["ModelPackageGroupName"] == stack.model_package_group
    assert package["ModelApprovalStatus"] == "Approved"
    assert package["InferenceSpecification"]["Containers"] == [{"Image": IMAGE, "ModelDataUrl": model_url}]
    assert package["CustomerMetadataProperties"]["fid50k_full"] == "12.5000"
    assert package["CustomerMetadataProperties"]["checkpoint_uri"] == checkpoint_uri

    (message,) = [m for m in inbox() if m.get("event") == "stylegan2_succeeded"]
    assert message["training_job"] == name and message["fid50k_full"] == 12.5
    assert message["model_package_arn"] == package["ModelPackageArn"]
    assert message["contact_sheet"] == samples_uri + "contact_sheet.png"
    assert message["links"]["training_job"].endswith(f"#/jobs/{name}")
    assert message["links"]["samples"].startswith("https://s3.console.aws.amazon.com/s3/buckets/reelforge-output")


def test_quality_gate_refuses_a_bad_fid_registers_nothing_and_notifies(stack, dataset, inbox):
    checkpoint_uri = seed_metrics(stack, "bad", 400.0)
    since = datetime.now(UTC).replace(microsecond=0)
    time.sleep(1)
    result = stack.dags_test("stylegan2_training", "2026-03-02T10:00:00+00:00", conf(dataset, checkpoint_uri))
    assert result.returncode != 0
    assert "quality gate failed: FID 400.00" in result.stdout + result.stderr

    job = training_job_for(stack, checkpoint_uri, since)
    assert packages_of(stack, job["TrainingJobName"]) == []
    key = job["TrainingJobName"].removeprefix("reelforge-sg2-train-")
    listed = stack.sm.list_processing_jobs(NameContains=f"reelforge-sg2-gen-{key}")["ProcessingJobSummaries"]
    assert listed == []
    # The prepared dataset is shared: this run reused the first run's prep job instead of starting one.
    prep_jobs = stack.sm.list_processing_jobs(NameContains=f"reelforge-sg2-prep-{dataset['fingerprint']}")
    assert len(prep_jobs["ProcessingJobSummaries"]) == 1

    failures = [m for m in inbox() if m.get("event") == "stylegan2_failed"]
    (failure,) = failures
    assert failure["task_id"] == "quality_gate_failed"
    assert "FID 400.00" in failure["reason"] and "above the limit 30" in failure["reason"]
    assert f"checkpoint_uri={checkpoint_uri}" in failure["reason"]
    assert "/dags/stylegan2_training/runs/" in failure["log"]
