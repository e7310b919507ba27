"""
### StyleGAN2-ADA training on SageMaker

**Owner:** ml-platform · **Trigger:** the form below, or an upload under the dataset prefix (a `.zip`
of images, or a folder of images followed by a `_READY` marker; S3 → SQS notification → asset watcher,
when `REELFORGE_STYLEGAN2_DATASET_QUEUE_URL` is set; without notifications, `stylegan2_upload_reconciler`
starts one run per upload version). **Runs on:** SageMaker (container
`containers/stylegan2`); Airflow only starts and watches the jobs.

| step | where | what |
|---|---|---|
| `claim_upload` | Airflow | an upload's run: record its version in the intake ledger and claim it (duplicates skip) |
| `plan` | Airflow | resolve the dataset, check the form, derive job names and S3 locations from the run |
| `prepare_dataset` | SageMaker processing | images → square crops → `dataset.zip` + `report.json` |
| `train` | SageMaker training, spot | StyleGAN2-ADA with ADA and FID/KID, resuming from the newest snapshot |
| `review_training`, `quality_gate` | Airflow | the training container's metrics: FID ≤ `max_fid` (empty: no FID) |
| `register_model` | SageMaker model registry | a version in the model package group (FID, job, dataset) |
| `generate_samples` | SageMaker processing | `samples` seeds → PNGs + contact sheet |
| `summarize` | Airflow | SNS success message with links |

`prepare_dataset` reports skipped files (corrupt, tiny, not images, duplicates) and why. `train` is
deferrable; after a spot interruption or a retry it resumes from the run's checkpoint URI.

**Outputs:** `s3://<artifacts>/stylegan2/datasets/<fingerprint>/` (prepared dataset, shared by runs on
the same images and resolution), `s3://<artifacts>/stylegan2/runs/<key>/` (`checkpoints/`, `model/`)
and `s3://<output>/stylegan2/samples/<key>/`, where `<key>` = `run_after` + a hash of the run id: job
names and prefixes are the same for every try of a run.

**Idempotent / rerun:** clear a failed task. A SageMaker job of this run that completed is reused, one
still running is waited for, a failed one is replaced; the replacement training job resumes from the
run's checkpoints. To train a finished model longer, trigger with `checkpoint_uri` set to its
checkpoints and a larger `kimg` (the total). Failures (and a quality-gate refusal) are published on the
StyleGAN2 SNS topic; so is a run that misses its deadline.

NVlabs' StyleGAN2-ADA code is under NVIDIA's non-commercial licence (see the container README).
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.providers.amazon.aws.utils.sagemaker import ApprovalStatus
from airflow.sdk import DAG, DeadlineAlert, Param, task

from reelforge import dag_defaults
from reelforge.deadlines import deadline_alert
from reelforge.operators.sagemaker_reattach import (
    ReattachingProcessingOperator,
    ReattachingTrainingOperator,
    RegisterModelVersionOperator,
)
from reelforge.sagemaker_logs import print_job_logs
from reelforge.settings import AWS_CONN_ID, retry_delay
from reelforge.stylegan2.settings import (
    DAG_ID,
    MAX_ACTIVE_RUNS,
    TOPIC_VARIABLE,
    dataset_queue_url,
    deadline_interval,
)
from reelforge.stylegan2.watch import WATCH
from reelforge.upload_watch import claim_upload_task

TRAINING_INSTANCES = ["ml.g4dn.xlarge", "ml.g4dn.2xlarge", "ml.g4dn.12xlarge", "ml.g5.xlarge", "ml.g5.2xlarge",
                      "ml.g5.12xlarge", "ml.p3.2xlarge", "ml.p3.8xlarge", "ml.p4d.24xlarge"]


def _deadline() -> DeadlineAlert:
    return deadline_alert("stylegan2", interval=deadline_interval("training", default_minutes=4 * 24 * 60),
                          topic_variable=TOPIC_VARIABLE)


default_args = dag_defaults.default_args(
    owner="ml-platform", retries=2, retry_seconds=60, max_retry_delay=timedelta(minutes=30),
    topic_variable=TOPIC_VARIABLE, event="stylegan2_failed", title="ReelForge StyleGAN2 training failed",
)


def build_dag(*, with_deadline: bool = True) -> DAG:
    """The DAG; ``with_deadline=False`` only for ``airflow dags test``.

    The deadline alert is evaluated by the scheduler and triggerer; ``airflow dags test`` cannot run
    it and exits 1 for any DAG that declares one. The tests therefore check that this module's DAG
    declares the deadline, and run ``dags test`` on ``build_dag(with_deadline=False)`` — the same
    tasks, wiring and callbacks, minus the deadline. Nothing in the DAG depends on that switch.
    """
    with DAG(
        dag_id=DAG_ID,
        description="Prepare a dataset, train StyleGAN2-ADA on SageMaker, gate on FID, register, sample.",
        doc_md=__doc__,
        # event-driven when the dataset queue is configured; else the upload reconciler or the form
        schedule=dag_defaults.queue_schedule("reelforge-stylegan2-datasets", "stylegan2_datasets",
                                             dataset_queue_url(), waiter_delay=10),
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=MAX_ACTIVE_RUNS,
        tags=["reelforge", "stylegan2"],
        default_args=default_args,
        deadline=_deadline() if with_deadline else None,
        params={
            "dataset_uri": Param(None, type=["null", "string"], title="Dataset",
                                 description="s3://bucket/prefix/ of images (e.g. the Anime Face dataset) or "
                                             "s3://bucket/key.zip. Leave empty for runs started by an upload."),
            "resolution": Param(256, enum=[64, 128, 256, 512, 1024], title="Resolution",
                                description="Training images are centre-cropped and resized to this square size."),
            "kimg": Param(5000, type="integer", minimum=1, title="Length (kimg)",
                          description="Total thousands of real images shown to the discriminator, resumes included."),
            "gamma": Param(None, type=["null", "number"], minimum=0, title="R1 gamma",
                           description="R1 regularisation weight; empty = train.py's heuristic for the resolution."),
            "augment": Param("ada", enum=["ada", "noaug"], title="Augmentation",
                             description="ada: adaptive discriminator augmentation (small datasets); noaug: none."),
            "mirror": Param(True, type="boolean", title="Mirror",
                            description="Add x-flipped copies of the images (faces: on)."),
            "snapshot_ticks": Param(25, type="integer", minimum=1, title="Snapshot interval (ticks)",
                                    description="A snapshot + FID/KID every N ticks of 4 kimg: what an interruption "
                                                "can lose, against metric time."),
            "transfer": Param("none", enum=["none", "ffhq256", "ffhq512", "ffhq1024", "celebahq256", "lsundog256"],
                              title="Start from", description="Transfer-learn from an NVlabs network (fresh runs)."),
            "instance_type": Param("ml.g5.2xlarge", enum=TRAINING_INSTANCES, title="Instance type",
                                   description="GPU instance of the training job (all its GPUs are used)."),
            "spot": Param(True, type="boolean", title="Managed spot",
                          description="Train on spot capacity; interruptions resume from the newest snapshot."),
            "max_runtime_hours": Param(48, type="integer", minimum=1, maximum=672, title="Max runtime (h)",
                                       description="Training time limit of the job."),
            "max_wait_hours": Param(96, type="integer", minimum=1, maximum=672, title="Max wait (h)",
                                    description="Spot only: training plus waiting for capacity; at least max runtime."),
            "max_fid": Param(50.0, type=["null", "number"], exclusiveMinimum=0, title="Quality gate: max FID",
                             description="fid50k_full of the final model must not exceed this to be registered. "
                                         "Empty: no FID is computed (faster snapshots); the gate then only checks "
                                         "the job's report of a complete run and the version is registered as "
                                         "PendingManualApproval."),
            "approval": Param("Approved", enum=["Approved", "PendingManualApproval"], title="Registry approval",
                              description="Approved: the weekly batch uses it at once; PendingManualApproval: "
                                          "someone approves it in the model registry first."),
            "samples": Param(64, type="integer", minimum=1, maximum=1000, title="Samples",
                             description="Seeds 0..N-1 generated by the batch job after registration."),
            "truncation": Param(0.7, type="number", minimum=0, maximum=1, title="Truncation psi",
                                description="Sample truncation: lower is more typical, higher more varied."),
            "checkpoint_uri": Param(None, type=["null", "string"], title="Continue from checkpoints",
                                    description="s3:// checkpoint prefix of an earlier run to train further; "
                                                "empty = this run's own."),
        },
    ) as dag:

        @task
        def plan(params: dict, run_id: str, dag_run=None, triggering_asset_events=None) -> dict:
            """Resolve the dataset, validate, derive names, S3 locations and the job requests."""
            from reelforge.stylegan2.tasks import plan_run

            return plan_run(params=params, run_id=run_id, run_after=dag_run.run_after, events=triggering_asset_events)

        planned = plan()
        claim_upload_task(WATCH)() >> planned

        prepare_dataset = ReattachingProcessingOperator(
            task_id="prepare_dataset",
            aws_conn_id=AWS_CONN_ID,
            config=planned["prep_config"],
            deferrable=True,
            check_interval=60,
            max_attempts=6 * 60,
        )

        train = ReattachingTrainingOperator(
            task_id="train",
            aws_conn_id=AWS_CONN_ID,
            config=planned["training_config"],
            deferrable=True,
            # The provider's print_log blocks the worker for check_interval and then defers without logs;
            # the job's CloudWatch logs are copied into this task's log once it ended instead.
            print_log=False,
            post_execute=print_job_logs,
            check_interval=120,
            max_attempts=28 * 24 * 30,  # up to the longest max wait the form allows
            retry_delay=retry_delay(300),
        )

        @task(multiple_outputs=True)
        def review_training(plan: dict, training: dict) -> dict:
            """FID of the final model (as the job reported it); registration and sampling requests."""
            from reelforge.stylegan2.tasks import review_training as review

            return review(plan=plan, training=training)

        review = review_training(planned, train.output)

        @task.branch
        def quality_gate(passed: bool) -> str:
            """Register the model, or stop the run with the reason."""
            return "register_model" if passed else "quality_gate_failed"

        @task
        def quality_gate_failed(message: str) -> None:
            """Fail the run (and notify) with the gate's reason; nothing is registered."""
            from airflow.sdk.exceptions import AirflowFailException

            raise AirflowFailException(message)

        register_model = RegisterModelVersionOperator(
            task_id="register_model",
            aws_conn_id=AWS_CONN_ID,
            image_uri=planned["image_uri"],
            model_url=review["model_url"],
            package_group_name=planned["model_package_group"],
            package_group_desc="ReelForge StyleGAN2-ADA generators",
            package_desc=review["description"],
            model_approval=ApprovalStatus.APPROVED,  # the form's choice overrides it in extras
            extras=review["registration"],
        )

        generate_samples = ReattachingProcessingOperator(
            task_id="generate_samples",
            aws_conn_id=AWS_CONN_ID,
            config=review["generation_config"],
            deferrable=True,
            check_interval=60,
        )

        @task(
            on_success_callback=dag_defaults.success_notifier(
                topic_variable=TOPIC_VARIABLE, event="stylegan2_succeeded", message_from="summarize",
                subject="ReelForge StyleGAN2 model ready: {{ dag_run.run_id[:50] }}"),
        )
        def summarize(plan: dict, review: dict, model_package_arn: str, samples: dict, dag=None) -> str:
            """The success message (links to jobs, registry version, samples); published on success."""
            from reelforge.stylegan2.tasks import summarize as compose

            return compose(plan=plan, review=review, model_package_arn=model_package_arn, samples=samples,
                           dag_id=dag.dag_id)

        gate = quality_gate(review["passed"])
        gate >> [register_model, quality_gate_failed(review["message"])]
        planned >> prepare_dataset >> train
        register_model >> generate_samples
        summarize(planned, review, register_model.output, generate_samples.output)
    return dag


dag = build_dag()
