"""S3 fetch (source → shared storage) and deliver (outputs → S3) with boto3.

The endpoint comes from boto3's own configuration (``AWS_ENDPOINT_URL`` etc.), never from code.
Keys are taken literally: an S3 event's URL-encoded key must be decoded before it gets here (a
not-found error says so when the key looks encoded). Keys with ``.``/``..`` segments, empty segments,
a leading ``/`` or control characters are refused.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
import urllib.parse
from pathlib import Path
from typing import Any

from reelforge_sr.atomic import fsync_dir, read_json, write_json
from reelforge_sr.errors import StorageError, UnusableObjectError

BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
CONTROL_RE = re.compile(r"[\x00-\x1f\x7f]")
DEFAULT_MAX_BYTES = int(os.environ.get("REELFORGE_MAX_SOURCE_BYTES", str(50 * 1024**3)))
MULTIPART_THRESHOLD = 8 * 1024 * 1024
CONTENT_TYPES = {".mp4": "video/mp4", ".mkv": "video/x-matroska", ".png": "image/png", ".json": "application/json"}


def _client() -> Any:
    import boto3
    from botocore.config import Config

    # Issue 10 (endpoint outage): botocore's defaults (legacy mode, 5 attempts, ~7 s of backoff on
    # average) failed ~10% of 4-second S3 outages. Standard mode with 10 attempts (backoff capped at
    # 20 s) rides out outages of a minute; AWS_RETRY_MODE / AWS_MAX_ATTEMPTS still override.
    if os.environ.get("AWS_RETRY_MODE") or os.environ.get("AWS_MAX_ATTEMPTS"):
        return boto3.client("s3")
    return boto3.client("s3", config=Config(retries={"mode": "standard", "max_attempts": 10}))


def validate_key(key: str, *, allow_empty: bool = False, what: str = "key") -> str:
    """Return ``key`` if acceptable, else raise :class:`StorageError`."""
    if not key:
        if allow_empty:
            return key
        raise UnusableObjectError(f"S3 {what} is empty")
    if len(key.encode()) > 1024:
        raise UnusableObjectError(f"S3 {what} is longer than 1024 bytes")
    if CONTROL_RE.search(key):
        raise UnusableObjectError(f"S3 {what} {key!r} contains control characters")
    if key.startswith("/"):
        raise UnusableObjectError(f"S3 {what} {key!r} starts with '/'")
    parts = key.rstrip("/").split("/") if key.endswith("/") else key.split("/")
    if any(p in ("", ".", "..") for p in parts):
        raise UnusableObjectError(f"S3 {what} {key!r} has an empty, '.' or '..' path segment")
    return key


def parse_s3_uri(uri: str, *, prefix: bool = False) -> tuple[str, str]:
    """``s3://bucket/key`` → (bucket, key); the key is not URL-decoded."""
    if not uri.startswith("s3://"):
        raise UnusableObjectError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[5:].partition("/")
    if not BUCKET_RE.match(bucket) or ".." in bucket:
        raise UnusableObjectError(f"{bucket!r} is not a valid bucket name")
    if prefix and key and not key.endswith("/"):
        key += "/"
    return bucket, validate_key(key, allow_empty=prefix, what="prefix" if prefix else "key")


def _error_code(exc: Exception) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def head(client: Any, bucket: str, key: str, version_id: str | None = None) -> dict[str, Any]:
    kwargs = {"Bucket": bucket, "Key": key, **({"VersionId": version_id} if version_id else {})}
    try:
        return client.head_object(**kwargs)
    except Exception as exc:
        code = _error_code(exc)
        if code in ("404", "NoSuchKey", "NotFound"):
            hint = ""
            decoded = urllib.parse.unquote_plus(key)
            if decoded != key:
                hint = f" (if the key came URL-encoded from an S3 event, decode it first: {decoded!r})"
            raise UnusableObjectError(f"s3://{bucket}/{key} not found{hint}") from exc
        raise StorageError(f"cannot read s3://{bucket}/{key}: {exc}") from exc


