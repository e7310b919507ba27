"""Task bodies of the catalog backfill DAG."""

from __future__ import annotations

import json
import logging
from typing import Any

from reelforge.settings import AWS_CONN_ID, setting
from reelforge.sr.catalog import CATALOG_PARAMS, list_day, list_videos, plan_day, read_manifest, summarize
from reelforge.sr.settings import DAG_ID, sr_mpix_per_second, sr_settings
from reelforge.storage import InvalidSourceError, S3Object, subfolder

log = logging.getLogger(__name__)


def _s3() -> Any:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=AWS_CONN_ID).get_conn()


def _estimator(s3: Any) -> Any:
    """Model seconds of one video from its headers (ffprobe over S3, no download) at the calibrated rate."""
    from reelforge.sr.preflight import PreflightUnavailable, preflight

    rate = sr_mpix_per_second()

    def estimate(source: S3Object) -> float | None:
        try:
            found = preflight(s3, source, timeout=60)
        except (InvalidSourceError, PreflightUnavailable) as err:
            log.warning("no estimate for %s: %s", source.uri, err)
            return None
        return None if found is None else found.model_seconds(rate)

    return estimate


def plan_catalog_day(day: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
    """The day's videos (or the form's folder or manifest), split into to do / delivered / invalid, estimated.

    Form fields (all optional): ``archive_prefix`` (every video under it), ``manifest_uri`` (a manifest
    object), ``model`` and ``scale`` (for every video), ``dry_run`` (list only: no run is started).
    """
    from airflow.sdk.exceptions import AirflowFailException

    params = params or {}
    settings = sr_settings()
    s3 = _s3()
    bucket = setting("reelforge_backfill_archive_bucket", settings.ingest_bucket)
    prefix, manifest = (params.get("archive_prefix") or "").strip(), (params.get("manifest_uri") or "").strip()
    try:
        if prefix and manifest:
            raise InvalidSourceError("give an archive folder or a manifest, not both")
        if manifest:
            sources, selection = read_manifest(s3, manifest), manifest
        elif prefix:
            sources, selection = list_videos(s3, bucket, prefix), f"s3://{bucket}/{prefix}"
    except InvalidSourceError as err:  # the form's selection: retrying cannot help
        raise AirflowFailException(f"invalid selection: {err}") from err
    if not (prefix or manifest):
        sources = list_day(s3, bucket=bucket, archive_prefix=setting("reelforge_backfill_archive_prefix", "archive/"),
                           manifest_prefix=setting("reelforge_backfill_manifest_prefix", "manifests/"), day=day)
        selection = f"day {day}"
    run_params = {**CATALOG_PARAMS, **{k: params[k] for k in ("model", "scale") if params.get(k) is not None}}
    result = plan_day(s3, sources, settings, day, run_params, estimate=_estimator(s3))
    result |= {"day": day, "selection": selection, "dry_run": bool(params.get("dry_run"))}
    est = result["estimate"]
    log.info("%s (%s): %d videos to do, %d already delivered, %d invalid; estimated model time %.0f s at %.2f Mpx/s "
             "(%d without an estimate)%s", day, selection, len(result["todo"]), len(result["skipped"]),
             len(result["invalid"]), est["model_seconds"], sr_mpix_per_second(), est["unknown"],
             ": DRY RUN, nothing will be started" if result["dry_run"] else "")
    for item in result["todo"]:
        log.info("would run: %s → %s (%s s)" if result["dry_run"] else "to run: %s → %s (%s s)", item["source"],
                 item["output"], item["model_seconds"])
    for item in result["skipped"]:
        log.info("already delivered: %s → %s", item["source"], item["output"])
    return result


def _reports_folder(output_prefix: str) -> str:
    """``<output prefix>_catalog_reports/``: the day reports and their send receipts."""
    return subfolder(output_prefix, "_catalog_reports")


def _dry_run_report(day_plan: dict[str, Any], day: str) -> dict[str, Any]:
    settings = sr_settings()
    key = f"{_reports_folder(settings.output_prefix)}{day}.dry-run.json"
    report = {k: day_plan[k] for k in ("selection", "todo", "skipped", "invalid", "estimate")}
    report["counts"] = {"would_run": len(day_plan["todo"]), "skipped": len(day_plan["skipped"]),
                        "invalid": len(day_plan["invalid"])}
    _s3().put_object(Bucket=settings.output_bucket, Key=key, Body=json.dumps(report, indent=2).encode(),
                     ContentType="application/json")
    uri = f"s3://{settings.output_bucket}/{key}"
    return {**report, "report": uri, "message": json.dumps({
        "event": "catalog_dry_run", "day": day, "selection": day_plan["selection"], **report["counts"],
        "estimated_model_seconds": day_plan["estimate"]["model_seconds"], "report": uri})}


def summarize_catalog_day(day_plan: dict[str, Any], day: str) -> dict[str, Any]:
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    if day_plan.get("dry_run"):
        return _dry_run_report(day_plan, day)
    states: dict[str, str] = {}
    failed_tasks: dict[str, list[str]] = {}
    for item in day_plan["todo"]:
        try:
            state = RuntimeTaskInstance.get_dagrun_state(DAG_ID, item["run_id"])
            # A DagRunState enum: its value ("success"), not str() ("DagRunState.SUCCESS" on Python 3.11).
            states[item["run_id"]] = getattr(state, "value", state)
        except Exception as err:  # noqa: BLE001 - a run that never started has no state
            log.warning("no state for %s: %s", item["run_id"], err)
            continue
        if states[item["run_id"]] != "success":
            tis = RuntimeTaskInstance.get_task_states(dag_id=DAG_ID, run_ids=[item["run_id"]])
            failed_tasks[item["run_id"]] = sorted(
                t for t, s in tis.get(item["run_id"], {}).items() if s in {"failed", "upstream_failed"}
            )
    summary = summarize(day_plan, states, failed_tasks)
    settings = sr_settings()
    key = f"{_reports_folder(settings.output_prefix)}{day}.json"
    _s3().put_object(Bucket=settings.output_bucket, Key=key, Body=json.dumps(summary, indent=2).encode(),
                     ContentType="application/json")
    log.info("%s: %s (report s3://%s/%s)", day, summary["counts"], settings.output_bucket, key)
    return {**summary, "report": f"s3://{settings.output_bucket}/{key}",
            "message": json.dumps({"event": "catalog_summary", "day": day, **summary["counts"],
                                   "estimated_model_seconds": (day_plan.get("estimate") or {}).get("model_seconds"),
                                   "report": f"s3://{settings.output_bucket}/{key}"})}


def summary_receipt_uri(day: str, run_id: str, summary_try: int) -> str:
    """Where the day's summary message records that it was sent (``SnsPublishOnceOperator``).

    Named after the try of the summary it sends: a retry of the publish does not send the same summary
    twice, and a cleared day (a new summary) sends its own.
    """
    settings = sr_settings()
    folder = subfolder(_reports_folder(settings.output_prefix), f"{day}.announced")
    return f"s3://{settings.output_bucket}/{folder}{run_id}.{summary_try}.json"
