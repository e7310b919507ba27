"""Task bodies of the ``stylegan2_training`` DAG that run in Airflow (light: S3 and SageMaker metadata)."""

from __future__ import annotations

import io
import json
import logging
import math
import tarfile
from typing import Any

from reelforge.sagemaker_requests import InvalidParamsError, aws_client, digest, list_objects, s3_console, split_s3_uri
from reelforge.stylegan2 import watch
from reelforge.stylegan2.plan import generation_config, plan_training
from reelforge.stylegan2.settings import stylegan2_settings

log = logging.getLogger(__name__)

METRICS_OBJECT = "reelforge-metrics.json"  # written by the container's train entry into the checkpoint dir
OUTPUT_ARCHIVE = "output.tar.gz"  # SageMaker's archive of the job's /opt/ml/output/data, beside model.tar.gz
OUTPUT_METRICS = ("metrics.json", "data/metrics.json")  # the entry's copy in there (local mode keeps data/)


def dataset_from_events(events: Any) -> str | None:
    """The dataset of the first upload among a run's asset events that is one (:func:`watch.dataset_uri`)."""
    from reelforge.uploads import sources_from_asset_events

    return next((uri for obj in sources_from_asset_events(events) if (uri := watch.dataset_uri(obj))), None)


def plan_run(*, params: dict[str, Any], run_id: str, run_after: Any, events: Any) -> dict[str, Any]:
    """Resolve the dataset, check the form, and derive every name and request of this run."""
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    dataset_uri = (params.get("dataset_uri") or "").strip() or dataset_from_events(events)
    if not dataset_uri:
        if events:
            raise AirflowSkipException("the upload is not a dataset (a .zip of images or a _READY marker)")
        raise AirflowFailException("no dataset: give dataset_uri (s3://bucket/prefix/ of images or a .zip)")
    try:
        plan = plan_training(params=params, run_id=run_id, run_after=run_after, dataset_uri=dataset_uri,
                             dataset_objects=list_objects(aws_client("s3"), *split_s3_uri(dataset_uri)),
                             settings=stylegan2_settings())
    except InvalidParamsError as err:
        raise AirflowFailException(f"invalid input: {err}") from err
    log.info("run %s: dataset %s (prepared at %s), training job %s, checkpoints %s", plan["key"], dataset_uri,
             plan["prepared_dataset_uri"], plan["names"]["train"], plan["checkpoint_uri"])
    return plan


def container_metrics(job: dict[str, Any], checkpoint_uri: str, s3: Any = None) -> tuple[dict[str, Any] | None, str]:
    """The metrics file the container's ``train`` entry wrote for the final model, and where it was read.

    The entry writes the same JSON to ``checkpoints/reelforge-metrics.json`` (synced to the checkpoint URI)
    and to ``output/data/metrics.json`` (SageMaker uploads ``output/data`` as ``output.tar.gz`` beside
    ``model.tar.gz``). The checkpoint copy is read first; the output archive when the checkpoint prefix
    has none (local mode does not sync checkpoints).
    """
    s3 = s3 or aws_client("s3")
    bucket, prefix = split_s3_uri(checkpoint_uri)
    key = f"{prefix}{METRICS_OBJECT}"
    try:
        return json.loads(s3.get_object(Bucket=bucket, Key=key)["Body"].read()), f"s3://{bucket}/{key}"
    except s3.exceptions.NoSuchKey:
        pass
    model_url = (job.get("ModelArtifacts") or {}).get("S3ModelArtifacts") or ""
    if not model_url.endswith("/model.tar.gz"):
        return None, f"s3://{bucket}/{key}"
    archive = model_url[: -len("model.tar.gz")] + OUTPUT_ARCHIVE
    out_bucket, out_key = split_s3_uri(archive)
    try:
        body = s3.get_object(Bucket=out_bucket, Key=out_key)["Body"].read()
    except s3.exceptions.NoSuchKey:
        return None, f"s3://{bucket}/{key} or {archive}"
    with tarfile.open(fileobj=io.BytesIO(body), mode="r:gz") as tar:
        member = next((m for m in tar.getmembers() if m.isfile() and m.name.lstrip("./") in OUTPUT_METRICS), None)
        if member is None:
            return None, f"s3://{bucket}/{key} or {archive}"
        return json.loads(tar.extractfile(member).read()), f"{archive}:{member.name.lstrip('./')}"


def final_fid(job: dict[str, Any], metrics: dict[str, Any] | None, source: str) -> tuple[float | None, str]:
    """FID of the final model: SageMaker's final metric value, else the entry's metrics file."""
    for metric in job.get("FinalMetricDataList") or []:
        if metric.get("MetricName") == "fid50k_full":
            return float(metric["Value"]), "SageMaker final metric fid50k_full"
    fid = (metrics or {}).get("fid50k_full")
    return (None if fid is None else float(fid)), source


