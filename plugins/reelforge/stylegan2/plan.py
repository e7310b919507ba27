"""SageMaker request configs and names of the StyleGAN2 workflows (pure functions: no AWS, no Airflow).

Names derive from the run or from content, never from the clock: a run's key is
``<run_after:%Y%m%d%H%M%S>-<6 hex of sha256(run_id)>``, a prepared dataset's a hash of its sources,
a weekly interval's key its start date plus a hash of what it processes. The same run therefore
always asks for the same jobs and writes to the same prefixes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from reelforge.sagemaker_requests import (
    JOB_NAME_RE,
    PROC,
    InvalidParamsError,
    digest,
    processing_job,
    run_key,
    s3_input,
    s3_output,
    s3_uri,
    split_s3_uri,
    tags,
)
from reelforge.stylegan2.settings import StyleGAN2Settings

ENTRYPOINT = ["reelforge-stylegan2"]
RESOLUTIONS = (64, 128, 256, 512, 1024)
#: ``train.py`` prints each metric result as JSON (``"fid50k_full": 12.3``) and the entry prints the
#: final snapshot's metrics last: SageMaker's final value is the final model's.
METRIC_DEFINITIONS = [
    {"Name": "fid50k_full", "Regex": r'"fid50k_full": ([0-9.eE+-]+)'},
    {"Name": "kid50k_full", "Regex": r'"kid50k_full": ([0-9.eE+-]+)'},
]


def job_name(kind: str, key: str) -> str:
    name = f"reelforge-sg2-{kind}-{key}"
    if not JOB_NAME_RE.fullmatch(name):
        raise ValueError(f"{name!r} is not a valid SageMaker job name")
    return name


def _processing(name: str, settings: StyleGAN2Settings, **kw: Any) -> dict[str, Any]:
    return processing_job(name, role_arn=settings.role_arn, image_uri=settings.image_uri, entrypoint=ENTRYPOINT,
                          volume_gb=settings.processing_volume_gb, **kw)


def training_params(params: dict[str, Any]) -> dict[str, Any]:
    """The form's values, typed and checked together (the form checks each one alone)."""
    try:
        p = {
            "resolution": int(params["resolution"]),
            "kimg": int(params["kimg"]),
            "gamma": None if params.get("gamma") in (None, "") else float(params["gamma"]),
            "augment": str(params["augment"]),
            "mirror": bool(params.get("mirror", True)),
            "snapshot_ticks": int(params.get("snapshot_ticks", 25)),
            "transfer": str(params.get("transfer") or "none"),
            "instance_type": str(params["instance_type"]),
            "spot": bool(params["spot"]),
            "max_runtime_hours": int(params["max_runtime_hours"]),
            "max_wait_hours": int(params["max_wait_hours"]),
            "max_fid": None if params.get("max_fid") in (None, "") else float(params["max_fid"]),
            "approval": str(params.get("approval", "Approved")),
            "samples": int(params.get("samples", 64)),
            "truncation": float(params.get("truncation", 0.7)),
            "checkpoint_uri": str(params.get("checkpoint_uri") or "").strip(),
        }
    except (KeyError, TypeError, ValueError) as err:
        raise InvalidParamsError(f"bad parameter: {err}") from err
    if p["resolution"] not in RESOLUTIONS:
        raise InvalidParamsError(f"resolution must be one of {RESOLUTIONS}")
    if p["augment"] not in ("ada", "noaug"):
        raise InvalidParamsError("augment must be ada or noaug")
    if min(p["kimg"], p["snapshot_ticks"], p["max_runtime_hours"], p["samples"]) < 1:
        raise InvalidParamsError("kimg, snapshot_ticks, max_runtime_hours and samples must be at least 1")
    if p["spot"] and p["max_wait_hours"] < p["max_runtime_hours"]:
        raise InvalidParamsError(
            f"with spot on, max_wait_hours ({p['max_wait_hours']}) must be at least max_runtime_hours "
            f"({p['max_runtime_hours']}): the wait includes the training time")
    if p["max_fid"] is not None and not p["max_fid"] > 0:
        raise InvalidParamsError("max_fid must be above 0 (or empty: no FID gate)")
    if p["approval"] not in ("Approved", "PendingManualApproval"):
        raise InvalidParamsError("approval must be Approved or PendingManualApproval")
    if p["checkpoint_uri"]:
        split_s3_uri(p["checkpoint_uri"])
    return p


def hyperparameters(p: dict[str, Any]) -> dict[str, str]:
    """What the container's ``train`` entry reads (SageMaker passes every value as a string)."""
    metrics = "fid50k_full,kid50k_full" if p["max_fid"] is not None else "none"  # no limit: no FID to compute
    hp = {"kimg": str(p["kimg"]), "aug": p["augment"], "mirror": "1" if p["mirror"] else "0",
          "snap": str(p["snapshot_ticks"]), "metrics": metrics}
    if p["gamma"] is not None:
        hp["gamma"] = f"{p['gamma']:g}"
    if p["transfer"] != "none":
        hp["transfer"] = p["transfer"]
    return hp


