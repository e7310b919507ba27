"""Task bodies of the catalog backfill DAG."""

from __future__ import annotations

import json
import logging
from typing import Any

from reelforge.settings import AWS_CONN_ID, SR_DAG_ID, setting, sr_settings
from reelforge.sr.catalog import list_day, plan_day, summarize

log = logging.getLogger(__name__)


def _s3() -> Any:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=AWS_CONN_ID).get_conn()


def plan_catalog_day(day: str) -> dict[str, Any]:
    settings = sr_settings()
    s3 = _s3()
    sources = list_day(
        s3,
        bucket=setting("reelforge_backfill_archive_bucket", settings.ingest_bucket),
        archive_prefix=setting("reelforge_backfill_archive_prefix", "archive/"),
        manifest_prefix=setting("reelforge_backfill_manifest_prefix", "manifests/"),
        day=day,
    )
    result = plan_day(s3, sources, settings, day)
    log.info("%s: %d videos to do, %d already done, %d invalid", day,
             len(result["todo"]), len(result["skipped"]), len(result["invalid"]))
    return result


def summarize_catalog_day(day_plan: dict[str, Any], day: str) -> dict[str, Any]:
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    states: dict[str, str] = {}
    failed_tasks: dict[str, list[str]] = {}
    for item in day_plan["todo"]:
        try:
            state = RuntimeTaskInstance.get_dagrun_state(SR_DAG_ID, item["run_id"])
            # A DagRunState enum: its value ("success"), not str() ("DagRunState.SUCCESS" on Python 3.11).
            states[item["run_id"]] = getattr(state, "value", state)
        except Exception as err:  # noqa: BLE001 - a run that never started has no state
            log.warning("no state for %s: %s", item["run_id"], err)
            continue
        if states[item["run_id"]] != "success":
            tis = RuntimeTaskInstance.get_task_states(dag_id=SR_DAG_ID, run_ids=[item["run_id"]])
            failed_tasks[item["run_id"]] = sorted(
                t for t, s in tis.get(item["run_id"], {}).items() if s in {"failed", "upstream_failed"}
            )
    summary = summarize(day_plan, states, failed_tasks)
    settings = sr_settings()
    key = f"{settings.output_prefix.rstrip('/')}/_catalog_reports/{day}.json"
    _s3().put_object(Bucket=settings.output_bucket, Key=key, Body=json.dumps(summary, indent=2).encode(),
                     ContentType="application/json")
    log.info("%s: %s (report s3://%s/%s)", day, summary["counts"], settings.output_bucket, key)
    return {**summary, "report": f"s3://{settings.output_bucket}/{key}",
            "message": json.dumps({"event": "catalog_summary", "day": day, **summary["counts"],
                                   "report": f"s3://{settings.output_bucket}/{key}"})}
