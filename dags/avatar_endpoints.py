"""
### Avatar endpoints: the async fine-tune endpoint and the Triton multi-model endpoint

**Owner:** ml-platform · **Schedule:** `@weekly` and on demand (after changing an image, instance
type or the base model Variables). **Runs on:** the SageMaker control plane and Application Auto
Scaling; nothing is trained here.

* `plan_endpoints`: the requests, from the `reelforge_avatar_*` Variables; model and endpoint-config
  names hash their content.
* `finetune_model` → `finetune_config` → `finetune_endpoint`: the avatar container as an **async**
  endpoint (`AsyncInferenceConfig`: S3 output and failure paths, SNS success/error topics, one request
  per instance).
* `finetune_scale_to_zero`: 0..N instances; target tracking on `ApproximateBacklogSizePerInstance`,
  and a step policy fired by an alarm on `HasBacklogWithoutCapacity` to wake it from zero.
* `mme_model` → `mme_config` → `mme_endpoint`: Triton in `MultiModel` mode over
  `s3://<mme bucket>/<mme prefix>`, where `avatar_personalization` registers the fine-tuned models.

**Idempotent / rerun:** an existing model or config of the same (content-hashed) name is reused; an
endpoint already running the wanted config is left alone, one on another config is updated onto it
(SageMaker swaps it without downtime). Scaling calls are upserts. Failures are published on the
avatar SNS topic.
"""

from __future__ import annotations

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, task

from reelforge import dag_defaults
from reelforge.avatar.endpoints import EnsureEndpointConfigOperator, EnsureEndpointOperator, EnsureModelOperator
from reelforge.avatar.settings import TOPIC_VARIABLE
from reelforge.settings import AWS_CONN_ID

DAG_ID = "avatar_endpoints"

default_args = dag_defaults.default_args(
    owner="ml-platform", retries=2, retry_seconds=60, max_retry_delay=timedelta(minutes=15),
    topic_variable=TOPIC_VARIABLE, event="avatar_endpoints_failed", title="ReelForge avatar endpoints failed",
)

with DAG(
    dag_id=DAG_ID,
    description="Create/update the avatar async fine-tune endpoint (scale to zero) and the Triton MME.",
    doc_md=__doc__,
    schedule="@weekly",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    tags=["reelforge", "avatar", "maintenance"],
    default_args=default_args,
) as dag:

    @task(multiple_outputs=True)
    def plan_endpoints() -> dict:
        """The SageMaker and scaling requests of both endpoints (``<kind>_model``, ``_config``, ``_endpoint``)."""
        from reelforge.avatar.endpoints import endpoint_plan
        from reelforge.avatar.settings import avatar_settings

        return endpoint_plan(avatar_settings())

    planned = plan_endpoints()
    endpoints = {}
    for kind in ("finetune", "mme"):
        model = EnsureModelOperator(task_id=f"{kind}_model", aws_conn_id=AWS_CONN_ID, config=planned[f"{kind}_model"])
        config = EnsureEndpointConfigOperator(task_id=f"{kind}_config", aws_conn_id=AWS_CONN_ID,
                                              config=planned[f"{kind}_config"])
        endpoints[kind] = EnsureEndpointOperator(
            task_id=f"{kind}_endpoint", aws_conn_id=AWS_CONN_ID, config=planned[f"{kind}_endpoint"],
            operation="create", deferrable=True, check_interval=30, max_ingestion_time=3600,
        )
        planned >> model >> config >> endpoints[kind]

    @task
    def finetune_scale_to_zero(scaling: dict) -> dict:
        """Application Auto Scaling of the async endpoint: 0..N instances by backlog."""
        from reelforge.avatar.endpoints import apply_scaling

        return apply_scaling(scaling)

    endpoints["finetune"] >> finetune_scale_to_zero(planned["scaling"])
