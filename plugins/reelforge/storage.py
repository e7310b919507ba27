"""Where things live: deterministic job ids, S3 key layout and safe names derived from user keys.

Nothing here talks to AWS: these are pure functions, so every component derives the same names.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import unquote_plus

MAX_KEY_BYTES = 1024
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
VIDEO_EXTENSIONS = frozenset(
    {"mp4", "m4v", "mov", "mkv", "webm", "avi", "mpg", "mpeg", "ts", "m2ts", "mts", "vob", "mxf", "wmv",
     "flv", "3gp", "ogv", "dv", "y4m"}
)


class InvalidSourceError(ValueError):
    """The source named by a trigger or a user cannot be processed; retrying will not help."""


@dataclass(frozen=True)
class S3Object:
    bucket: str
    key: str
    version_id: str | None = None
    etag: str | None = None
    size: int | None = None

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.key}"


def parse_s3_uri(uri: str) -> S3Object:
    """``s3://bucket/key`` → :class:`S3Object`; the key is kept verbatim (it may hold any character)."""
    if not uri.startswith("s3://"):
        raise InvalidSourceError(f"not an s3:// URI: {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    if not re.fullmatch(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]", bucket):
        raise InvalidSourceError(f"invalid bucket name in {uri!r}")
    validate_key(key)
    return S3Object(bucket=bucket, key=key)


def key_from_event(raw_key: str) -> str:
    """S3 event notifications URL-encode keys (``/`` too, spaces as ``+``): decode them."""
    return unquote_plus(raw_key)


def validate_key(key: str) -> None:
    """Refuse keys we will not process: empty, folder markers, control characters, over-long, and the
    path shapes the cluster's worker refuses (``reelforge_sr.s3io.validate_key``; a test keeps the two
    rule sets equal): a leading ``/`` or an empty, ``.`` or ``..`` segment."""
    if not key or key.endswith("/"):
        raise InvalidSourceError(f"not an object key: {key!r}")
    if len(key.encode()) > MAX_KEY_BYTES:
        raise InvalidSourceError(f"key longer than {MAX_KEY_BYTES} bytes")
    if _CONTROL.search(key):
        raise InvalidSourceError(f"key contains control characters (newline, NUL, ...): {key!r}")
    if key.startswith("/") or any(part in ("", ".", "..") for part in key.split("/")):
        raise InvalidSourceError(f"key {key!r} has a leading '/' or an empty, '.' or '..' path segment, "
                                 "which the cluster's storage layer refuses")


def source_extension(key: str) -> str:
    """Lower-case extension of a key if it is a known video container, else raise."""
    suffix = PurePosixPath(key).suffix.lower().lstrip(".")
    if suffix not in VIDEO_EXTENSIONS:
        raise InvalidSourceError(
            f"{PurePosixPath(key).name!r} does not have a video file extension "
            f"({', '.join(sorted(VIDEO_EXTENSIONS))})"
        )
    return suffix


def display_stem(key: str, limit_bytes: int = 160) -> str:
    """The key's file name without its extension, as the user wrote it (UTF-8, NFC), bounded in bytes.

    Used only inside S3 keys (never in cluster paths or shell text): any character but ``/`` and control
    characters (refused earlier) is allowed there.
    """
    stem = unicodedata.normalize("NFC", PurePosixPath(key).stem).strip()
    cut = stem.encode()[:limit_bytes].decode(errors="ignore").strip()
    return cut if cut.strip(".") else "video"


def safe_stem(key: str, limit: int = 80) -> str:
    """A file-system and S3 safe name from the key's file name: ASCII, ``[A-Za-z0-9._-]``, bounded."""
    stem = PurePosixPath(key).stem
    ascii_stem = unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode()
    cleaned = _UNSAFE.sub("_", ascii_stem).strip("._-")[:limit]
    return cleaned or "video"


def job_id(source: S3Object, settings: dict) -> str:
    """Same content + same settings ⇒ same id (16 hex chars, 64 bits).

    Content is the ETag when known (a re-upload of identical bytes is the same job), else the
    version id. The version id still pins what the cluster fetches.
    """
    identity = {
        "bucket": source.bucket,
        "key": source.key,
        "content": source.etag or source.version_id or "",
        "settings": settings,
    }
    digest = hashlib.sha256(json.dumps(identity, sort_keys=True, separators=(",", ":")).encode())
    return digest.hexdigest()[:16]


def sr_output_prefix(output_prefix: str, key: str, jid: str) -> str:
    """``<output_prefix><key's name>/<job_id>/`` — the delivery location of one SR job (UTF-8 names kept)."""
    base = output_prefix if output_prefix.endswith("/") or not output_prefix else output_prefix + "/"
    return f"{base}{display_stem(key)}/{jid}/"


def ascii_sr_output_prefix(output_prefix: str, key: str, jid: str) -> str:
    """Where jobs were delivered before names kept their UTF-8 form (``safe_stem``): checked as done too."""
    base = output_prefix if output_prefix.endswith("/") or not output_prefix else output_prefix + "/"
    return f"{base}{safe_stem(key)}/{jid}/"


def sr_output_name(key: str, scale: int, container: str, preview: bool = False) -> str:
    """The delivered video's file name: the source's own name, then ``.x<scale>`` (``.preview``) and the container."""
    return f"{display_stem(key)}.x{scale}{'.preview' if preview else ''}.{container}"


def sr_workdir(cluster_work_root: str, jid: str) -> str:
    """The job's directory on the cluster's shared storage (only the job id, never user text)."""
    return f"{cluster_work_root.rstrip('/')}/sr/{jid}"


def folder(value: str) -> str:
    """A key prefix with its trailing ``/`` (empty stays empty)."""
    return value if not value or value.endswith("/") else value + "/"


def subfolder(prefix: str, name: str) -> str:
    """``<prefix>/<name>/``, or ``<name>/`` under an empty prefix (never a key that starts with ``/``)."""
    return f"{prefix.rstrip('/')}/{name}/" if prefix.strip("/") else f"{name}/"
