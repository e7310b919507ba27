"""
### StyleGAN2 weekly batch generation

**Owner:** ml-platform · **Schedule:** `@weekly` (Sunday 00:00 UTC), one run per week-long data
interval, with catch-up: missed weeks run in order. **Runs on:** a SageMaker processing job with the
StyleGAN2 container's `generate` entry (TorchScript generator, no training code).

| step | where | what |
|---|---|---|
| `plan_interval` | Airflow | model version, the interval's inputs (an S3 manifest), job request |
| `generate_batch` | SageMaker processing | requests → images; images → projected into W; contact sheets |
| `record_batch` | Airflow | `batch.json` beside the outputs; SNS message with the links |

**Inputs:** objects uploaded under `s3://<batch input bucket>/<batch input prefix>` (default
`reelforge-ingest/stylegan2/batch/incoming/`) with `LastModified` in the data interval. **Outputs:**
`s3://<output>/stylegan2/weekly/interval_start=<YYYY-MM-DD>/` — `requests/`, `projections/`,
`contact_sheet.png`, `manifest.json`, `batch.json`.

**Idempotent per interval:** the job name hashes the interval start, the model version and the
inputs; a re-run with the same ones finds the completed job and only re-records it. With new inputs
(late uploads) a new job replaces the prefix's content. A week without inputs or without an approved
model is skipped. **Rerun:** clear the run of that week. Failures and missed deadlines are published
on the StyleGAN2 SNS topic.

The model is the newest approved version of the group created before the interval's end (a catch-up
run for an old week uses the model current then). A request is a `*.json` file such as
`{"seeds": "0-15", "truncation": 0.7}`; any image uploaded is projected into the generator's W space.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, CronDataIntervalTimetable, task

from reelforge import dag_defaults
from reelforge.deadlines import deadline_alert
from reelforge.operators.sagemaker_reattach import ReattachingProcessingOperator
from reelforge.settings import AWS_CONN_ID
from reelforge.stylegan2.settings import TOPIC_VARIABLE, deadline_interval

DAG_ID = "stylegan2_weekly_batch"

default_args = dag_defaults.default_args(
    owner="ml-platform", retries=2, retry_seconds=120, max_retry_delay=timedelta(minutes=30),
    topic_variable=TOPIC_VARIABLE, event="stylegan2_batch_failed", title="ReelForge StyleGAN2 weekly batch failed",
    extra={"interval_start": '"{{ data_interval_start }}"'},
)


def build_dag(*, with_deadline: bool = True) -> DAG:
    """The DAG; ``with_deadline=False`` only for ``airflow dags test``.

    ``airflow dags test`` cannot evaluate deadline alerts and exits 1 for a DAG that declares one; the
    tests check that this module's DAG declares it and run ``dags test`` on this otherwise identical
    variant (see ``stylegan2_training.build_dag``).
    """
    with DAG(
        dag_id=DAG_ID,
        description="Weekly batch generation with the latest approved StyleGAN2 model version.",
        doc_md=__doc__,
        schedule=CronDataIntervalTimetable("@weekly", timezone="UTC"),
        start_date=pendulum.datetime(2026, 1, 4, tz="UTC"),
        catchup=True,
        max_active_runs=2,
        tags=["reelforge", "stylegan2"],
        default_args=default_args,
        deadline=deadline_alert(
            "stylegan2-weekly", interval=deadline_interval("weekly", default_minutes=12 * 60),
            topic_variable=TOPIC_VARIABLE,
        ) if with_deadline else None,
    ) as dag:

        @task
        def plan_interval(data_interval_start=None, data_interval_end=None, run_id=None) -> dict:
            """The model version, the interval's inputs (as an S3 manifest) and the batch job request."""
            from reelforge.stylegan2.weekly_tasks import plan_interval as plan

            return plan(start=data_interval_start, end=data_interval_end, run_id=run_id)

        planned = plan_interval()

        generate_batch = ReattachingProcessingOperator(
            task_id="generate_batch",
            aws_conn_id=AWS_CONN_ID,
            config=planned["config"],
            deferrable=True,
            check_interval=60,
        )

        @task(
            on_success_callback=dag_defaults.success_notifier(
                topic_variable=TOPIC_VARIABLE, event="stylegan2_batch_succeeded", message_from="record_batch",
                subject="ReelForge StyleGAN2 weekly batch ready: {{ data_interval_start | ds }}"),
        )
        def record_batch(plan: dict, result: dict, dag=None, run_id=None) -> str:
            """``batch.json`` beside the outputs; the success message."""
            from reelforge.stylegan2.weekly_tasks import record_batch as record

            return record(plan=plan, result=result, dag_id=dag.dag_id, run_id=run_id)

        record_batch(planned, generate_batch.output)
    return dag


dag = build_dag()
