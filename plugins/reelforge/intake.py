"""The intake ledger and the reconciliation pass behind every upload-triggered workflow.

Why: an S3 notification is at least once, may be late, and Airflow 3.3.2 can strand the asset events
it becomes (``SchedulerJobRunner._create_dag_runs_asset_triggered`` consumes only the events up to
the ``created_at`` of the DAG's asset queue row, whose insert is *on conflict do nothing*, then
deletes that row: events that queued behind it wait for the next upload; apache/airflow#56050).
No single notification path can promise that an upload is processed.

How: the first task of every run records the object version it picked up, whatever it then decides
(claim, skip, refuse), as a small ledger object. A scheduled reconciler lists the ingest prefix,
and starts one run, with a run id derived from the object version (a second create is a no-op), for
every version that has no ledger entry some minutes after it landed. Claims (``sr/claims.py``; for the
training workflows ``upload_watch.py``) still decide which run does the work, so the notification and
the reconciler can race harmlessly.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from reelforge.s3_objects import object_exists
from reelforge.storage import S3Object

log = logging.getLogger(__name__)


def version_digest(obj: S3Object) -> str:
    """32 hex chars naming one upload: bucket, key and content (ETag; version id when no ETag)."""
    identity = json.dumps([obj.bucket, obj.key, obj.etag or obj.version_id or ""], separators=(",", ":"))
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


def upload_digest(obj: S3Object) -> str:
    """32 hex chars naming one object version: bucket, key and version id (ETag in an unversioned bucket).

    For uploads whose content says nothing (an empty ``_READY`` marker has the same ETag every time),
    only the version id tells a second upload of the same key from the first.
    """
    identity = json.dumps([obj.bucket, obj.key, obj.version_id or "", "" if obj.version_id else obj.etag or ""],
                          separators=(",", ":"))
    return hashlib.sha256(identity.encode()).hexdigest()[:32]


Digest = Callable[[S3Object], str]


def reconcile_run_id(obj: S3Object, digest: Digest = version_digest) -> str:
    """The run id the reconciler gives an upload: the same on every pass, so a second trigger is a no-op."""
    return f"reconcile__{digest(obj)[:24]}"


@dataclass(frozen=True)
class Ledger:
    """Where a workflow records the uploads its runs picked up (``s3://bucket/prefix<digest>.json``)."""

    bucket: str
    prefix: str
    digest: Digest = version_digest
    #: look entries up with a one-key LIST (``s3:ListBucket`` scoped to the prefix) rather than a HEAD,
    #: which answers 403, not 404, for a missing key unless the role may list the whole bucket
    by_listing: bool = False

    def key(self, obj: S3Object) -> str:
        return f"{self.prefix.rstrip('/')}/{self.digest(obj)}.json"

    def record(self, s3_client: Any, obj: S3Object, run_id: str) -> None:
        """Note that ``run_id`` picked ``obj`` up (idempotent; a later run of the same version overwrites)."""
        body = {"source": obj.uri, "etag": obj.etag, "version_id": obj.version_id, "run_id": run_id,
                "at": datetime.now(UTC).isoformat(timespec="seconds")}
        s3_client.put_object(Bucket=self.bucket, Key=self.key(obj), Body=json.dumps(body).encode(),
                             ContentType="application/json")

    def has(self, s3_client: Any, obj: S3Object) -> bool:
        key = self.key(obj)
        if not self.by_listing:
            return object_exists(s3_client, self.bucket, key)
        listed = s3_client.list_objects_v2(Bucket=self.bucket, Prefix=key, MaxKeys=1).get("Contents", [])
        return any(item["Key"] == key for item in listed)


@dataclass(frozen=True)
class Window:
    """The slice of upload times one reconciliation pass checks: ``[start, end)``.

    ``end`` is now minus the grace period (a notification normally starts its run well within it);
    ``start`` is the stored watermark minus the overlap. The overlap is re-checked on every pass
    because S3 dates a multipart upload by its *initiation*, so a long upload can land behind the
    watermark; it should exceed the longest upload.
    """

    start: datetime
    end: datetime

    @classmethod
    def after(cls, watermark: datetime | None, *, now: datetime, grace: timedelta, overlap: timedelta) -> Window:
        end = now - grace
        start = (watermark or end) - overlap
        return cls(start=min(start, end), end=end)


def listed_objects(s3_client: Any, bucket: str, prefix: str) -> Iterator[tuple[S3Object, datetime]]:
    """The current version of every object under ``prefix``, with its LastModified."""
    for page in s3_client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Contents", []):
            etag = str(item.get("ETag", "")).strip('"') or None
            yield S3Object(bucket, item["Key"], etag=etag, size=item.get("Size")), item["LastModified"]


def listed_versions(s3_client: Any, bucket: str, prefix: str) -> Iterator[tuple[S3Object, datetime]]:
    """The latest version of every object under ``prefix`` (version id and ETag), with its LastModified.

    Delete markers and older versions are left out; an unversioned bucket's version id (``null``) is ``None``.
    """
    for page in s3_client.get_paginator("list_object_versions").paginate(Bucket=bucket, Prefix=prefix):
        for item in page.get("Versions", []):
            if not item.get("IsLatest"):
                continue
            version = item.get("VersionId")
            yield S3Object(bucket, item["Key"], version_id=None if version in (None, "null") else version,
                           etag=str(item.get("ETag", "")).strip('"') or None, size=item.get("Size")), \
                item["LastModified"]


def unhandled_uploads(
    s3_client: Any,
    *,
    bucket: str,
    prefix: str,
    ledger: Ledger,
    window: Window,
    accept: Callable[[S3Object], str | None],
    versions: bool = False,
) -> list[S3Object]:
    """Uploads in ``window`` that no run has picked up, oldest first.

    ``accept`` returns ``None`` for an object the workflow would process, else why not (a wrong
    extension, a key the workflow refuses): those are left alone, as no run could do anything with them.
    ``versions``: list version ids too (for ledgers keyed by :func:`upload_digest`).
    """
    found: list[tuple[datetime, S3Object]] = []
    left_alone = 0
    listing = listed_versions if versions else listed_objects
    for obj, modified in listing(s3_client, bucket, prefix):
        if not window.start <= modified < window.end:
            continue
        if (why := accept(obj)) is not None:
            log.debug("not reconciling %s: %s", obj.uri, why)
            left_alone += 1
            continue
        if not ledger.has(s3_client, obj):
            found.append((modified, obj))
    if left_alone:
        log.info("left %d object(s) in the window alone: no run would process them", left_alone)
    found.sort(key=lambda pair: pair[0])
    return [obj for _, obj in found]


def parse_watermark(value: str | None) -> datetime | None:
    """A stored watermark (ISO 8601, UTC) or ``None`` when unset or unreadable (then the overlap applies)."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        log.warning("ignoring an unreadable reconciler watermark %r", value)
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