def fetch(uri: str, dest: str | Path, *, version_id: str | None = None,
          max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    """Download ``uri`` to ``dest`` (temp name + rename). Skips when ``dest`` already holds that object."""
    bucket, key = parse_s3_uri(uri)
    dest = Path(dest).resolve()
    client = _client()
    info = head(client, bucket, key, version_id)
    size, etag = int(info["ContentLength"]), str(info.get("ETag", "")).strip('"')
    version = info.get("VersionId") if info.get("VersionId") not in (None, "null") else None
    if size == 0:
        raise UnusableObjectError(f"s3://{bucket}/{key} is empty (0 bytes)")
    if size > max_bytes:
        raise UnusableObjectError(f"s3://{bucket}/{key} has {size} bytes, over the limit of {max_bytes}")
    record = {"uri": f"s3://{bucket}/{key}", "bucket": bucket, "key": key, "version_id": version, "etag": etag,
              "size": size, "last_modified": str(info.get("LastModified", "")), "path": str(dest)}
    sidecar = dest.with_name(dest.name + ".s3.json")
    if dest.is_file() and sidecar.is_file() and dest.stat().st_size == size:
        try:
            old = read_json(sidecar)
        except (OSError, ValueError):
            old = {}
        if all(old.get(k) == record[k] for k in ("bucket", "key", "etag", "size", "version_id")):
            return {**old, "skipped": True}
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(f".{dest.name}.{os.getpid()}.part")
    extra = {"ChecksumMode": "ENABLED", **({"VersionId": version} if version else {})}
    started = time.monotonic()
    try:
        client.download_file(bucket, key, str(part), ExtraArgs=extra)
        got = part.stat().st_size
        if got != size:
            raise StorageError(f"downloaded {got} bytes of s3://{bucket}/{key}, expected {size}")
        if not version:  # no version to pin: make sure the object did not change while we read it
            again = head(client, bucket, key)
            if str(again.get("ETag", "")).strip('"') != etag:
                raise StorageError(f"s3://{bucket}/{key} changed during the download; try again")
        with open(part, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(part, dest)
        fsync_dir(dest.parent)
    except StorageError:
        raise
    except Exception as exc:
        raise StorageError(f"downloading s3://{bucket}/{key} failed: {exc}") from exc
    finally:
        part.unlink(missing_ok=True)
    record["seconds"] = round(time.monotonic() - started, 3)
    write_json(sidecar, record)
    return {**record, "skipped": False}


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
    return h.hexdigest()


def upload(client: Any, path: Path, bucket: str, key: str, role: str) -> dict[str, Any]:
    """Upload one file (multipart above 8 MiB) with SHA-256 checksums; return what S3 now holds."""
    from boto3.s3.transfer import TransferConfig

    validate_key(key)
    config = TransferConfig(multipart_threshold=MULTIPART_THRESHOLD, multipart_chunksize=MULTIPART_THRESHOLD)
    extra = {"ChecksumAlgorithm": "SHA256", "ContentType": CONTENT_TYPES.get(path.suffix, "application/octet-stream")}
    try:
        client.upload_file(str(path), bucket, key, ExtraArgs=extra, Config=config)
        info = client.head_object(Bucket=bucket, Key=key, ChecksumMode="ENABLED")
    except Exception as exc:
        raise StorageError(f"uploading {path} to s3://{bucket}/{key} failed: {exc}") from exc
    size = path.stat().st_size
    if int(info["ContentLength"]) != size:
        raise StorageError(f"s3://{bucket}/{key} has {info['ContentLength']} bytes after upload, expected {size}")
    return {"role": role, "bucket": bucket, "key": key, "uri": f"s3://{bucket}/{key}", "size": size,
            "etag": str(info.get("ETag", "")).strip('"'), "version_id": info.get("VersionId"),
            "checksum_sha256": info.get("ChecksumSHA256"), "sha256": _sha256(path),
            "multipart": size >= MULTIPART_THRESHOLD}


def deliver(workdir: str | Path, dest: str, name: str | None = None) -> dict[str, Any]:
    """Upload the output video (as ``name``: the source's own name), the previews, then ``report.json``
    last; write ``delivery.json``.

    Each S3 put is atomic, and the report goes last, so a report under the prefix means the delivery
    is complete.
    """
    workdir = Path(workdir).resolve()
    bucket, prefix = parse_s3_uri(dest, prefix=True)
    report_path = workdir / "report.json"
    if not report_path.is_file():
        raise StorageError(f"{report_path} not found: run `reelforge-sr assemble` first")
    report = read_json(report_path)
    video = Path(report["output"]["path"])
    if not video.is_file():
        raise StorageError(f"the output {video} named in report.json does not exist")
    if name is not None and (not name or "/" in name or name in (".", "..")):
        raise UnusableObjectError(f"--name {name!r} is not a file name")
    items = [("video", video, f"{prefix}{name or video.name}")]
    for name in (report.get("quality") or {}).get("previews", []):
        path = workdir / "previews" / name
        if path.is_file() and Path(name).name == name:
            items.append(("preview", path, f"{prefix}previews/{name}"))
    items.append(("report", report_path, f"{prefix}report.json"))
    client = _client()
    started = time.monotonic()
    objects = [upload(client, path, bucket, key, role) for role, path, key in items]
    delivery = {"version": 1, "dest": f"s3://{bucket}/{prefix}", "bucket": bucket, "prefix": prefix,
                "objects": objects, "seconds": round(time.monotonic() - started, 3),
                "delivered_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    write_json(workdir / "delivery.json", delivery)
    return delivery
