"""List new uploads for the polling ingest path."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from reelforge.settings import AWS_CONN_ID, sr_settings
from reelforge.storage import VIDEO_EXTENSIONS, S3Object, job_id


def uploads_between(start: datetime | None, end: datetime | None) -> list[dict[str, Any]]:
    """One ``{"trigger_run_id", "conf"}`` per video under the ingest prefix modified in [start, end)."""
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    settings = sr_settings()
    s3 = S3Hook(aws_conn_id=AWS_CONN_ID).get_conn()
    found = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=settings.ingest_bucket,
                                                             Prefix=settings.ingest_prefix):
        for obj in page.get("Contents", []):
            modified = obj["LastModified"]
            if (start and modified < start) or (end and modified >= end):
                continue
            if obj["Key"].rsplit(".", 1)[-1].lower() not in VIDEO_EXTENSIONS:
                continue
            source = S3Object(settings.ingest_bucket, obj["Key"], etag=obj["ETag"].strip('"'))
            found.append({
                "trigger_run_id": f"poll__{job_id(source, {})}",
                "conf": {"source_uri": source.uri},
            })
    return found
