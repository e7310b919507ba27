"""Find the source video of a run: from the UI form, or from the S3 notification that started it."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any

from reelforge.storage import InvalidSourceError, S3Object, key_from_event, parse_s3_uri, validate_key

log = logging.getLogger(__name__)


def _records(body: Any) -> Iterable[dict]:
    """S3 event records from an SQS body: direct S3→SQS, or wrapped in an SNS envelope."""
    if isinstance(body, str):
        try:
            body = json.loads(body)
        except json.JSONDecodeError:
            log.warning("ignoring a non-JSON queue message")
            return []
    if isinstance(body, dict) and "Message" in body and "Records" not in body:
        return _records(body["Message"])
    if isinstance(body, dict):
        return [r for r in body.get("Records", []) if str(r.get("eventName", "")).startswith("ObjectCreated")]
    return []


def sources_from_asset_events(events: Mapping[Any, Iterable[Any]] | None) -> list[S3Object]:
    """Every created object named by the SQS messages behind this run's asset events.

    ``s3:TestEvent`` messages and non-create events carry no record and yield nothing.
    """
    found: list[S3Object] = []
    for asset_events in (events or {}).values():
        for event in asset_events:
            extra = getattr(event, "extra", None) or {}
            payload = extra.get("payload") or {}
            for message in payload.get("message_batch", []) or []:
                for record in _records(message.get("Body")):
                    obj = record.get("s3", {}).get("object", {})
                    found.append(
                        S3Object(
                            bucket=record["s3"]["bucket"]["name"],
                            key=key_from_event(obj["key"]),
                            version_id=obj.get("versionId"),
                            etag=(obj.get("eTag") or obj.get("etag") or "").strip('"') or None,
                            size=obj.get("size"),
                        )
                    )
    return found


def resolve_source(source_uri: str | None, events: Mapping[Any, Iterable[Any]] | None) -> S3Object | None:
    """The run's source: the form's ``source_uri`` wins; else the first object of the notification.

    Returns ``None`` when the run was started by a message that names no object (S3 test event).
    """
    if source_uri:
        return parse_s3_uri(source_uri.strip())
    sources = sources_from_asset_events(events)
    if len(sources) > 1:
        log.warning("one notification named %d objects; this run processes the first", len(sources))
    if not sources:
        return None
    validate_key(sources[0].key)
    return sources[0]


def head_source(s3_client: Any, source: S3Object, max_bytes: int) -> S3Object:
    """Pin the exact object version and check its size before any cluster time is spent."""
    kwargs: dict[str, str] = {"Bucket": source.bucket, "Key": source.key}
    if source.version_id:
        kwargs["VersionId"] = source.version_id
    try:
        head = s3_client.head_object(**kwargs)
    except s3_client.exceptions.ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        if code in {"404", "NoSuchKey", "NotFound", "NoSuchVersion"}:
            raise InvalidSourceError(f"{source.uri} does not exist (or that version was deleted)") from err
        raise
    size = int(head["ContentLength"])
    if size == 0:
        raise InvalidSourceError(f"{source.uri} is empty (0 bytes)")
    if size > max_bytes:
        raise InvalidSourceError(f"{source.uri} is {size} bytes, over the limit of {max_bytes}")
    return S3Object(
        bucket=source.bucket,
        key=source.key,
        version_id=head.get("VersionId") if head.get("VersionId") not in (None, "null") else None,
        etag=str(head.get("ETag", "")).strip('"') or None,
        size=size,
    )
