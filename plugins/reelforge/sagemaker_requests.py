"""Pieces of SageMaker requests and S3 access that the SageMaker workflows share (pure functions, except the
client factory): deterministic names, processing-job configs, ``s3://`` URIs, listing, console links.

The StyleGAN2 and avatar workflows both build their requests from these.
"""

from __future__ import annotations

import hashlib
import json
import re
from datetime import datetime
from typing import Any

from reelforge.settings import AWS_CONN_ID

PROC = "/opt/ml/processing"
JOB_NAME_RE = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}")


class InvalidParamsError(ValueError):
    """The run's parameters cannot make a valid job; retrying will not help."""


def digest(*parts: object, length: int = 6) -> str:
    text = json.dumps(parts, sort_keys=True, default=str, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:length]


def run_key(run_after: datetime, run_id: str) -> str:
    """``<run_after:%Y%m%d%H%M%S>-<6 hex of sha256(run_id)>``: the same for every try of a run."""
    return f"{run_after:%Y%m%d%H%M%S}-{digest(run_id)}"


def s3_uri(bucket: str, key: str) -> str:
    return f"s3://{bucket}/{key}"


def split_s3_uri(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://"):
        raise InvalidParamsError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def tags(workflow: str, run_id: str) -> list[dict[str, str]]:
    safe = re.sub(r"[^\w.:/=+\-@ ]", "_", run_id)[:256]
    return [{"Key": "reelforge:workflow", "Value": workflow}, {"Key": "reelforge:dag-run", "Value": safe}]


def s3_input(name: str, uri: str, local: str, data_type: str = "S3Prefix") -> dict[str, Any]:
    return {"InputName": name, "S3Input": {"S3Uri": uri, "LocalPath": local, "S3DataType": data_type,
                                           "S3InputMode": "File", "S3DataDistributionType": "FullyReplicated"}}


def s3_output(name: str, uri: str, local: str) -> dict[str, Any]:
    return {"OutputName": name, "S3Output": {"S3Uri": uri, "LocalPath": local, "S3UploadMode": "EndOfJob"}}


def processing_job(name: str, *, role_arn: str, image_uri: str, entrypoint: list[str], args: list[str],
                   inputs: list[dict], outputs: list[dict], instance_type: str, volume_gb: int, max_runtime_s: int,
                   run_id: str, workflow: str) -> dict[str, Any]:
    """A ``CreateProcessingJob`` request on one instance."""
    return {
        "ProcessingJobName": name,
        "RoleArn": role_arn,
        "AppSpecification": {"ImageUri": image_uri, "ContainerEntrypoint": entrypoint, "ContainerArguments": args},
        "ProcessingInputs": inputs,
        "ProcessingOutputConfig": {"Outputs": outputs},
        "ProcessingResources": {"ClusterConfig": {"InstanceCount": 1, "InstanceType": instance_type,
                                                  "VolumeSizeInGB": volume_gb}},
        "StoppingCondition": {"MaxRuntimeInSeconds": max_runtime_s},
        "Tags": tags(workflow, run_id),
    }


def aws_client(service: str) -> Any:
    """A boto3 client through Airflow's AWS connection."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    return AwsBaseHook(aws_conn_id=AWS_CONN_ID, client_type=service).get_conn()


def list_objects(s3: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """Every object under ``prefix`` as ``list_objects_v2`` reports it (all pages)."""
    objects: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        objects += page.get("Contents", [])
    return objects


def s3_console(uri: str, region: str) -> str:
    """The S3 console's page of a prefix."""
    from urllib.parse import quote

    bucket, key = split_s3_uri(uri)
    return f"https://s3.console.aws.amazon.com/s3/buckets/{bucket}?region={region}&prefix={quote(key)}"
