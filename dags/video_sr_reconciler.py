"""
### Video SR reconciler: no upload is ever lost or stranded

**Owner:** media-platform · **Schedule:** every 5 minutes (`REELFORGE_SR_RECONCILE_SECONDS`).
**On by default:** it is what makes a lost, late or stranded notification harmless, and the whole
ingest path where a bucket sends no notifications at all.

Every SR run records the object version it picked up in a ledger (`s3://<output bucket>/<output
prefix>_intake/`), whatever it then does. This DAG lists the ingest prefix and starts one
`video_super_resolution` run for each upload that has no ledger entry once the grace period
(`reelforge_sr_reconcile_grace_seconds`, 120 s) has passed. While the SR DAG is at
`max_active_runs`, Airflow holds uploads back on purpose: the grace is then
`reelforge_sr_reconcile_backlog_grace_seconds` (1 h), so queued uploads do not get duplicate runs.
The run id is derived from the object version (`reconcile__<digest>`), so a second pass never starts
a second run, and the SR job claim still decides which run does the work if a notification's run
shows up late.

| step | what |
|---|---|
| `find_unhandled` | list uploads since the watermark (less 12 h of overlap for long multipart uploads, |
| | `reelforge_sr_reconcile_overlap_seconds`); keep those without a ledger entry |
| `start_sr_run` | one run each, `conf = {"source_uri": ...}` (no-op if the run exists) |
| `commit_watermark` | advance `reelforge_sr_reconcile_watermark` once every run exists |

**Rescan:** delete the Variable `reelforge_sr_reconcile_watermark`; the next pass checks the overlap again.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, task

from reelforge import dag_defaults
from reelforge.sr import settings as sr

with DAG(
    dag_id="video_sr_reconciler",
    description="Start an SR run for every upload that no notification's run picked up.",
    doc_md=__doc__,
    schedule=sr.reconcile_interval(),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    is_paused_upon_creation=False,
    dagrun_timeout=timedelta(minutes=30),
    tags=["reelforge", "super-resolution"],
    default_args=dag_defaults.default_args(
        owner="media-platform", retries=2, retry_seconds=30, max_retry_delay=timedelta(minutes=5),
        topic_variable=sr.TOPIC_VARIABLE, event="sr_reconcile_failed", title="ReelForge SR reconciler failed",
    ),
) as dag:

    @task
    def find_unhandled(ti=None) -> list[dict]:
        """Uploads without a ledger entry, as trigger kwargs; the watermark to commit goes to XCom."""
        from reelforge.sr.watch import reconcile_pass

        found = reconcile_pass(ti.get_dr_count(dag_id=sr.DAG_ID, states=["queued", "running"]))
        ti.xcom_push(key="watermark", value=found["watermark"])
        return found["runs"]

    runs = find_unhandled()

    start_sr_run = TriggerDagRunOperator.partial(
        task_id="start_sr_run",
        trigger_dag_id=sr.DAG_ID,
        skip_when_already_exists=True,
        max_active_tis_per_dag=8,
    ).expand_kwargs(runs)

    @task(trigger_rule="none_failed")
    def commit_watermark(ti=None) -> None:
        """Advance the watermark only when every run of this pass exists."""
        from reelforge.sr.watch import commit_watermark as commit

        commit(ti.xcom_pull(task_ids="find_unhandled", key="watermark"))

    start_sr_run >> commit_watermark()
