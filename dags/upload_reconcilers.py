"""
### Upload reconcilers: StyleGAN2, avatar and AnimateAnyone start from a plain S3 upload

**Owner:** ml-platform · **Schedule:** every 5 minutes (`REELFORGE_UPLOAD_RECONCILE_SECONDS`).
**On by default:** where a bucket sends no S3 notifications (no `*_QUEUE_URL` set), this DAG is the
workflow's upload trigger; where it does, it starts a run for any upload whose notification was lost,
late or stranded.

| DAG `<name>_upload_reconciler` | watched prefix: Variables (defaults) | an upload is | conf |
|---|---|---|---|
| `stylegan2` | `reelforge_stylegan2_dataset_bucket`/`_prefix` | a `.zip`, a `_READY` | `dataset_uri` |
| | (`reelforge-ingest`/`stylegan2/datasets/`) | | |
| `avatar` | `reelforge_avatar_ingest_bucket`/`_prefix` | `<user>/<set>/_READY` | `user_id`, `selfies_uri` |
| `animate_anyone` | `reelforge_animate_anyone_manifest_bucket`/`_prefix` | any object | `manifest_uri` |
| | (`reelforge-ingest`/`animate-anyone/manifests/`) | | |

Each workflow's first task, `claim_upload`, records the upload version it picked up in the workflow's
intake ledger (`<artifacts or output prefix>_intake/`) and claims it (`_claims/`, an S3 conditional
write keyed by the version): a notification's run and this DAG's run of one upload never both do the
work. This DAG lists the latest versions under the prefix uploaded since its watermark (less 12 h of
overlap for long multipart uploads), and starts one run, `reconcile__<digest of the version>`, for each
upload without a ledger entry after the grace period (`reelforge_<workflow>_reconcile_grace_seconds`,
120 s; `..._backlog_grace_seconds`, 1 h, while the workflow is at `max_active_runs`). A second pass asks
for the same run id, which is a no-op: one run per object version.

| step | what |
|---|---|
| `find_unhandled` | list, compare with the ledger; trigger kwargs, the next watermark to XCom |
| `start_run` | one run each, with the upload's version in `conf["reelforge_upload"]` (skipped if it exists) |
| `commit_watermark` | advance `reelforge_<workflow>_reconcile_watermark` once every run exists |

**Rescan:** delete the watermark Variable; the next pass checks the overlap again.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG, task

from reelforge import dag_defaults
from reelforge.animate_anyone.watch import WATCH as ANIMATE_ANYONE
from reelforge.avatar.watch import WATCH as AVATAR
from reelforge.stylegan2.watch import WATCH as STYLEGAN2
from reelforge.upload_watch import UploadWatch, reconcile_interval


def reconciler(watch: UploadWatch) -> DAG:
    """The reconciler DAG of one workflow (``<name>_upload_reconciler``)."""
    with DAG(
        dag_id=f"{watch.name}_upload_reconciler",
        description=f"Start a {watch.dag_id} run for every upload that no run picked up (no notification needed).",
        doc_md=__doc__,
        schedule=reconcile_interval(),
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=1,
        is_paused_upon_creation=False,
        dagrun_timeout=timedelta(minutes=30),
        tags=["reelforge", watch.tag],
        default_args=dag_defaults.default_args(
            owner="ml-platform", retries=2, retry_seconds=30, max_retry_delay=timedelta(minutes=5),
            topic_variable=watch.topic_variable, event=f"{watch.name}_reconcile_failed",
            title=f"ReelForge {watch.name} upload reconciler failed",
        ),
    ) as dag:

        @task
        def find_unhandled(ti=None) -> list[dict]:
            """Uploads without a ledger entry, as trigger kwargs; the watermark to commit goes to XCom."""
            from reelforge.upload_watch import reconcile_pass

            found = reconcile_pass(watch, ti.get_dr_count(dag_id=watch.dag_id, states=["queued", "running"]))
            ti.xcom_push(key="watermark", value=found["watermark"])
            return found["runs"]

        start_run = TriggerDagRunOperator.partial(
            task_id="start_run",
            trigger_dag_id=watch.dag_id,
            skip_when_already_exists=True,
            max_active_tis_per_dag=4,
        ).expand_kwargs(find_unhandled())

        @task(trigger_rule="none_failed")
        def commit_watermark(ti=None) -> None:
            """Advance the watermark only when every run of this pass exists."""
            from reelforge.upload_watch import commit_watermark as commit

            commit(watch.variable("watermark"), ti.xcom_pull(task_ids="find_unhandled", key="watermark"))

        start_run >> commit_watermark()
    return dag


stylegan2_upload_reconciler = reconciler(STYLEGAN2)
avatar_upload_reconciler = reconciler(AVATAR)
animate_anyone_upload_reconciler = reconciler(ANIMATE_ANYONE)
