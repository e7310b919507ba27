"""The upload a run works on: from its UI form, or from the S3 notifications (asset events) that started it.

Shared by every upload-triggered workflow: resolve the source, hand folded uploads back to the queue,
pin the version a run works on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote_plus

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
    """The run's source: the form's ``source_uri`` wins; else the first object of the notifications.

    Returns ``None`` when the run was started by a message that names no object (S3 test event).
    The other objects of a run that Airflow folded several notifications into are
    :func:`further_sources`; the caller hands them back to the queue (:func:`hand_back`).
    """
    if source_uri:
        return parse_s3_uri(source_uri.strip())
    sources = sources_from_asset_events(events)
    if not sources:
        return None
    validate_key(sources[0].key)
    return sources[0]


def further_sources(source_uri: str | None, events: Mapping[Any, Iterable[Any]] | None) -> list[S3Object]:
    """Objects beyond the first that this run's notifications name, each once (none for a form run).

    Airflow 3 folds every asset event that arrived since the DAG's previous run into the next run, so
    uploads that land while ``max_active_runs`` is reached, or within one scheduler loop, share a run.
    """
    if source_uri:
        return []
    sources = sources_from_asset_events(events)
    seen = {sources[0]} if sources else set()
    rest: list[S3Object] = []
    for obj in sources[1:]:
        if obj not in seen:
            seen.add(obj)
            rest.append(obj)
    return rest


def notification_body(obj: S3Object, *, handed_back_by: str) -> str:
    """An S3 ``ObjectCreated`` notification for ``obj``, shaped as S3 sends it to SQS (key URL-encoded)."""
    described: dict[str, Any] = {"key": quote_plus(obj.key)}
    if obj.version_id:
        described["versionId"] = obj.version_id
    if obj.etag:
        described["eTag"] = obj.etag
    if obj.size is not None:
        described["size"] = obj.size
    record = {"eventVersion": "2.1", "eventSource": "aws:s3", "eventName": "ObjectCreated:Put",
              "s3": {"s3SchemaVersion": "1.0", "bucket": {"name": obj.bucket, "arn": f"arn:aws:s3:::{obj.bucket}"},
                     "object": described},
              "reelforge": {"handed_back_by": handed_back_by}}
    return json.dumps({"Records": [record]})


def hand_back(sqs_client: Any, queue_url: str | None, sources: list[S3Object], *, run_id: str) -> None:
    """Send each object back to the ingest queue as a notification of its own, so each gets its own run.

    At least once: a retried task may send twice, and the job claim turns the second into a skip.
    Without a queue (form or poller runs) there is nowhere to send them: that is an error, not a loss.
    """
    if not sources:
        return
    if not queue_url:
        raise RuntimeError(f"{len(sources)} further upload(s) share this run and no ingest queue is configured: "
                           + ", ".join(o.uri for o in sources))
    for obj in sources:
        sqs_client.send_message(QueueUrl=queue_url, MessageBody=notification_body(obj, handed_back_by=run_id))
        log.info("handed %s (version %s) back to the ingest queue for a run of its own", obj.uri, obj.version_id)


def pin_source(s3_client: Any, source: S3Object) -> S3Object:
    """HEAD the object (the announced version, else the latest): its version, ETag and size."""
    return pin_source_and_metadata(s3_client, source)[0]


def pin_source_and_metadata(s3_client: Any, source: S3Object) -> tuple[S3Object, dict[str, str]]:
    """:func:`pin_source` and the version's user metadata (``x-amz-meta-*``), from the same HEAD."""
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
    return S3Object(
        bucket=source.bucket,
        key=source.key,
        version_id=head.get("VersionId") if head.get("VersionId") not in (None, "null") else None,
        etag=str(head.get("ETag", "")).strip('"') or None,
        size=int(head["ContentLength"]),
    ), dict(head.get("Metadata") or {})


def check_size(source: S3Object, max_bytes: int) -> S3Object:
    """Refuse empty and over-large objects before any cluster time is spent."""
    if not source.size:
        raise InvalidSourceError(f"{source.uri} is empty (0 bytes)")
    if source.size > max_bytes:
        raise InvalidSourceError(f"{source.uri} is {source.size} bytes, over the limit of {max_bytes}")
    return source


def head_source(s3_client: Any, source: S3Object, max_bytes: int) -> S3Object:
    """Pin the exact object version and check its size before any cluster time is spent."""
    return check_size(pin_source(s3_client, source), max_bytes)
