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

**Output:** a summary per day (done / skipped / failed with reasons) at
`s3://<output bucket>/<output prefix>_catalog_reports/D.json`, also sent to the SR SNS topic.
**Rerun:** clear the day; finished videos are skipped, failed ones rerun and reuse their segments.
"""

from __future__ import annotations

import pendulum
from airflow.providers.amazon.aws.notifications.sns import SnsNotifier
from airflow.providers.amazon.aws.operators.sns import SnsPublishOperator
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, task

from reelforge.settings import AWS_CONN_ID, SR_DAG_ID, SR_TOPIC_VARIABLE, retry_delay, variable_template

TOPIC_ARN = variable_template(SR_TOPIC_VARIABLE)
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
    default_args={
        "owner": "media-platform",
        "retries": 2,
        "retry_delay": retry_delay(60),
        "retry_exponential_backoff": True,
        "on_failure_callback": SnsNotifier(
            aws_conn_id=AWS_CONN_ID,
            target_arn=TOPIC_ARN,
            subject="ReelForge catalog backfill failed: {{ ds }}",
            message='{"event": "catalog_failed", "day": "{{ ds }}", "task_id": "{{ ti.task_id }}"}',
        ),
    },
) as dag:

    @task
    def plan_day(ds: str) -> dict:
        """List the day's videos and split them into work to do and already delivered."""
        from reelforge.sr.catalog_tasks import plan_catalog_day

        return plan_catalog_day(ds)

    day = plan_day()

    @task
    def run_confs(day_plan: dict) -> list[dict]:
        return [{"trigger_run_id": i["run_id"], "conf": i["conf"]} for i in day_plan["todo"]]

    upscale = TriggerDagRunOperator.partial(
        task_id="upscale_video",
        trigger_dag_id=SR_DAG_ID,
        wait_for_completion=True,
        deferrable=True,
        poke_interval=10,
        reset_dag_run=True,
        max_active_tis_per_dag=MAX_PARALLEL_VIDEOS,
    ).expand_kwargs(run_confs(day))

    @task(trigger_rule="all_done")
    def summarize_day(day_plan: dict, ds: str) -> dict:
        """done / skipped / failed for the day, stored in S3."""
        from reelforge.sr.catalog_tasks import summarize_catalog_day

        return summarize_catalog_day(day_plan, ds)

    summary = summarize_day(day)
    upscale >> summary

    SnsPublishOperator(
        task_id="notify_summary",
        aws_conn_id=AWS_CONN_ID,
        target_arn=TOPIC_ARN,
        subject="ReelForge catalog day {{ ds }}",
        message=summary["message"],
        message_attributes={"event": "catalog_summary"},
        trigger_rule="all_done",
    )
