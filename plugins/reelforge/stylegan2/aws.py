"""boto3 clients through Airflow's AWS connection, and the S3 listing both DAGs need."""

from __future__ import annotations

from typing import Any

from reelforge.settings import AWS_CONN_ID


def aws_client(service: str) -> Any:
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    return AwsBaseHook(aws_conn_id=AWS_CONN_ID, client_type=service).get_conn()


def list_objects(s3: Any, bucket: str, prefix: str) -> list[dict[str, Any]]:
    """Every object under ``prefix`` as ``list_objects_v2`` reports it (all pages)."""
    objects: list[dict[str, Any]] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        objects += page.get("Contents", [])
    return objects
