"""
### Video super-resolution (ReelForge's main job)

**Owner:** media-platform · **Trigger:** an upload under the ingest prefix (S3 → SQS notification →
asset watcher); the `video_sr_reconciler` DAG starts a run for any upload no notification's run
picked up (lost, stranded or switched-off notifications); or the form below. **Runs on:** the
Slurm cluster behind the `slurm_ssh` connection (ParallelCluster in production); Airflow only
launches and watches the work.

| step | where | what |
|---|---|---|
| `prepare` | Airflow | find the source, pin its version, validate it, derive the job id, claim it |
| `plan_segments` | Slurm, CPU partition | fetch from S3 to shared storage, probe, cut into segments (`plan.json`) |
| `read_plan` | Airflow | size the array from `plan.json` |
| `upscale_segments` | Slurm array, GPU partition | one task per segment: decode → model → encode |
| `assemble_and_deliver` | Slurm, CPU partition | concat, mux original audio/subtitles/chapters, quality, upload |
| `publish` / `notify_success` | Airflow | verify the delivered objects, SNS success with links |

**Inputs:** `s3://<ingest bucket>/<ingest prefix>…` (any video container). An upload carries its
settings in its folder (`x2/` → scale 2, Variable `reelforge_sr_profiles`) or its metadata
(`x-amz-meta-reelforge-scale: 2`, `…-frame-rate: 25`); this form's values win where a run sets them.
**Outputs:** `s3://<output bucket>/<output prefix><name>/<job id>/`: the upscaled video as
`<name>.x<scale>.<container>` (the upload's own name, UTF-8 kept), `report.json` (frame counts,
timing, PSNR/SSIM) and `previews/` (side-by-side crops).

**Idempotent:** the job id hashes the object version and the settings; a duplicate notification
finds the first run's claim and skips, a delivered job is not redone, and a retried or cleared run
reuses the segments already encoded on shared storage. A retry of `upscale_segments` resubmits only
the failed array indices.

**Rerun:** clear the failed task (or the run) in the UI. To redo a delivered job, trigger with the
same source and *force* on. Failures and late runs are reported on the SR SNS topic.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import DAG, Param, task

from reelforge import dag_defaults
from reelforge.deadlines import deadline_alert
from reelforge.operators.slurm import SlurmJobOperator
from reelforge.operators.sns_once import SnsPublishOnceOperator
from reelforge.settings import (
    AWS_CONN_ID,
    SLURM_CONN_ID,
    deadline_interval,
    variable_template,
    wait_before_defer,
)
from reelforge.sr.form import form_params
from reelforge.sr.settings import DAG_ID, MAX_ACTIVE_RUNS, TOPIC_VARIABLE, ingest_queue_url

TOPIC_ARN = variable_template(TOPIC_VARIABLE)
INCLUDE_DIR = str(Path(__file__).resolve().parent.parent / "include")
#: A Slurm step that ends within this many seconds is watched from its task and never deferred
#: (saves the triggerer round trip on plan/assemble and on short clips); longer ones defer.
WAIT_BEFORE_DEFER_S = wait_before_defer(30)

default_args = dag_defaults.default_args(
    owner="media-platform", retries=3, retry_seconds=30, max_retry_delay=timedelta(minutes=15),
    topic_variable=TOPIC_VARIABLE, event="sr_failed", title="ReelForge SR failed",
)

with DAG(
    dag_id=DAG_ID,
    description="Upscale a legacy SD video 2-4x on the Slurm cluster and deliver it to S3.",
    doc_md=__doc__,
    # event-driven when the ingest queue is configured; else the reconciler or the form start runs
    schedule=dag_defaults.queue_schedule("reelforge-sr-ingest", "sr_ingest_queue", ingest_queue_url()),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=MAX_ACTIVE_RUNS,
    tags=["reelforge", "super-resolution", "slurm"],
    default_args=default_args,
    template_searchpath=[INCLUDE_DIR],
    deadline=deadline_alert("sr", interval=deadline_interval("sr", default_minutes=360),
                            topic_variable=TOPIC_VARIABLE),
    params={
        "source_uri": Param(
            None,
            type=["null", "string"],
            title="Source video",
            description="s3://bucket/key of the video to upscale. Leave empty for runs started by an upload.",
        ),
        **form_params(),
    },
) as dag:

    @task(multiple_outputs=True)
    def prepare(params: dict, run_id: str, dag_run=None, triggering_asset_events=None) -> dict:
        """Resolve, validate and claim the source; skip duplicates and delivered jobs."""
        from reelforge.sr.tasks import prepare_run

        return prepare_run(params=params, run_id=run_id, events=triggering_asset_events,
                           conf=dag_run.conf if dag_run else None)

    job = prepare()

    plan_segments = SlurmJobOperator(
        task_id="plan_segments",
        ssh_conn_id=SLURM_CONN_ID,
        script="slurm/sr/01-plan.sbatch",
        workdir=job["workdir"],
        env=job["env"],
        partition=job["cpu_partition"],
        extra_args=job["slurm_args"],
        poll_interval=5,
        wait_before_defer=WAIT_BEFORE_DEFER_S,
    )

    @task(multiple_outputs=True)
    def read_plan(workdir: str) -> dict:
        """Read plan.json from shared storage to size the array."""
        from reelforge.sr.tasks import read_plan_summary

        return read_plan_summary(workdir)

    plan = read_plan(job["workdir"])

    upscale_segments = SlurmJobOperator(
        task_id="upscale_segments",
        ssh_conn_id=SLURM_CONN_ID,
        script="slurm/sr/02-upscale.sbatch",
        workdir=job["workdir"],
        env=job["env"],
        array=plan["array"],
        array_throttle=job["array_throttle"],
        time_limit=plan["segment_time_limit"],
        partition=job["gpu_partition"],
        gres=job["gpu_gres"],
        extra_args=job["slurm_args"],
        poll_interval=5,
        wait_before_defer=WAIT_BEFORE_DEFER_S,
    )

    assemble_and_deliver = SlurmJobOperator(
        task_id="assemble_and_deliver",
        ssh_conn_id=SLURM_CONN_ID,
        script="slurm/sr/03-assemble.sbatch",
        workdir=job["workdir"],
        env=job["env"],
        partition=job["cpu_partition"],
        extra_args=job["slurm_args"],
        poll_interval=5,
        wait_before_defer=WAIT_BEFORE_DEFER_S,
        delivery_manifest="delivery.json",  # the worker's record of the upload: the task's S3 links
        aws_conn_id=AWS_CONN_ID,
    )

    @task(multiple_outputs=True)
    def publish(spec: dict, estimate: dict, run_id: str) -> dict:
        """Check every delivered object in S3 and compose the success message."""
        from reelforge.sr.tasks import publish_delivery

        return publish_delivery(spec, estimate, run_id=run_id)

    published = publish(job["job"], plan["estimate"])

    notify_success = SnsPublishOnceOperator(  # a retry after a lost success report does not announce twice
        task_id="notify_success",
        aws_conn_id=AWS_CONN_ID,
        target_arn=TOPIC_ARN,
        subject="ReelForge SR done: {{ dag_run.run_id[:60] }}",
        message=published["message"],
        message_attributes={"event": "sr_succeeded"},
        receipt_uri=published["receipt_uri"],
    )

    plan_segments >> plan
    upscale_segments >> assemble_and_deliver >> published >> notify_success
