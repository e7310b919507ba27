"""``stylegan2_training`` under ``airflow dags test``: its SageMaker jobs run on the built image (local mode).

One run (the ``training_run`` fixture, shared with the weekly test): the prep job turns the anime images
into NVlabs' dataset zip, the training job runs NVlabs' ``train.py`` (on the CPU, through
``reelforge_stylegan2.nvlabs_cpu``) for 1 kimg and exports a real NVlabs generator, the gate reads the
metrics file the container wrote, the version is registered and the samples job generates from it.
"""

from __future__ import annotations

import io
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[3]
INGEST, ARTIFACTS, OUTPUT = "reelforge-ingest", "reelforge-artifacts", "reelforge-output"
SRC = ROOT / "containers" / "stylegan2" / "src"


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


def training_job_of(stack, since) -> dict:
    """The run's completed training job; a retry's earlier attempts must have failed with a reason."""
    summaries = stack.jobs.list_training_jobs(NameContains="reelforge-sg2-train-", CreationTimeAfter=since,
                                              MaxResults=100)["TrainingJobSummaries"]
    jobs = [stack.jobs.describe_training_job(TrainingJobName=s["TrainingJobName"]) for s in summaries]
    (completed,) = [j for j in jobs if j["TrainingJobStatus"] == "Completed"]
    for job in jobs:
        if job is not completed:
            assert job["TrainingJobStatus"] == "Failed" and job.get("FailureReason"), job
            print(f"earlier attempt {job['TrainingJobName']} failed: {job['FailureReason']}")
    return completed


def packages_of(stack, training_job: str) -> list[dict]:
    summaries = stack.sm.list_model_packages(ModelPackageGroupName=stack.model_package_group,
                                             MaxResults=100)["ModelPackageSummaryList"]
    described = [stack.sm.describe_model_package(ModelPackageName=s["ModelPackageArn"]) for s in summaries]
    return [p for p in described if p.get("CustomerMetadataProperties", {}).get("training_job") == training_job]


def s3_object(stack, uri: str) -> bytes:
    bucket, _, key = uri[5:].partition("/")
    return stack.s3.get_object(Bucket=bucket, Key=key)["Body"].read()


