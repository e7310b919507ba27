"""Uploads that start a workflow with or without S3 notifications: a reconciler pass and a per-upload claim.

The SR ingest path (``intake.py``, ``sr/watch.py``), generalised for workflows whose upload is one
object version (a ``_READY`` marker, a ``.zip``, a manifest); each workflow's ``watch.py`` describes its own.

* The first task of every run (``claim_upload``) records the upload version it picked up in the
  workflow's intake ledger and claims it with an S3 conditional write (``If-None-Match: *``) keyed by
  the version: a notification's run and a reconciler's run of the same upload never both do the work.
* A scheduled reconciler lists the watched prefix (latest versions, with their ids) and starts one run
  for every upload in its window that has no ledger entry after the grace period. The run id is derived
  from the version (``reconcile__<digest>``), so a second pass asks for the same run, which is a no-op.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from reelforge.intake import Ledger, Window, parse_watermark, reconcile_run_id, unhandled_uploads, upload_digest
from reelforge.storage import InvalidSourceError, S3Object, parse_s3_uri, subfolder, validate_key

log = logging.getLogger(__name__)
#: The key of a run's conf that names the upload version a reconciler started it for.
UPLOAD_CONF_KEY = "reelforge_upload"
CONFLICT_CODES = frozenset({"PreconditionFailed", "ConditionalRequestConflict"})
ConfFor = Callable[[S3Object], "dict[str, Any] | None"]


@dataclass(frozen=True)
class WatchConfig:
    """One workflow's watched prefix, where its ledger and claims live, and what counts as an upload.

    ``conf_for`` maps an object to the conf of the run it starts (the form's fields), or ``None`` when the
    object is not an upload of this workflow (an image of a dataset folder, a marker outside a set).
    """

    what: str
    ingest_bucket: str
    ingest_prefix: str
    state_bucket: str
    state_prefix: str
    conf_for: ConfFor
    grace: timedelta = timedelta(minutes=2)
    overlap: timedelta = timedelta(hours=12)
    backlog_grace: timedelta = timedelta(hours=1)

    @property
    def ledger(self) -> Ledger:
        """``s3://<state bucket>/<state prefix>_intake/<digest>.json``, one per upload version picked up."""
        return Ledger(self.state_bucket, subfolder(self.state_prefix, "_intake"), digest=upload_digest, by_listing=True)

    def claim_key(self, obj: S3Object) -> str:
        return f"{subfolder(self.state_prefix, '_claims')}{upload_digest(obj)}.json"

    def receipt_uri(self, run_id: str) -> str:
        """Where a run records that it sent its success message (``SnsPublishOnceOperator``); run ids match
        ``[A-Za-z0-9_.~:+-]+``, safe in a key."""
        return f"s3://{self.state_bucket}/{subfolder(self.state_prefix, '_announced')}{run_id}.json"


@dataclass(frozen=True)
class UploadWatch:
    """A workflow fed by uploads: its DAG, the Variables' stem (``reelforge_<name>_reconcile_*``), its config.

    ``tag`` and ``topic_variable`` are the workflow's DAG tag and SNS topic Variable, which its reconciler
    DAG carries too.
    """

    name: str
    dag_id: str
    max_active_runs: int
    config: Callable[[], WatchConfig]
    tag: str
    topic_variable: str

    def variable(self, what: str) -> str:
        return f"reelforge_{self.name}_reconcile_{what}"


def reconcile_interval() -> timedelta:
    """How often the training workflows' reconcilers list their prefixes (parse time, env).

    ``REELFORGE_UPLOAD_RECONCILE_SECONDS``, default 300: an upload without a notification starts its run
    within this period plus the grace period.
    """
    return timedelta(seconds=int(os.environ.get("REELFORGE_UPLOAD_RECONCILE_SECONDS", 300)))


def timings(name: str) -> dict[str, timedelta]:
    """The pass's grace, overlap and backlog grace: Variables ``reelforge_<name>_reconcile_*_seconds``."""
    from reelforge.settings import setting

    def seconds(what: str, default: int) -> timedelta:
        return timedelta(seconds=int(setting(f"reelforge_{name}_reconcile_{what}_seconds", str(default))))

    return {"grace": seconds("grace", 120), "overlap": seconds("overlap", 12 * 3600),
            "backlog_grace": seconds("backlog_grace", 3600)}


def upload_conf(obj: S3Object) -> dict[str, Any]:
    return {"uri": obj.uri, "version_id": obj.version_id, "etag": obj.etag}


def upload_from_conf(conf: Mapping[str, Any] | None) -> S3Object | None:
    """The upload a reconciler's run was started for (``conf["reelforge_upload"]``), else ``None``."""
    named = (conf or {}).get(UPLOAD_CONF_KEY)
    if not named:
        return None
    obj = parse_s3_uri(str(named["uri"]))
    return S3Object(obj.bucket, obj.key, version_id=named.get("version_id") or None, etag=named.get("etag") or None)


def run_conf(config: WatchConfig, obj: S3Object) -> dict[str, Any] | None:
    """The conf of the run an upload starts: the workflow's fields plus the version (what ``claim_upload`` reads)."""
    conf = config.conf_for(obj)
    return None if conf is None else {**conf, UPLOAD_CONF_KEY: upload_conf(obj)}


def refusal(config: WatchConfig, obj: S3Object) -> str | None:
    """Why the reconciler leaves ``obj`` alone (not an upload, or a key no run accepts), else ``None``."""
    try:
        validate_key(obj.key)
    except InvalidSourceError as err:
        return str(err)
    return None if config.conf_for(obj) is not None else f"not {config.what}"


def first_upload(config: WatchConfig, events: Mapping[Any, Iterable[Any]] | None) -> S3Object | None:
    """The upload a notification's run works on: the first object its events name that is an upload.

    The same rule as the workflow's own first task, which reads the same events in the same order.
    """
    from reelforge.uploads import sources_from_asset_events

    return next((obj for obj in sources_from_asset_events(events) if config.conf_for(obj) is not None), None)


def claim(s3_client: Any, config: WatchConfig, obj: S3Object, run_id: str) -> str:
    """Claim the upload version for ``run_id`` (conditional write); returns the run holding the claim."""
    key = config.claim_key(obj)
    body = json.dumps({**upload_conf(obj), "run_id": run_id, "at": datetime.now(UTC).isoformat(timespec="seconds")})
    try:
        s3_client.put_object(Bucket=config.state_bucket, Key=key, Body=body.encode(),
                             ContentType="application/json", IfNoneMatch="*")
        return run_id
    except s3_client.exceptions.ClientError as err:
        if err.response.get("Error", {}).get("Code") not in CONFLICT_CODES:
            raise
    return json.loads(s3_client.get_object(Bucket=config.state_bucket, Key=key)["Body"].read())["run_id"]


def claim_upload(watch: UploadWatch, *, run_id: str, conf: Mapping[str, Any] | None,
                 events: Mapping[Any, Iterable[Any]] | None, s3_client: Any = None) -> dict[str, Any] | None:
    """Task body: record this run's upload in the ledger and claim it; a run whose upload another run holds skips.

    A form run names no upload (``None``: nothing to claim). A retry or a cleared run keeps its run id,
    so it finds its own claim and goes on.
    """
    config = watch.config()
    obj = upload_from_conf(conf) or first_upload(config, events)
    if obj is None:
        log.info("no upload to claim: the run was started from the form, or its notification names no %s",
                 config.what)
        return None
    if s3_client is None:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        from reelforge.settings import AWS_CONN_ID

        s3_client = S3Hook(aws_conn_id=AWS_CONN_ID).get_conn()
    if not obj.version_id and not obj.etag:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(f"{obj.uri}: the run names neither a version id nor an ETag of its upload")
    config.ledger.record(s3_client, obj, run_id)
    holder = claim(s3_client, config, obj, run_id)
    if holder != run_id:
        from airflow.sdk.exceptions import AirflowSkipException

        raise AirflowSkipException(f"{obj.uri} (version {obj.version_id or obj.etag}) is claimed by run {holder}: "
                                   "that run does the work, this one stops here")
    log.info("run %s claimed %s (version %s, ETag %s)", run_id, obj.uri, obj.version_id, obj.etag)
    return {**upload_conf(obj), "claim": f"s3://{config.state_bucket}/{config.claim_key(obj)}"}


def grace_period(*, grace: timedelta, backlog_grace: timedelta, active_runs: int, max_active_runs: int,
                 busy_at: datetime | None, now: datetime) -> timedelta:
    """How old an unrecorded upload must be before the reconciler starts its run.

    While the workflow's DAG is at ``max_active_runs`` (and for one grace period after), Airflow holds the
    uploads' asset events back on purpose, so an upload's age says nothing: the backlog grace applies.
    """
    busy = active_runs >= max_active_runs or (busy_at is not None and now - busy_at < grace)
    return max(grace, backlog_grace) if busy else grace


def find_unhandled(s3_client: Any, config: WatchConfig, watermark: datetime | None, *, now: datetime,
                   grace: timedelta) -> tuple[list[dict[str, Any]], datetime]:
    """Trigger kwargs (one ``{"trigger_run_id", "conf"}`` per unrecorded upload) and the next watermark."""
    window = Window.after(watermark, now=now, grace=grace, overlap=config.overlap)
    lost = unhandled_uploads(s3_client, bucket=config.ingest_bucket, prefix=config.ingest_prefix,
                             ledger=config.ledger, window=window, accept=lambda obj: refusal(config, obj),
                             versions=True)
    runs = []
    for obj in lost:
        run_id = reconcile_run_id(obj, upload_digest)
        log.warning("no run picked up %s (version %s): starting %s", obj.uri, obj.version_id or obj.etag, run_id)
        runs.append({"trigger_run_id": run_id, "conf": run_conf(config, obj)})
    log.info("checked uploads in [%s, %s) under s3://%s/%s: %d without a run", window.start.isoformat(),
             window.end.isoformat(), config.ingest_bucket, config.ingest_prefix, len(runs))
    return runs, window.end


def reconcile_pass(watch: UploadWatch, active_runs: int) -> dict[str, Any]:
    """Task body: the runs to start and the watermark to commit once they exist.

    ``active_runs``: the workflow DAG's queued and running runs now (a backlog lengthens the grace).
    """
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook
    from airflow.sdk import Variable

    from reelforge.settings import AWS_CONN_ID, setting

    config = watch.config()
    now = datetime.now(UTC)
    busy_at = parse_watermark(setting(watch.variable("busy_at"), ""))
    if active_runs >= watch.max_active_runs:
        Variable.set(watch.variable("busy_at"), now.isoformat())
    grace = grace_period(grace=config.grace, backlog_grace=config.backlog_grace, active_runs=active_runs,
                         max_active_runs=watch.max_active_runs, busy_at=busy_at, now=now)
    log.info("%s: %d runs queued or running (max %d): grace %s", watch.dag_id, active_runs, watch.max_active_runs,
             grace)
    watermark = parse_watermark(setting(watch.variable("watermark"), ""))
    runs, next_mark = find_unhandled(S3Hook(aws_conn_id=AWS_CONN_ID).get_conn(), config, watermark, now=now,
                                     grace=grace)
    return {"runs": runs, "watermark": next_mark.isoformat()}


def commit_watermark(variable: str, value: str | None) -> None:
    """Advance the watermark Variable once every run of the pass exists (never moves it back)."""
    from airflow.sdk import Variable

    from reelforge.settings import setting

    new = parse_watermark(value)
    old = parse_watermark(setting(variable, ""))
    if new and (old is None or new > old):
        Variable.set(variable, new.isoformat())
        log.info("%s: %s → %s", variable, old, new)


def claim_upload_task(watch: UploadWatch) -> Any:
    """The ``claim_upload`` task every workflow fed by uploads starts with (TaskFlow; call it in the DAG)."""
    from airflow.sdk import task

    @task(task_id="claim_upload")
    def claim_upload_(dag_run=None, triggering_asset_events=None) -> dict[str, Any] | None:
        """Record the upload version this run picked up in the intake ledger and claim it; a duplicate run skips."""
        return claim_upload(watch, run_id=dag_run.run_id, conf=dag_run.conf, events=triggering_asset_events)

    return claim_upload_