def dataset_fingerprint(objects: list[dict[str, Any]], *, resolution: int, image_uri: str) -> str:
    """What a prepared dataset depends on: the source objects (key, ETag, size), resolution, prep code."""
    listing = sorted((o["Key"], str(o.get("ETag", "")).strip('"'), int(o.get("Size", 0))) for o in objects)
    return digest(listing, resolution, image_uri, length=16)


def plan_training(*, params: dict[str, Any], run_id: str, run_after: datetime, dataset_uri: str,
                  dataset_objects: list[dict[str, Any]], settings: StyleGAN2Settings) -> dict[str, Any]:
    """Names, locations and the prep + training requests of one training run.

    The prepared dataset is content-addressed (:func:`dataset_fingerprint`): runs on the same images
    at the same resolution share one prep job and its output. Everything else is per run.
    """
    p = training_params(params)
    split_s3_uri(dataset_uri)
    if not dataset_objects:
        raise InvalidParamsError(f"no objects under {dataset_uri}")
    key = run_key(run_after, run_id)
    fingerprint = dataset_fingerprint(dataset_objects, resolution=p["resolution"], image_uri=settings.image_uri)
    names = {"prep": job_name("prep", fingerprint), **{kind: job_name(kind, key) for kind in ("train", "gen")}}
    base = f"{settings.artifacts_prefix}runs/{key}/"
    dataset_out = s3_uri(settings.artifacts_bucket, f"{settings.artifacts_prefix}datasets/{fingerprint}/")
    checkpoint_uri = p["checkpoint_uri"] or s3_uri(settings.artifacts_bucket, f"{base}checkpoints/")
    if not checkpoint_uri.endswith("/"):
        checkpoint_uri += "/"
    samples_uri = s3_uri(settings.output_bucket, f"{settings.output_prefix}samples/{key}/")

    prep = _processing(
        names["prep"], settings, workflow="stylegan2-training", run_id=run_id,
        args=["prep", "--resolution", str(p["resolution"]), "--input", f"{PROC}/input/images",
              "--output", f"{PROC}/output/dataset"],
        inputs=[s3_input("images", dataset_uri, f"{PROC}/input/images")],
        outputs=[s3_output("dataset", dataset_out, f"{PROC}/output/dataset")],
        instance_type=settings.prep_instance_type, max_runtime_s=6 * 3600,
    )
    stopping = {"MaxRuntimeInSeconds": p["max_runtime_hours"] * 3600}
    if p["spot"]:
        stopping["MaxWaitTimeInSeconds"] = p["max_wait_hours"] * 3600
    training = {
        "TrainingJobName": names["train"],
        "RoleArn": settings.role_arn,
        "AlgorithmSpecification": {"TrainingImage": settings.image_uri, "TrainingInputMode": "File",
                                   "MetricDefinitions": METRIC_DEFINITIONS},
        "HyperParameters": hyperparameters(p),
        "InputDataConfig": [{
            "ChannelName": "train",
            "DataSource": {"S3DataSource": {"S3DataType": "S3Prefix", "S3Uri": dataset_out,
                                            "S3DataDistributionType": "FullyReplicated"}},
            "ContentType": "application/zip",
            "InputMode": "File",
        }],
        "OutputDataConfig": {"S3OutputPath": s3_uri(settings.artifacts_bucket, f"{base}model/")},
        "ResourceConfig": {"InstanceType": p["instance_type"], "InstanceCount": 1,
                           "VolumeSizeInGB": settings.training_volume_gb},
        "StoppingCondition": stopping,
        "EnableManagedSpotTraining": p["spot"],
        "CheckpointConfig": {"S3Uri": checkpoint_uri, "LocalPath": "/opt/ml/checkpoints"},
        "Tags": tags("stylegan2-training", run_id),
    }
    return {
        "key": key,
        "run_id": run_id,
        "dataset_fingerprint": fingerprint,
        "names": names,
        "dataset_uri": dataset_uri,
        "prepared_dataset_uri": dataset_out,
        "checkpoint_uri": checkpoint_uri,
        "samples_uri": samples_uri,
        "image_uri": settings.image_uri,
        "model_package_group": settings.model_package_group,
        "params": p,
        "prep_config": prep,
        "training_config": training,
    }


def generation_config(*, name: str, model_url: str, output_uri: str, settings: StyleGAN2Settings, run_id: str,
                      workflow: str, seeds: str | None = None, truncation: float = 0.7,
                      requests_manifest_uri: str | None = None) -> dict[str, Any]:
    """A batch generation job: seeds and/or the requests listed in an S3 manifest."""
    args = ["generate", "--model", f"{PROC}/input/model", "--out", f"{PROC}/output/samples",
            "--truncation", f"{truncation:g}"]
    inputs = [s3_input("model", model_url, f"{PROC}/input/model")]
    if seeds:
        args += ["--seeds", seeds]
    if requests_manifest_uri:
        args += ["--inputs", f"{PROC}/input/requests"]
        inputs.append(s3_input("requests", requests_manifest_uri, f"{PROC}/input/requests", "ManifestFile"))
    return _processing(name, settings, workflow=workflow, run_id=run_id, args=args, inputs=inputs,
                       outputs=[s3_output("samples", output_uri, f"{PROC}/output/samples")],
                       instance_type=settings.generate_instance_type, max_runtime_s=12 * 3600)
