"""Task bodies of the ``stylegan2_weekly_batch`` DAG: pick the model and the interval's inputs, report.

One data interval ⇒ one output prefix, ``<output prefix>weekly/interval_start=<YYYY-MM-DD>/``, holding
exactly one batch job's outputs. The job's name hashes the interval, the model version and the input
objects (key + ETag): a re-run of an interval with the same inputs and model finds its completed job
and does nothing; a re-run after late uploads replaces the prefix's content with a new job's.

The model is the newest *approved* version of the group created before the interval ended, so a
catch-up run for an old week uses the model that was current then (if it is still approved).
"""

from __future__ import annotations

import json
import logging
from datetime import datetime
from typing import Any

from reelforge.sagemaker_requests import aws_client, digest, list_objects, s3_uri
from reelforge.stylegan2.plan import generation_config, job_name
from reelforge.stylegan2.settings import StyleGAN2Settings, stylegan2_settings

log = logging.getLogger(__name__)


def interval_prefix(settings: StyleGAN2Settings, start: datetime) -> str:
    return f"{settings.output_prefix}weekly/interval_start={start:%Y-%m-%d}/"


def latest_approved_model(sm: Any, group: str, before: datetime) -> dict[str, Any] | None:
    """Newest approved version of ``group`` created before ``before`` (its description), else None."""
    pages = sm.get_paginator("list_model_packages").paginate(
        ModelPackageGroupName=group, ModelApprovalStatus="Approved", CreationTimeBefore=before,
        SortBy="CreationTime", SortOrder="Descending",
    )
    for page in pages:
        for summary in page.get("ModelPackageSummaryList", []):
            return sm.describe_model_package(ModelPackageName=summary["ModelPackageArn"])
    return None


def inputs_in_interval(objects: list[dict[str, Any]], start: datetime, end: datetime) -> list[dict[str, Any]]:
    """Objects uploaded in ``[start, end)``, folder markers left out, sorted by key."""
    chosen = [o for o in objects if start <= o["LastModified"] < end and not o["Key"].endswith("/")]
    return sorted(chosen, key=lambda o: o["Key"])


def weekly_job_name(start: datetime, model_arn: str, inputs: list[dict[str, Any]]) -> str:
    identity = [model_arn, [(o["Key"], str(o.get("ETag", "")).strip('"')) for o in inputs]]
    return job_name("wk", f"{start:%Y%m%d}-{digest(identity, length=8)}")


def _job_exists(sm: Any, name: str) -> bool:
    from botocore.exceptions import ClientError

    try:
        sm.describe_processing_job(ProcessingJobName=name)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") == "ValidationException":
            return False
        raise
    return True


def _clear_prefix(s3: Any, bucket: str, prefix: str) -> int:
    keys = [{"Key": o["Key"]} for o in list_objects(s3, bucket, prefix)]
    for start in range(0, len(keys), 1000):  # delete_objects takes at most 1000 keys
        s3.delete_objects(Bucket=bucket, Delete={"Objects": keys[start:start + 1000], "Quiet": True})
    return len(keys)


def plan_interval(*, start: datetime, end: datetime, run_id: str) -> dict[str, Any]:
    """The interval's model, inputs, manifest and batch job request; skip when there is nothing to do."""
    from airflow.sdk.exceptions import AirflowSkipException

    settings = stylegan2_settings()
    sm, s3 = aws_client("sagemaker"), aws_client("s3")
    model = latest_approved_model(sm, settings.model_package_group, end)
    if model is None:
        raise AirflowSkipException(
            f"no approved version in model package group {settings.model_package_group} before {end.isoformat()}")
    objects = list_objects(s3, settings.batch_input_bucket, settings.batch_input_prefix)
    inputs = inputs_in_interval(objects, start, end)
    if not inputs:
        raise AirflowSkipException(
            f"no inputs under s3://{settings.batch_input_bucket}/{settings.batch_input_prefix} uploaded in "
            f"[{start.isoformat()}, {end.isoformat()})")

    model_arn = model["ModelPackageArn"]
    name = weekly_job_name(start, model_arn, inputs)
    out_prefix = interval_prefix(settings, start)
    manifest_key = f"{settings.artifacts_prefix}weekly/interval_start={start:%Y-%m-%d}/{name}.manifest.json"
    base = settings.batch_input_prefix
    manifest = [{"prefix": s3_uri(settings.batch_input_bucket, base)}, *[o["Key"][len(base):] for o in inputs]]
    s3.put_object(Bucket=settings.artifacts_bucket, Key=manifest_key, Body=json.dumps(manifest).encode(),
                  ContentType="application/json")
    if not _job_exists(sm, name):
        removed = _clear_prefix(s3, settings.output_bucket, out_prefix)
        if removed:
            log.info("cleared %d objects of an earlier batch under s3://%s/%s", removed, settings.output_bucket,
                     out_prefix)
    model_url = model["InferenceSpecification"]["Containers"][0]["ModelDataUrl"]
    config = generation_config(
        name=name, model_url=model_url, output_uri=s3_uri(settings.output_bucket, out_prefix), settings=settings,
        run_id=run_id, workflow="stylegan2-weekly", requests_manifest_uri=s3_uri(settings.artifacts_bucket,
                                                                                manifest_key),
    )
    log.info("interval %s–%s: %d inputs, model %s, job %s → s3://%s/%s", start, end, len(inputs), model_arn, name,
             settings.output_bucket, out_prefix)
    return {
        "job_name": name,
        "config": config,
        "model_package_arn": model_arn,
        "model_url": model_url,
        "inputs": [o["Key"] for o in inputs],
        "output_uri": s3_uri(settings.output_bucket, out_prefix),
        "interval": [start.isoformat(), end.isoformat()],
    }


def record_batch(*, plan: dict[str, Any], result: dict[str, Any], dag_id: str, run_id: str) -> str:
    """Write ``batch.json`` (what produced this prefix: the same for every run of the interval) beside the
    outputs; return the SNS message."""
    settings = stylegan2_settings()
    out_key = plan["output_uri"].split("/", 3)[3]
    record = {
        "event": "stylegan2_batch_succeeded",
        "dag_id": dag_id,
        "interval": plan["interval"],
        "job": result["Processing"]["ProcessingJobName"],
        "model_package_arn": plan["model_package_arn"],
        "inputs": plan["inputs"],
        "output": plan["output_uri"],
        "contact_sheet": f"{plan['output_uri']}contact_sheet.png",
    }
    aws_client("s3").put_object(Bucket=settings.output_bucket, Key=f"{out_key}batch.json",
                          Body=json.dumps(record, indent=2).encode(), ContentType="application/json")
    return json.dumps({**record, "run_id": run_id})
