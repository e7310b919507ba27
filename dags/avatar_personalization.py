"""
### Personalised avatars: DreamBooth + LoRA fine-tune, Triton multi-model serving

**Owner:** ml-platform · **Trigger:** the form below, or an upload of a selfie set: photos under
`s3://<ingest>/avatar/incoming/<user id>/<set>/` followed by a `_READY` marker (S3 → SQS → asset
watcher, when `REELFORGE_AVATAR_SELFIE_QUEUE_URL` is set). **Runs on:** SageMaker (container
`containers/avatar`): a processing job and the async fine-tune endpoint; samples on the Triton MME.
The endpoints themselves are kept by the `avatar_endpoints` DAG.

| step | where | what |
|---|---|---|
| `plan` | Airflow | check the form and every selfie (keys, image signatures, count, sizes) at once; names |
| `preprocess` | SageMaker processing | `reelforge-avatar preprocess`: face crops under the run's `crops/` |
| `fine_tune` | SageMaker async endpoint | `finetune/request.json` → `model/model.tar.gz` (deferred) |
| `verify_package` | Airflow | safe tar members, `manifest.json` sha256s, base model id/revision = the serving base |
| `register_model` | S3 | copy to the MME's model prefix as `<model_name>.tar.gz` |
| `generate_samples` | SageMaker MME | warm-up, then N avatars (`TargetModel=<model_name>.tar.gz`) → S3 |
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
from airflow.providers.amazon.aws.notifications.sns import SnsNotifier
from airflow.providers.amazon.aws.operators.sns import SnsPublishOperator
from airflow.sdk import DAG, Asset, AssetWatcher, Param, task

from reelforge.avatar.config import (
    TOPIC_ARN_TEMPLATE,
    TOPIC_VARIABLE,
    USER_TOPIC_ARN_TEMPLATE,
    selfie_queue_url,
)
from reelforge.deadlines import deadline_alert
from reelforge.operators.sagemaker_async import SageMakerInvokeAsyncOperator
from reelforge.settings import AWS_CONN_ID, deadline_interval, retry_delay
from reelforge.stylegan2.operators import ReattachingProcessingOperator

DAG_ID = "avatar_personalization"


def _schedule() -> list[Asset] | None:
    """Event-driven when the selfie queue is configured; otherwise started from the form."""
    queue_url = selfie_queue_url()
    if not queue_url:
        return None
    from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger

    trigger = MessageQueueTrigger(
        scheme="sqs", sqs_queue=queue_url, aws_conn_id=AWS_CONN_ID, max_messages=1, waiter_delay=10
    )
    return [Asset("reelforge-avatar-selfies", watchers=[AssetWatcher(name="avatar_selfies", trigger=trigger)])]


default_args = {
    "owner": "ml-platform",
    "retries": 2,
    "retry_delay": retry_delay(60),
    "retry_exponential_backoff": True,
    "max_retry_delay": timedelta(minutes=20),
    "on_failure_callback": SnsNotifier(
        aws_conn_id=AWS_CONN_ID,
        target_arn=TOPIC_ARN_TEMPLATE,
        subject="ReelForge avatar run failed: {{ dag_run.run_id[:50] }}",
        message=(
            '{"event": "avatar_failed", "dag_id": "{{ dag.dag_id }}", "run_id": "{{ run_id }}", '
            '"task_id": "{{ ti.task_id }}", "try_number": {{ ti.try_number }}, '
            '"reason": {{ (exception | string) | tojson }}, "log": {{ ti.log_url | tojson }}}'
        ),
        message_attributes={"event": "avatar_failed"},
    ),
}


def build_dag(*, with_deadline: bool = True) -> DAG:
    """The DAG; ``with_deadline=False`` only for ``airflow dags test`` (see ``stylegan2_training.build_dag``)."""
    with DAG(
        dag_id=DAG_ID,
        description="Selfies → crops → DreamBooth+LoRA on the async endpoint → verify → Triton MME → avatars.",
        doc_md=__doc__,
        schedule=_schedule(),
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        max_active_runs=8,
        tags=["reelforge", "avatar"],
        default_args=default_args,
        deadline=deadline_alert(
            "avatar", interval=deadline_interval("avatar", default_minutes=8 * 60),
            topic_variable=TOPIC_VARIABLE,
        ) if with_deadline else None,
        params={
            "user_id": Param("", type="string", title="User id",
                             description="Who the avatars are for ([A-Za-z0-9_.-], up to 64); part of the model "
                                         "name. Empty for runs started by an upload (taken from its path)."),
            "selfies_uri": Param("", type="string", title="Selfies",
                                 description="s3://bucket/prefix/ holding 4–40 JPEG/PNG/WebP photos of one face. "
                                             "Empty for runs started by an upload."),
            "steps": Param(800, type="integer", minimum=50, maximum=5000, title="Training steps",
                           description="max_train_steps of the DreamBooth+LoRA fine-tune."),
            "lora_rank": Param(16, enum=[4, 8, 16, 32, 64], title="LoRA rank",
                               description="Rank of the LoRA adapters: higher holds more detail, is larger."),
            "token": Param("ohwx", type="string", title="Identifier token",
                           description="The rare word the fine-tune binds to this face (instance prompt "
                                       "'a photo of <token> person')."),
            "samples": Param(4, type="integer", minimum=1, maximum=16, title="Sample avatars",
                             description="How many avatars to generate after registration (seeds 0..N-1)."),
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
        def generate_samples(plan: dict, registered_uri: str, dag=None) -> dict:
            """Warm-up + N avatars on the MME (TargetModel=<model_name>.tar.gz), stored in S3."""
            from reelforge.avatar.tasks import generate_samples as generate

            return generate(plan=plan, registered_uri=registered_uri, dag_id=dag.dag_id)

        package = verify_package(planned, fine_tune.output)
        registered = register_model(planned, package)
        generated = generate_samples(planned, registered)
        notify_user = SnsPublishOperator(
            task_id="notify_user",
            aws_conn_id=AWS_CONN_ID,
            target_arn=USER_TOPIC_ARN_TEMPLATE,
            subject="Your ReelForge avatars are ready",
            message=generated["message"],
            message_attributes=generated["attributes"],
        )
        planned >> preprocess >> fine_tune
        generated >> notify_user
    return dag


dag = build_dag()
