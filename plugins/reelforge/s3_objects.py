"""Small S3 checks shared by the workflows (the client is any boto3 S3 client)."""

from __future__ import annotations

from typing import Any

#: Error codes S3 (and moto) answer for an object that is not there.
ABSENT_CODES = frozenset({"404", "NoSuchKey", "NotFound"})


def object_exists(s3_client: Any, bucket: str, key: str) -> bool:
    """HEAD the object: ``False`` when S3 says it is absent; any other error is raised."""
    try:
        s3_client.head_object(Bucket=bucket, Key=key)
    except s3_client.exceptions.ClientError as err:
        if err.response.get("Error", {}).get("Code") in ABSENT_CODES:
            return False
        raise
    return True
