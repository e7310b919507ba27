"""The SR reconciler's pass: uploads under the ingest prefix that no run picked up get a run of their own."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from typing import Any

from reelforge import upload_watch
from reelforge.intake import Ledger, Window, parse_watermark, reconcile_run_id, unhandled_uploads
from reelforge.settings import AWS_CONN_ID, setting
from reelforge.sr.settings import MAX_ACTIVE_RUNS, SRSettings, sr_settings
from reelforge.storage import InvalidSourceError, S3Object, source_extension, subfolder, validate_key

log = logging.getLogger(__name__)
WATERMARK_VARIABLE = "reelforge_sr_reconcile_watermark"
BUSY_VARIABLE = "reelforge_sr_reconcile_busy_at"


def sr_ledger(settings: SRSettings) -> Ledger:
    """Beside the claims: ``s3://<output bucket>/<output prefix>_intake/``."""
    return Ledger(settings.output_bucket, subfolder(settings.output_prefix, "_intake"))


def refusal(obj: S3Object) -> str | None:
    """Why prepare would refuse this key outright (it then never records it), else ``None``."""
    try:
        validate_key(obj.key)
        source_extension(obj.key)
    except InvalidSourceError as err:
        return str(err)
    return None


def grace_period(settings: SRSettings, *, active_runs: int, busy_at: datetime | None, now: datetime) -> timedelta:
    """How old an upload without a ledger entry must be before the reconciler starts its run.

    While the SR DAG is at ``max_active_runs`` (and for one grace period after), Airflow holds the
    uploads' asset events back on purpose, so an upload's age says nothing: the backlog grace
    applies instead, and a notification's run is not raced by a duplicate that would only skip at
    the claim. Events stranded under a steady backlog are still recovered after the backlog grace.
    """
    return upload_watch.grace_period(grace=timedelta(seconds=settings.reconcile_grace_seconds),
                                     backlog_grace=timedelta(seconds=settings.reconcile_backlog_grace_seconds),
                                     active_runs=active_runs, max_active_runs=MAX_ACTIVE_RUNS,
                                     busy_at=busy_at, now=now)


def find_unhandled(s3_client: Any, settings: SRSettings, watermark: datetime | None,
                   now: datetime | None = None, grace: timedelta | None = None,
                   ) -> tuple[list[dict[str, Any]], datetime]:
    """Trigger kwargs (one ``{"trigger_run_id", "conf"}`` per unhandled upload) and the next watermark."""
    window = Window.after(watermark, now=now or datetime.now(UTC),
                          grace=grace or timedelta(seconds=settings.reconcile_grace_seconds),
                          overlap=timedelta(seconds=settings.reconcile_overlap_seconds))
    lost = unhandled_uploads(s3_client, bucket=settings.ingest_bucket, prefix=settings.ingest_prefix,
                             ledger=sr_ledger(settings), window=window, accept=refusal)
    for obj in lost:
        log.warning("no run picked up %s (ETag %s): starting %s", obj.uri, obj.etag, reconcile_run_id(obj))
    log.info("checked uploads in [%s, %s): %d without a run", window.start.isoformat(), window.end.isoformat(),
             len(lost))
    kwargs = [{"trigger_run_id": reconcile_run_id(obj), "conf": {"source_uri": obj.uri}} for obj in lost]
    return kwargs, window.end


def reconcile_pass(active_runs: int) -> dict[str, Any]:
    """Task body: list, compare with the ledger, and return what to trigger plus the watermark to commit.

    ``active_runs``: the SR DAG's queued and running runs now (a backlog lengthens the grace).
    """
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from airflow.sdk import Variable

    settings = sr_settings()
    now = datetime.now(UTC)
    busy_at = parse_watermark(setting(BUSY_VARIABLE, ""))
    if active_runs >= MAX_ACTIVE_RUNS:
        Variable.set(BUSY_VARIABLE, now.isoformat())
    grace = grace_period(settings, active_runs=active_runs, busy_at=busy_at, now=now)
    log.info("%d SR runs queued or running (max %d): grace %s", active_runs, MAX_ACTIVE_RUNS, grace)
    watermark = parse_watermark(setting(WATERMARK_VARIABLE, ""))
    runs, next_mark = find_unhandled(S3Hook(aws_conn_id=AWS_CONN_ID).get_conn(), settings, watermark,
                                     now=now, grace=grace)
    return {"runs": runs, "watermark": next_mark.isoformat()}


def commit_watermark(value: str) -> None:
    """Advance the watermark once every run of the pass exists (never moves it back)."""
    upload_watch.commit_watermark(WATERMARK_VARIABLE, value)