@pytest.mark.timeout(1800)  # the shared training run (Docker, NVlabs on the CPU) counts here
def test_training_run_prepares_trains_registers_and_samples_on_the_built_image(stack, training_run, nvlabs_dir,
                                                                             tmp_path):
    result = training_run["result"]
    assert result.returncode == 0, (result.stdout[-6000:] + result.stderr[-6000:]
                                    + training_run["server_log"].read_text()[-6000:])
    image = training_run["image_uri"]
    from reelforge.stylegan2.plan import dataset_fingerprint

    # Prep: the container read the uploaded images and wrote NVlabs' dataset zip and its report.
    objects = stack.s3.list_objects_v2(Bucket=INGEST, Prefix=training_run["prefix"])["Contents"]
    fingerprint = dataset_fingerprint(objects, resolution=64, image_uri=image)
    prep = stack.jobs.describe_processing_job(ProcessingJobName=f"reelforge-sg2-prep-{fingerprint}")
    assert prep["ProcessingJobStatus"] == "Completed"
    assert prep["AppSpecification"]["ContainerArguments"][:3] == ["prep", "--resolution", "64"]
    prepared = prep["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"]
    report = json.loads(s3_object(stack, prepared + "report.json"))
    assert report["accepted"] == len(training_run["images"])
    assert report["skipped"]["not_image"] == 1 and "README.txt" in json.dumps(report["skipped_files"])
    with zipfile_of(s3_object(stack, prepared + "dataset.zip")) as zf:
        names = zf.namelist()
        assert "dataset.json" in names
        assert sum(n.endswith(".png") for n in names) == len(training_run["images"])

    # Training: NVlabs' train.py ran in the image; the model archive holds its snapshot and our export.
    job = training_job_of(stack, training_run["since"])
    name = job["TrainingJobName"]
    key = re.sub(r"-\d{10}$", "", name.removeprefix("reelforge-sg2-train-"))  # a retry's attempt suffix
    assert job["TrainingJobStatus"] == "Completed"
    assert job["AlgorithmSpecification"]["TrainingImage"] == image
    assert job["InputDataConfig"][0]["DataSource"]["S3DataSource"]["S3Uri"] == prepared
    assert job["HyperParameters"] == {"kimg": "1", "gamma": "0.5", "aug": "noaug", "mirror": "1", "snap": "1000",
                                      "metrics": "none"}
    assert job["EnableManagedSpotTraining"] is True
    model_url = job["ModelArtifacts"]["S3ModelArtifacts"]
    assert model_url.startswith(f"s3://{ARTIFACTS}/{stack.artifacts_prefix}runs/{key}/model/")
    model_dir = tmp_path / "model"
    with tarfile.open(fileobj=io.BytesIO(s3_object(stack, model_url)), mode="r:gz") as tar:
        tar.extractall(model_dir)  # noqa: S202 - the job's own model archive (Python 3.11.2: no filter=)
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["kimg"] >= 1 and metrics["resolution"] == 64
    assert metrics["snapshot"].startswith("00000-dataset-") and "fid50k_full" not in metrics

    # The snapshot is NVlabs' own pickle (its persistent classes) and the export reproduces its G_ema.
    check = subprocess.run(
        [sys.executable, "-c", CHECK_EXPORT, str(model_dir / "network-snapshot.pkl"), str(model_dir / "generator.pt")],
        env={**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(nvlabs_dir)]),
             "STYLEGAN2_ADA_DIR": str(nvlabs_dir)},
        capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stdout + check.stderr
    checked = json.loads(check.stdout.strip().splitlines()[-1])
    assert checked["persistent"] and checked["class"] == "Generator"  # training/networks.py, as NVlabs pickles it
    assert checked["img_resolution"] == 64 and checked["max_abs_diff"] < 1e-3

    # The gate read the metrics the container wrote (no FID limit: a complete run, manual approval).
    (package,) = packages_of(stack, name)
    assert package["ModelApprovalStatus"] == "PendingManualApproval"
    assert package["InferenceSpecification"]["Containers"] == [{"Image": image, "ModelDataUrl": model_url}]
    props = package["CustomerMetadataProperties"]
    assert props["fid50k_full"] == "none" and props["kimg_trained"] == str(metrics["kimg"])
    assert props["metrics_source"].endswith("output.tar.gz:data/metrics.json") or \
        props["metrics_source"].endswith("output.tar.gz:metrics.json")
    assert "no FID limit set" in result.stdout + result.stderr

    # Samples: the generation job ran the exported generator.
    gen = stack.jobs.describe_processing_job(ProcessingJobName=f"reelforge-sg2-gen-{key}")
    assert gen["ProcessingJobStatus"] == "Completed"
    assert gen["ProcessingInputs"][0]["S3Input"]["S3Uri"] == model_url
    samples_uri = f"s3://{OUTPUT}/{stack.output_prefix}samples/{key}/"
    samples_prefix = f"{stack.output_prefix}samples/{key}/"
    listed = {o["Key"].removeprefix(samples_prefix)
              for o in stack.s3.list_objects_v2(Bucket=OUTPUT, Prefix=samples_prefix)["Contents"]}
    assert {"seeds/seed0000.png", "seeds/seed0003.png", "contact_sheet.png", "manifest.json"} <= listed
    manifest = json.loads(s3_object(stack, samples_uri + "manifest.json"))
    assert manifest["seeds"] == [0, 1, 2, 3] and manifest["model"]["img_resolution"] == 64

    (message,) = [m for m in training_run["messages"] if m.get("event") == "stylegan2_succeeded"]
    assert message["training_job"] == name and message["fid50k_full"] is None
    assert message["model_package_arn"] == package["ModelPackageArn"]
    assert message["contact_sheet"] == samples_uri + "contact_sheet.png"


def zipfile_of(data: bytes):
    import zipfile

    return zipfile.ZipFile(io.BytesIO(data))


#: Run with NVlabs' code importable: unpickle the snapshot, compare G_ema with the TorchScript export.
CHECK_EXPORT = """
import json, sys
import torch
from reelforge_stylegan2.export import load_exported, load_snapshot_generator
G = load_snapshot_generator(__import__("pathlib").Path(sys.argv[1])).eval()
module, meta = load_exported(__import__("pathlib").Path(sys.argv[2]))
z = torch.randn([1, G.z_dim], generator=torch.Generator().manual_seed(5))
c = torch.zeros([1, G.c_dim])
with torch.no_grad():
    ws = G.mapping(z, c, truncation_psi=1)
    eager = G.synthesis(ws, noise_mode="const", force_fp32=True)
    traced = module(z, c, torch.ones([1]))
from torch_utils import persistence
print(json.dumps({"class": getattr(G, "_orig_class_name", None), "persistent": persistence.is_persistent(G),
                  "img_resolution": meta["img_resolution"], "max_abs_diff": float((eager - traced).abs().max())}))
"""