def judge(*, name: str, max_fid: float | None, kimg: int, fid: float | None, metrics: dict[str, Any] | None,
          source: str, checkpoint_uri: str) -> tuple[bool, str]:
    """The gate: FID within ``max_fid``; with no FID limit, the container's report of a complete run."""
    if max_fid is None:
        trained = (metrics or {}).get("kimg")
        if metrics is None or trained is None:
            return False, (f"quality gate failed: training job {name} left no metrics file ({source}); the model "
                           f"was not registered. Checkpoints: {checkpoint_uri}")
        if int(trained) < kimg:
            return False, (f"quality gate failed: training job {name} reports {trained} of {kimg} kimg trained "
                           f"({source}); the model was not registered.")
        return True, (f"quality gate: no FID limit set (max_fid empty), so no FID was computed; training job "
                      f"{name} reports {trained} kimg trained ({source}). Registered for manual approval.")
    if fid is None or not math.isfinite(fid):
        return False, (f"quality gate failed: training job {name} reported no usable FID ({source}); "
                       f"the model was not registered. Checkpoints: {checkpoint_uri}")
    if fid > max_fid:
        return False, (f"quality gate failed: FID {fid:.2f} of training job {name} is above the limit {max_fid:g} "
                       f"(from {source}); the model was not registered. To train longer from where it stopped, "
                       f"trigger again with checkpoint_uri={checkpoint_uri} and a larger kimg.")
    return True, f"quality gate passed: FID {fid:.2f} ≤ {max_fid:g} (training job {name}, {source})"


def review_training(*, plan: dict[str, Any], training: dict[str, Any], s3: Any = None) -> dict[str, Any]:
    """Judge the trained model by what the job reported and prepare its registration and sample generation."""
    job = training["Training"]
    name = job["TrainingJobName"]
    p = plan["params"]
    s3 = s3 or aws_client("s3")
    metrics, source = container_metrics(job, plan["checkpoint_uri"], s3)
    fid, source = final_fid(job, metrics, source)
    model_url = job["ModelArtifacts"]["S3ModelArtifacts"]
    passed, message = judge(name=name, max_fid=p["max_fid"], kimg=p["kimg"], fid=fid, metrics=metrics,
                            source=source, checkpoint_uri=plan["checkpoint_uri"])
    log.info(message)
    settings = stylegan2_settings()
    fid_text = "none" if fid is None else f"{fid:.4f}"
    registration = {
        # Without an FID limit nothing judged the images: a person approves the version after the samples.
        "ModelApprovalStatus": p["approval"] if p["max_fid"] is not None else "PendingManualApproval",
        "ClientToken": digest(plan["run_id"], name, length=32),  # a retried registration is not a second version
        "InferenceSpecification": {
            "Containers": [{"Image": plan["image_uri"], "ModelDataUrl": model_url}],
            "SupportedContentTypes": ["application/json"],
            "SupportedResponseMIMETypes": ["image/png"],
        },
        "CustomerMetadataProperties": {
            "fid50k_full": fid_text,
            "training_job": name,
            "resolution": str(p["resolution"]),
            "kimg": str(p["kimg"]),
            "kimg_trained": str((metrics or {}).get("kimg", "unknown")),
            "metrics_source": source[:256],
            "dag_run": plan["run_id"][:256],
            "checkpoint_uri": plan["checkpoint_uri"][:256],
            "dataset_uri": plan["dataset_uri"][:256],
        },
    }
    generation = generation_config(
        name=plan["names"]["gen"], model_url=model_url, output_uri=plan["samples_uri"], settings=settings,
        run_id=plan["run_id"], workflow="stylegan2-training", seeds=f"0-{p['samples'] - 1}",
        truncation=p["truncation"],
    )
    return {
        "passed": passed,
        "fid": fid,
        "fid_source": source,
        "metrics": metrics,
        "message": message,
        "training_job": name,
        "model_url": model_url,
        "description": f"StyleGAN2-ADA {p['resolution']}px, {p['kimg']} kimg, FID {fid_text} ({name})",
        "registration": registration,
        "generation_config": generation,
    }


def console_links(region: str, **jobs: str) -> dict[str, str]:
    base = f"https://{region}.console.aws.amazon.com/sagemaker/home?region={region}#"
    paths = {"training_job": "jobs", "prep_job": "processing-jobs", "samples_job": "processing-jobs"}
    return {kind: f"{base}/{paths[kind]}/{name}" for kind, name in jobs.items()}


def success_message(*, plan: dict[str, Any], review: dict[str, Any], model_package_arn: str, samples: dict,
                    dag_id: str, region: str) -> str:
    """JSON for subscribers: what was trained, how good, where it is registered, where to look."""
    samples_job = samples["Processing"]["ProcessingJobName"]
    body = {
        "event": "stylegan2_succeeded",
        "dag_id": dag_id,
        "run_id": plan["run_id"],
        "training_job": review["training_job"],
        "fid50k_full": review["fid"],
        "model_package_arn": model_package_arn,
        "approval": plan["params"]["approval"],
        "model_artifacts": review["model_url"],
        "samples": plan["samples_uri"],
        "contact_sheet": f"{plan['samples_uri']}contact_sheet.png",
        "links": {
            **console_links(region, training_job=review["training_job"], prep_job=plan["names"]["prep"],
                            samples_job=samples_job),
            "samples": s3_console(plan["samples_uri"], region),
            "checkpoints": s3_console(plan["checkpoint_uri"], region),
            "dataset_report": s3_console(f"{plan['prepared_dataset_uri']}report.json", region),
        },
    }
    return json.dumps(body)


def summarize(*, plan: dict[str, Any], review: dict[str, Any], model_package_arn: str, samples: dict,
              dag_id: str) -> str:
    region = aws_client("sagemaker").meta.region_name
    return success_message(plan=plan, review=review, model_package_arn=model_package_arn, samples=samples,
                           dag_id=dag_id, region=region)
