"""
### Video SR ingest poller (for buckets without S3 notifications)

**Owner:** media-platform · **Schedule:** every 10 minutes. Where the ingest bucket cannot send
S3 event notifications to SQS, this DAG waits (deferrable `S3KeySensor`, no worker slot held) for
objects under the ingest prefix, lists those modified in the data interval and starts one
`video_super_resolution` run per video with its `source_uri`. Duplicates are harmless: the SR DAG
claims each object version once. With notifications configured, leave this DAG paused.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.amazon.aws.sensors.s3 import S3KeySensor
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, task

from reelforge.settings import AWS_CONN_ID

INGEST_BUCKET = "{{ var.value.get('reelforge_sr_ingest_bucket', 'reelforge-ingest') }}"
INGEST_PREFIX = "{{ var.value.get('reelforge_sr_ingest_prefix', 'sr/incoming/') }}"

with DAG(
    dag_id="video_sr_ingest_poller",
    description="Start SR runs for new uploads by polling S3 (no notifications needed).",
    doc_md=__doc__,
    schedule=timedelta(minutes=10),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=True,
    tags=["reelforge", "super-resolution"],
    default_args={"owner": "media-platform", "retries": 2, "retry_delay": timedelta(minutes=1)},
) as dag:
    wait_for_uploads = S3KeySensor(
        task_id="wait_for_uploads",
        aws_conn_id=AWS_CONN_ID,
        bucket_name=INGEST_BUCKET,
        bucket_key=INGEST_PREFIX + "*",
        wildcard_match=True,
        deferrable=True,
        poke_interval=30,
        timeout=timedelta(minutes=9).total_seconds(),
        soft_fail=True,  # nothing uploaded: the run ends skipped, not failed
    )

    @task
    def new_uploads(data_interval_start=None, data_interval_end=None) -> list[dict]:
        """Videos modified in this run's data interval, as trigger kwargs."""
        from reelforge.sr.poller import uploads_between

        return uploads_between(data_interval_start, data_interval_end)

    uploads = new_uploads()
    wait_for_uploads >> uploads

    TriggerDagRunOperator.partial(
        task_id="start_sr_run",
        trigger_dag_id="video_super_resolution",
        skip_when_already_exists=True,
        max_active_tis_per_dag=8,
    ).expand_kwargs(uploads)
