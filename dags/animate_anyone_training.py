"""
### AnimateAnyone training on SageMaker HyperPod (staged, swept, tracked, resumable)

**Owner:** ml-platform · **Trigger:** a new training-data manifest in S3 (S3 → SQS notification →
asset watcher, when `REELFORGE_AA_MANIFEST_QUEUE_URL` is set; without notifications,
`animate_anyone_upload_reconciler` starts one run per manifest version) or the form below. **Runs on:**
the HyperPod cluster's Slurm behind the `hyperpod_ssh` connection (SSH through an SSM `ProxyCommand`;
see `include/cluster/hyperpod/README.md`). Airflow only stages, submits, watches and decides.

| step | where | what |
|---|---|---|
| `claim_upload` | Airflow | an upload's run: record its version in the intake ledger and claim it (duplicates skip) |
| `stage_manifest` | Airflow | pin the manifest's S3 version, validate it, copy it to shared storage |
| `plan_sweep` | Airflow | expand the sweep grid: one run dir / MLflow run key per point |
| `stage1` | Slurm, mapped: a job per sweep point | stage 1 (denoising UNet + ReferenceNet), `--nodes` each |
| `select_best` | Airflow ↔ MLflow | rank the sweep's MLflow runs by the chosen metric; plan stage 2 |
| `stage2` | Slurm | stage 2 (temporal layers) from the best run's weights |
| `export_checkpoint` | Slurm | upload the chosen weights + configs to S3 (`manifest.json` last) |
| `publish` / `notify_success` | Airflow | verify the S3 objects, SNS message with the ranking and links |

**Tracking:** every sweep run is an MLflow run (tags `reelforge.training_id`, `reelforge.stage`,
`reelforge.sweep_index`, `reelforge.run_key`) on the configured tracking server — SageMaker managed
MLflow in production (`reelforge_animate_anyone_mlflow_tracking_uri` = its ARN), never `./mlruns`.

**Retries resume:** run directories are derived from the DAG run and the sweep index, so a retried or
cleared task finds its own run: the Slurm job (re-attached if still running) restarts from the newest
*complete* checkpoint of that run (incomplete ones are moved aside), the step count continues and the
metrics go on in the same MLflow run. On HyperPod `srun --auto-resume=1` also restarts a job whose node
failed. Failures and late runs are reported on the AnimateAnyone SNS topic.

**Rerun from scratch:** trigger a new run (new run id → new directories).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import (
    DAG,
    Param,
    task,
)

from reelforge import dag_defaults
from reelforge.animate_anyone.settings import (
    DAG_ID,
    MAX_ACTIVE_RUNS,
    TOPIC_VARIABLE,
    aa_deadline,
    aa_manifest_queue_url,
    aa_poll_interval,
)
from reelforge.animate_anyone.watch import WATCH
from reelforge.deadlines import deadline_alert
from reelforge.operators.slurm import SlurmJobOperator
from reelforge.operators.sns_once import SnsPublishOnceOperator
from reelforge.settings import AWS_CONN_ID, HYPERPOD_CONN_ID, variable_template
from reelforge.upload_watch import claim_upload_task

TOPIC_ARN = variable_template(TOPIC_VARIABLE)
INCLUDE_DIR = str(Path(__file__).resolve().parent.parent / "include")
POLL = aa_poll_interval()


default_args = dag_defaults.default_args(
    owner="ml-platform", retries=3, retry_seconds=60, max_retry_delay=timedelta(minutes=30),
    topic_variable=TOPIC_VARIABLE, event="animate_anyone_failed", title="ReelForge AnimateAnyone failed",
)

with DAG(
    dag_id=DAG_ID,
    description="AnimateAnyone stage 1 sweep → best run by MLflow metric → stage 2 → S3, on HyperPod Slurm.",
    doc_md=__doc__,
    # event-driven when the manifest queue is configured; else the upload reconciler or the form
    schedule=dag_defaults.queue_schedule("reelforge-animate-anyone-manifests", "aa_manifest_queue",
                                         aa_manifest_queue_url(), waiter_delay=5),
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=MAX_ACTIVE_RUNS,
    tags=["reelforge", "animate-anyone", "slurm"],
    default_args=default_args,
    template_searchpath=[INCLUDE_DIR],
    deadline=deadline_alert("animate-anyone", interval=aa_deadline(),
                            topic_variable=TOPIC_VARIABLE),
    params={
        "manifest_uri": Param(
            None,
            type=["null", "string"],
            title="Training-data manifest",
            description="s3://bucket/key of the JSON manifest (Moore-AnimateAnyone meta format: a list of "
            "{video_path, kps_path}). Leave empty for runs started by an upload.",
        ),
        "nodes": Param(2, type="integer", minimum=1, maximum=64, title="Nodes per stage-1 run",
                       description="sbatch --nodes of every sweep run (one launcher per node)."),
        "stage2_nodes": Param(0, type="integer", minimum=0, maximum=64, title="Nodes for stage 2",
                              description="sbatch --nodes of stage 2; 0 = the same as stage 1."),
        "sweep_grid": Param(
            {"solver.learning_rate": [1.0e-5, 3.0e-5, 5.0e-5]},
            type="object",
            title="Sweep grid (stage 1)",
            description='Dotted config key → list of values; the runs are their cartesian product, e.g. '
            '{"solver.learning_rate": [1e-5, 3e-5], "noise_offset": [0.05, 0.1]}. {} = a single run.',
        ),
        "config_overrides": Param(
            {},
            type="object",
            title="Config overrides (both stages)",
            description='Dotted keys of stage1.yaml/stage2.yaml, e.g. {"solver.max_train_steps": 20000}. '
            "Unknown keys are refused; paths and names are set by the pipeline.",
        ),
        "stage1_overrides": Param({}, type="object", title="Stage-1 overrides",
                                  description="Like config overrides, stage 1 only (applied after them)."),
        "stage2_overrides": Param({}, type="object", title="Stage-2 overrides",
                                  description="Like config overrides, stage 2 only (applied after them)."),
        "selection_metric": Param("train_loss", type="string", title="Selection metric",
                                  description="MLflow metric (its latest value) that ranks the stage-1 runs."),
        "selection_mode": Param("min", enum=["min", "max"], title="Selection mode",
                                description="min: lowest value wins (losses); max: highest wins."),
        "payload": Param(
            "animate-anyone",
            enum=["animate-anyone", "smoke", "moore-cpu"],
            title="Payload",
            description="animate-anyone: Moore-AnimateAnyone's train_stage_1/2.py in the image. smoke: a tiny "
            "PyTorch job with the same conventions (checks the cluster path in seconds). moore-cpu: Moore's real "
            "trainers on CPU nodes with tiny random models (checks the real code path without GPUs or weights).",
        ),
    },
) as dag:

    @task(multiple_outputs=True)
    def stage_manifest(params: dict, dag_run=None, triggering_asset_events=None) -> dict:
        """Pin, validate and copy the training-data manifest to shared storage."""
        from reelforge.animate_anyone.tasks import stage_manifest as body

        return body(params=params, dag_id=dag_run.dag_id, run_id=dag_run.run_id, events=triggering_asset_events,
                    conf=dag_run.conf)

    staged = stage_manifest()
    claim_upload_task(WATCH)() >> staged

    @task
    def plan_sweep(staged: dict, params: dict, dag_run=None) -> list:
        """Expand the sweep grid into one stage-1 job per point (own directory and MLflow run key)."""
        from reelforge.animate_anyone.tasks import plan_sweep as body

        return body(staged=staged, params=params, dag_id=dag_run.dag_id, run_id=dag_run.run_id)

    plan = plan_sweep(staged)

    stage1 = SlurmJobOperator.partial(
        task_id="stage1",
        ssh_conn_id=HYPERPOD_CONN_ID,
        script="slurm/animate_anyone/stage1.sbatch",
        poll_interval=POLL,
    ).expand_kwargs(plan)

    @task(multiple_outputs=True)
    def select_best(staged: dict, jobs: list, params: dict, dag_run=None) -> dict:
        """Rank this training's stage-1 MLflow runs by the metric; plan stage 2 and the export."""
        from reelforge.animate_anyone.tasks import select_best as body

        return body(staged=staged, jobs=jobs, params=params, dag_id=dag_run.dag_id, run_id=dag_run.run_id)

    selection = select_best(staged, plan)

    stage2 = SlurmJobOperator(
        task_id="stage2",
        ssh_conn_id=HYPERPOD_CONN_ID,
        script="slurm/animate_anyone/stage2.sbatch",
        job_name="aa-s2",
        workdir=selection["stage2_workdir"],
        env=selection["stage2_env"],
        partition=selection["stage2_partition"],
        gres=selection["stage2_gres"],
        cpus_per_task=selection["stage2_cpus_per_task"],
        time_limit=selection["stage2_time_limit"],
        extra_args=selection["stage2_extra_args"],
        poll_interval=POLL,
    )

    export_checkpoint = SlurmJobOperator(
        task_id="export_checkpoint",
        ssh_conn_id=HYPERPOD_CONN_ID,
        script="slurm/animate_anyone/export.sbatch",
        job_name="aa-export",
        workdir=selection["export_workdir"],
        env=selection["export_env"],
        partition=selection["export_partition"],
        poll_interval=POLL,
    )

    @task(multiple_outputs=True)
    def publish(selection: dict, dag_run=None) -> dict:
        """Verify the exported objects in S3 and compose the success message."""
        from reelforge.animate_anyone.tasks import publish as body

        return body(selection=selection, dag_id=dag_run.dag_id, run_id=dag_run.run_id)

    published = publish(selection)

    notify_success = SnsPublishOnceOperator(  # a retry after a lost success report does not announce twice
        task_id="notify_success",
        aws_conn_id=AWS_CONN_ID,
        target_arn=TOPIC_ARN,
        subject="ReelForge AnimateAnyone trained: {{ dag_run.run_id[:50] }}",
        message=published["message"],
        message_attributes={"event": "animate_anyone_trained"},
        receipt_uri=published["receipt_uri"],
    )

    stage1 >> selection
    stage2 >> export_checkpoint >> published >> notify_success
