"""
### Video catalog backfill

**Owner:** media-platform · **Schedule:** `@daily`, catch-up capable: upscale an archived catalog
day by day with `airflow backfill create --dag-id video_catalog_backfill --from-date 2025-01-01
--to-date 2025-01-31`.

For each day `D` it takes the manifest `s3://<archive bucket>/<manifest prefix>D.json` (a list of
`s3://` URIs or of `{"source_uri": ...}`) or `D.csv` (a `source_uri` column); without one, every
video under `s3://<archive bucket>/<archive prefix>D/`. Videos already delivered (same object
version and settings) are skipped; the rest each start one `video_super_resolution` run with a
deterministic run id, at most `max_active_tis_per_dag` at once so the cluster queue is not flooded.

**Trigger form:** an archive folder *or* a manifest instead of the day's partition, the model and
scale for every video, and **Dry run**: the log and `…_catalog_reports/D.dry-run.json` list what would
run, what is skipped as already delivered, and the estimated model time (from each video's headers,
read over S3 without a download, at the calibrated `reelforge_sr_mpix_per_second`); nothing starts.

**Output:** a summary per day (done / skipped / failed with reasons) at
`s3://<output bucket>/<output prefix>_catalog_reports/D.json`, also sent to the SR SNS topic, once per
summary (receipt under `…_catalog_reports/D.announced/`).
**Rerun:** clear the day; finished videos are skipped, failed ones rerun and reuse their segments.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, Param, task

from reelforge import dag_defaults
from reelforge.operators.sns_once import SnsPublishOnceOperator
from reelforge.settings import AWS_CONN_ID, variable_template
from reelforge.sr import settings as sr

TOPIC_ARN = variable_template(sr.TOPIC_VARIABLE)
#: The day partition: the logical date (scheduled and backfill runs), else the day a form run was made.
DAY = "{{ (dag_run.logical_date or dag_run.run_after) | ds }}"
MAX_PARALLEL_VIDEOS = 4

with DAG(
    dag_id="video_catalog_backfill",
    description="Upscale an archived video catalog, one day partition per run.",
    doc_md=__doc__,
    schedule="@daily",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,  # history is processed with `airflow backfill create`, on purpose
    max_active_runs=2,
    tags=["reelforge", "super-resolution", "backfill"],
    params={
        "archive_prefix": Param(None, type=["null", "string"], title="Archive folder",
                                description="Every video under this folder of the archive bucket (e.g. "
                                "`dvd/season1/`), instead of the day's partition. Empty: the day's."),
        "manifest_uri": Param(None, type=["null", "string"], title="Manifest",
                              description="s3://bucket/key of a .json (list of URIs) or .csv (`source_uri` "
                              "column) manifest, instead of the day's. Empty: the day's."),
        "model": Param("auto", enum=["auto", "anime", "live-action"], title="Model",
                       description="For every video: auto picks anime or live action per video."),
        "scale": Param(4, enum=[2, 3, 4], title="Scale", description="For every video: output = input × scale."),
        "dry_run": Param(False, type="boolean", title="Dry run",
                         description="List what would run, what is already delivered and the estimated time; "
                         "start nothing."),
    },
    default_args=dag_defaults.default_args(
        owner="media-platform", retries=2, retry_seconds=60, max_retry_delay=timedelta(minutes=30),
        topic_variable=sr.TOPIC_VARIABLE, event="catalog_failed", title="ReelForge catalog backfill failed",
        extra={"day": f'"{DAY}"'},
    ),
) as dag:

    @task
    def plan_day(params: dict, dag_run=None) -> dict:
        """List the day's videos (or the form's selection), split into to do / delivered, with an estimate."""
        from reelforge.sr.catalog_tasks import plan_catalog_day

        return plan_catalog_day((dag_run.logical_date or dag_run.run_after).date().isoformat(), params)

    day = plan_day()

    @task
    def run_confs(day_plan: dict) -> list[dict]:
        """One SR run per video to do (none on a dry run)."""
        if day_plan.get("dry_run"):
            return []
        return [{"trigger_run_id": i["run_id"], "conf": i["conf"]} for i in day_plan["todo"]]

    upscale = TriggerDagRunOperator.partial(
        task_id="upscale_video",
        trigger_dag_id=sr.DAG_ID,
        wait_for_completion=True,
        deferrable=True,
        poke_interval=10,
        reset_dag_run=True,
        max_active_tis_per_dag=MAX_PARALLEL_VIDEOS,
    ).expand_kwargs(run_confs(day))

    @task(trigger_rule="all_done")
    def summarize_day(day_plan: dict, ti=None) -> dict:
        """done / skipped / failed for the day (or what a dry run would do), stored in S3."""
        from reelforge.sr.catalog_tasks import summarize_catalog_day, summary_receipt_uri

        summary = summarize_catalog_day(day_plan, day_plan["day"])
        return {**summary, "receipt_uri": summary_receipt_uri(day_plan["day"], ti.run_id, ti.try_number)}

    summary = summarize_day(day)
    upscale >> summary

    SnsPublishOnceOperator(  # a retry after a lost success report does not send the day's summary twice
        task_id="notify_summary",
        receipt_uri=summary["receipt_uri"],
        aws_conn_id=AWS_CONN_ID,
        target_arn=TOPIC_ARN,
        subject=f"ReelForge catalog day {DAY}",
        message=summary["message"],
        message_attributes={"event": "catalog_summary"},
        trigger_rule="all_done",
    )
