"""S3 transfers of the fine-tune service (boto3; ``AWS_ENDPOINT_URL`` points it at moto locally)."""

from __future__ import annotations

from pathlib import Path

from reelforge_avatar.errors import UserError

MAX_DOWNLOAD_FILES = 2000


def split_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` → ``(bucket, key)``."""
    if not uri.startswith("s3://"):
        raise UserError(f"not an S3 URI: {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


def _client():
    import boto3

    return boto3.client("s3")


def download_prefix(uri: str, target: Path, *, client=None, max_files: int = MAX_DOWNLOAD_FILES) -> list[Path]:
    """Every object under the prefix ``uri`` into ``target`` (flat, by base name); the local paths."""
    client = client or _client()
    bucket, prefix = split_uri(uri)
    target.mkdir(parents=True, exist_ok=True)
    paths = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            name = obj["Key"].rsplit("/", 1)[-1]
            if not name or name.startswith("."):
                continue
            if len(paths) >= max_files:
                raise UserError(f"more than {max_files} objects under {uri}")
            dest = target / name
            client.download_file(bucket, obj["Key"], str(dest))
            paths.append(dest)
    return sorted(paths)


def download_file(uri: str, path: Path, *, client=None) -> Path:
    """One object to ``path``."""
    client = client or _client()
    bucket, key = split_uri(uri)
    path.parent.mkdir(parents=True, exist_ok=True)
    client.download_file(bucket, key, str(path))
    return path


def upload_atomic(path: Path, uri: str, *, client=None) -> str:
    """Upload ``path`` to a temporary key beside ``uri``, copy it to ``uri`` and delete the temporary key."""
    client = client or _client()
    bucket, key = split_uri(uri)
    temp = f"{key}.partial"
    client.upload_file(str(path), bucket, temp)
    client.copy({"Bucket": bucket, "Key": temp}, bucket, key)
    client.delete_object(Bucket=bucket, Key=temp)
    return uri
