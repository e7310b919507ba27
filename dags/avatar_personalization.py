"""
### Personalised avatars: DreamBooth + LoRA fine-tune, Triton multi-model serving

**Owner:** ml-platform · **Trigger:** the form below, or an upload of a selfie set: photos under
`s3://<ingest>/avatar/incoming/<user id>/<set>/` followed by a `_READY` marker (S3 → SQS → asset
watcher, when `REELFORGE_AVATAR_SELFIE_QUEUE_URL` is set; without notifications, `avatar_upload_reconciler`
starts one run per marker version). **Runs on:** SageMaker (container
`containers/avatar`): a processing job and the async fine-tune endpoint; samples on the Triton MME.
The endpoints themselves are kept by the `avatar_endpoints` DAG.

| step | where | what |
|---|---|---|
| `claim_upload` | Airflow | an upload's run: record the marker's version in the intake ledger, claim it |
| `plan` | Airflow | check the form and every selfie (keys, image signatures, count, sizes) at once; names |
| `preprocess` | SageMaker processing | `reelforge-avatar preprocess`: face crops under the run's `crops/` |
| `fine_tune` | SageMaker async endpoint | `finetune/request.json` → `model/model.tar.gz` (deferred) |
| `verify_package` | Airflow | safe tar members, `manifest.json` sha256s, base model id/revision = the serving base |
| `register_model` | S3 | copy to the MME's model prefix as `<model_name>.tar.gz` |
| `generate_samples` | SageMaker MME | warm-up, then N avatars (KServe v2, `TargetModel=<model_name>.tar.gz`) → S3 |
| `notify_user` | SNS | the user topic: model name and links to the avatars |

**Outputs:** `s3://<artifacts>/avatar/runs/<key>/` (`crops/`, `finetune/request.json`,
`finetune/invocation.json`, `model/model.tar.gz`), `s3://<artifacts>/avatar/mme/models/<model_name>.tar.gz`
and `s3://<output>/avatar/users/<user id>/<key>/` (`avatars/*.png`, `generation.json`), where `<key>` =
`run_after` + a hash of the run id and `<model_name>` = `avatar-<user>-<hash of user and run>`.

**Idempotent / rerun:** clear a failed task. The processing job is re-attached, not restarted; the
fine-tune is not invoked again while its recorded inference is pending or answered (only a failed
one is re-invoked); registration skips an identical package and refuses a different one under the same
name. Failures (with the reason, e.g. the endpoint's failure body) and a missed deadline are published
on the avatar SNS topic.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Param, task

from reelforge import dag_defaults
from reelforge.avatar.limits import ASYNC_INVOCATION_LIMIT_S
from reelforge.avatar.settings import (
    DAG_ID,
    MAX_ACTIVE_RUNS,
    TOPIC_VARIABLE,
    USER_TOPIC_ARN_TEMPLATE,
    selfie_queue_url,
)
from reelforge.avatar.watch import WATCH
from reelforge.deadlines import deadline_alert
from reelforge.operators.sagemaker_async import SageMakerInvokeAsyncOperator
from reelforge.operators.sagemaker_reattach import ReattachingProcessingOperator
from reelforge.operators.sns_once import SnsPublishOnceOperator
from reelforge.settings import AWS_CONN_ID, deadline_interval
from reelforge.upload_watch import claim_upload_task

default_args = dag_defaults.default_args(
    owner="ml-platform", retries=2, retry_seconds=60, max_retry_delay=timedelta(minutes=20),
    topic_variable=TOPIC_VARIABLE, event="avatar_failed", title="ReelForge avatar run failed",
)


def build_dag(*, with_deadline: bool = True) -> DAG:
    """The DAG; ``with_deadline=False`` only for ``airflow dags test`` (see ``stylegan2_training.build_dag``)."""
    with DAG(
        dag_id=DAG_ID,
        description="Selfies → crops → DreamBooth+LoRA on the async endpoint → verify → Triton MME → avatars.",
        doc_md=__doc__,
        # event-driven when the selfie queue is configured; else the upload reconciler or the form
        schedule=dag_defaults.queue_schedule("reelforge-avatar-selfies", "avatar_selfies", selfie_queue_url(),
                                             waiter_delay=10),
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=MAX_ACTIVE_RUNS,
        tags=["reelforge", "avatar"],
        default_args=default_args,
        deadline=deadline_alert(
            "avatar", interval=deadline_interval("avatar", default_minutes=8 * 60),
            topic_variable=TOPIC_VARIABLE,
        ) if with_deadline else None,
        params={
            "user_id": Param(None, type=["null", "string"], title="User id",
                             description="Who the avatars are for ([A-Za-z0-9_.-], up to 64); part of the model "
                                         "name. Empty for runs started by an upload (taken from its path)."),
            "selfies_uri": Param(None, type=["null", "string"], title="Selfies",
                                 description="s3://bucket/prefix/ holding 4–40 JPEG/PNG/WebP photos of one face. "
                                             "Empty for runs started by an upload."),
            "steps": Param(800, type="integer", minimum=50, maximum=5000, title="Training steps",
                           description="max_train_steps of the DreamBooth+LoRA fine-tune. With the class images "
                                       "it must fit one async invocation (3600 s): a run that cannot is refused "
                                       "at once with the most steps that fit."),
            "lora_rank": Param(16, enum=[4, 8, 16, 32, 64], title="LoRA rank",
                               description="Rank of the LoRA adapters: higher holds more detail, is larger."),
            "token": Param("ohwx", type="string", title="Identifier token",
                           description="The rare word the fine-tune binds to this face (instance prompt "
                                       "'a photo of <token> person')."),
            "samples": Param(4, type="integer", minimum=1, maximum=16, title="Sample avatars",
                             description="How many avatars to generate after registration (seeds 0..N-1)."),
            "class_images": Param(100, type="integer", minimum=1, maximum=400, title="Class images",
                                  description="Prior-preservation images the fine-tune generates with the base "
                                              "model ('a photo of a person'); they count against the invocation."),
            "prompt": Param("a portrait photo of {token} person, studio lighting, detailed", type="string",
                            title="Avatar prompt", description="Prompt of the samples; {token} is replaced."),
        },
    ) as dag:

        @task
        def plan(params: dict, run_id: str, dag_run=None, triggering_asset_events=None) -> dict:
            """Resolve the selfie set, refuse bad input at once, derive names and requests."""
            from reelforge.avatar.tasks import plan_run

            return plan_run(params=params, run_id=run_id, run_after=dag_run.run_after, events=triggering_asset_events)

        planned = plan()
        claim_upload_task(WATCH)() >> planned

        preprocess = ReattachingProcessingOperator(
            task_id="preprocess",
            aws_conn_id=AWS_CONN_ID,
            config=planned["prep_config"],
            deferrable=True,
            check_interval=30,
            max_attempts=4 * 120,
        )

        fine_tune = SageMakerInvokeAsyncOperator(
            task_id="fine_tune",
            aws_conn_id=AWS_CONN_ID,
            endpoint_name=planned["finetune_endpoint"],
            request=planned["request"],
            input_s3_uri=planned["request_uri"],
            inference_id=planned["inference_id"],
            poll_interval=planned["poll_interval_s"],
            timeout=planned["finetune_timeout_s"],
            invocation_timeout=ASYNC_INVOCATION_LIMIT_S,  # the plan refused runs that cannot finish within it
        )

        @task
        def verify_package(plan: dict, finetune: dict) -> dict:
            """Download and check model.tar.gz: members, manifest sha256s, base model = the serving base."""
            from reelforge.avatar.tasks import verify_package as verify

            return verify(plan=plan, finetune=finetune)

        @task
        def register_model(plan: dict, package: dict) -> str:
            """Copy the package to the MME prefix as <model_name>.tar.gz."""
            from reelforge.avatar.tasks import register_model as register

            return register(plan=plan, package=package)

        @task(multiple_outputs=True)
        def generate_samples(plan: dict, registered_uri: str, run_id: str, dag=None) -> dict:
            """Warm-up + N avatars on the MME (TargetModel=<model_name>.tar.gz), stored in S3."""
            from reelforge.avatar.tasks import generate_samples as generate

            return generate(plan=plan, registered_uri=registered_uri, dag_id=dag.dag_id, run_id=run_id)

        package = verify_package(planned, fine_tune.output)
        registered = register_model(planned, package)
        generated = generate_samples(planned, registered)
        notify_user = SnsPublishOnceOperator(  # a retry after a lost success report does not notify twice
            task_id="notify_user",
            aws_conn_id=AWS_CONN_ID,
            target_arn=USER_TOPIC_ARN_TEMPLATE,
            subject="Your ReelForge avatars are ready",
            message=generated["message"],
            message_attributes=generated["attributes"],
            receipt_uri=generated["receipt_uri"],
        )
        planned >> preprocess >> fine_tune
        generated >> notify_user
    return dag


dag = build_dag()
