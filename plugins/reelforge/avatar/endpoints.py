"""Endpoint lifecycle of the avatar workflow: model/config/endpoint requests and async scale-to-zero.

Model and endpoint-config names hash their content: a changed image or instance type gives a new
config and the endpoint is updated onto it; an unchanged one is found and left as it is.
"""

from __future__ import annotations

import logging
from typing import Any

from airflow.providers.amazon.aws.operators.sagemaker import (
    SageMakerEndpointConfigOperator,
    SageMakerEndpointOperator,
    SageMakerModelOperator,
    serialize,
)

from reelforge.avatar.settings import AvatarSettings
from reelforge.sagemaker_requests import digest, s3_uri

log = logging.getLogger(__name__)

VARIANT = "AllTraffic"
SCALABLE_DIMENSION = "sagemaker:variant:DesiredInstanceCount"


def _named(prefix: str, body: dict[str, Any]) -> str:
    return f"{prefix}-{digest(body, length=10)}"


def endpoint_plan(settings: AvatarSettings) -> dict[str, Any]:
    """``<finetune|mme>_<model|config|endpoint>`` SageMaker requests and the ``scaling`` requests."""
    # The base pipeline arrives as the model data (/opt/ml/model); nothing is fetched from a hub.
    ft_container = {"Image": settings.finetune_image_uri, "ModelDataUrl": settings.base_model_uri,
                    "Environment": {"HF_HUB_OFFLINE": "1"}}
    ft_model = {"ModelName": _named("reelforge-avatar-ft", [ft_container, settings.role_arn]),
                "ExecutionRoleArn": settings.role_arn, "PrimaryContainer": ft_container}
    out = settings.async_output_prefix
    async_config = {
        "OutputConfig": {
            "S3OutputPath": s3_uri(settings.artifacts_bucket, f"{out}output/"),
            "S3FailurePath": s3_uri(settings.artifacts_bucket, f"{out}failure/"),
            "NotificationConfig": {"SuccessTopic": settings.async_topic_arn, "ErrorTopic": settings.async_topic_arn},
        },
        "ClientConfig": {"MaxConcurrentInvocationsPerInstance": 1},  # one fine-tune per GPU at a time
    }
    ft_variants = [{"VariantName": VARIANT, "ModelName": ft_model["ModelName"],
                    "InstanceType": settings.finetune_instance_type, "InitialInstanceCount": 1}]
    ft_config = {"EndpointConfigName": _named("reelforge-avatar-ft", [ft_variants, async_config]),
                 "ProductionVariants": ft_variants, "AsyncInferenceConfig": async_config}

    if not settings.triton_image_uri:
        raise ValueError("set reelforge_avatar_triton_image_uri to the reelforge-avatar-triton image "
                         "(containers/avatar/Dockerfile.triton): SageMaker's Triton image has none of our code")
    # Users' packages come from the MME prefix; the shared base is fetched by avatar_base from the same tar
    # the fine-tune endpoint gets as its model data (reelforge_avatar.base_model.fetch_base).
    mme_container = {"Image": settings.triton_image_uri, "Mode": "MultiModel",
                     "ModelDataUrl": s3_uri(settings.mme_bucket, settings.mme_prefix),
                     "Environment": {"HF_HUB_OFFLINE": "1", "REELFORGE_AVATAR_BASE_MODEL_URI": settings.base_model_uri}}
    mme_model = {"ModelName": _named("reelforge-avatar-mme", [mme_container, settings.role_arn]),
                 "ExecutionRoleArn": settings.role_arn, "PrimaryContainer": mme_container}
    mme_variants = [{"VariantName": VARIANT, "ModelName": mme_model["ModelName"],
                     "InstanceType": settings.mme_instance_type,
                     "InitialInstanceCount": settings.mme_instance_count}]
    mme_config = {"EndpointConfigName": _named("reelforge-avatar-mme", mme_variants),
                  "ProductionVariants": mme_variants}
    return {
        "finetune_model": ft_model, "finetune_config": ft_config,
        "finetune_endpoint": {"EndpointName": settings.finetune_endpoint,
                              "EndpointConfigName": ft_config["EndpointConfigName"]},
        "mme_model": mme_model, "mme_config": mme_config,
        "mme_endpoint": {"EndpointName": settings.mme_endpoint, "EndpointConfigName": mme_config["EndpointConfigName"]},
        "scaling": scale_to_zero_requests(settings.finetune_endpoint, settings.async_max_instances),
    }


def scale_to_zero_requests(endpoint: str, max_instances: int) -> dict[str, Any]:
    """Application Auto Scaling for an async endpoint that idles at zero instances (AWS's recipe).

    A target-tracking policy on the backlog per instance scales 1..N and back to 0 when the queue is
    empty; it cannot wake an endpoint at 0, so a step policy, fired by a CloudWatch alarm on
    ``HasBacklogWithoutCapacity``, adds the first instance.
    """
    resource = f"endpoint/{endpoint}/variant/{VARIANT}"
    target = {"ServiceNamespace": "sagemaker", "ResourceId": resource, "ScalableDimension": SCALABLE_DIMENSION}
    dims = [{"Name": "EndpointName", "Value": endpoint}]
    return {
        "target": {**target, "MinCapacity": 0, "MaxCapacity": max_instances},
        "backlog_policy": {**target, "PolicyName": f"{endpoint}-backlog", "PolicyType": "TargetTrackingScaling",
                           "TargetTrackingScalingPolicyConfiguration": {
                               "TargetValue": 1.0,
                               "CustomizedMetricSpecification": {
                                   "MetricName": "ApproximateBacklogSizePerInstance", "Namespace": "AWS/SageMaker",
                                   "Dimensions": dims, "Statistic": "Average"},
                               "ScaleInCooldown": 600, "ScaleOutCooldown": 300}},
        "wake_policy": {**target, "PolicyName": f"{endpoint}-wake-from-zero", "PolicyType": "StepScaling",
                        "StepScalingPolicyConfiguration": {
                            "AdjustmentType": "ChangeInCapacity", "MetricAggregationType": "Average",
                            "Cooldown": 300, "StepAdjustments": [{"MetricIntervalLowerBound": 0,
                                                                  "ScalingAdjustment": 1}]}},
        "wake_alarm": {"AlarmName": f"{endpoint}-has-backlog-without-capacity",
                       "MetricName": "HasBacklogWithoutCapacity", "Namespace": "AWS/SageMaker",
                       "Dimensions": dims, "Statistic": "Average", "Period": 60, "EvaluationPeriods": 2,
                       "DatapointsToAlarm": 2, "Threshold": 1, "ComparisonOperator": "GreaterThanOrEqualToThreshold",
                       "TreatMissingData": "missing"},
    }


def apply_scaling(requests: dict[str, Any]) -> dict[str, Any]:
    """Register the target, put both policies and the alarm (each call is an idempotent upsert)."""
    from reelforge.sagemaker_requests import aws_client

    aas, cw = aws_client("application-autoscaling"), aws_client("cloudwatch")
    aas.register_scalable_target(**requests["target"])
    backlog = aas.put_scaling_policy(**requests["backlog_policy"])
    wake = aas.put_scaling_policy(**requests["wake_policy"])
    cw.put_metric_alarm(**requests["wake_alarm"], AlarmActions=[wake["PolicyARN"]])
    log.info("%s: scales 0..%d (%s, %s)", requests["target"]["ResourceId"], requests["target"]["MaxCapacity"],
             backlog["PolicyARN"], wake["PolicyARN"])
    return {"backlog_policy_arn": backlog["PolicyARN"], "wake_policy_arn": wake["PolicyARN"],
            "alarm": requests["wake_alarm"]["AlarmName"]}


def _existing(describe: Any, name: str) -> dict | None:
    """``describe(name)``, or ``None`` when SageMaker has no such object."""
    from botocore.exceptions import ClientError

    try:
        return describe(name)
    except ClientError as err:
        if "Could not find" in str(err) or "does not exist" in str(err):
            return None
        raise


class EnsureModelOperator(SageMakerModelOperator):
    """``SageMakerModelOperator`` that returns an existing model of the same (content-hashed) name."""

    def execute(self, context: Any) -> dict:
        found = _existing(self.hook.describe_model, self.config["ModelName"])
        return {"Model": serialize(found)} if found else super().execute(context)


class EnsureEndpointConfigOperator(SageMakerEndpointConfigOperator):
    """``SageMakerEndpointConfigOperator`` that returns an existing config of the same name."""

    def execute(self, context: Any) -> dict:
        found = _existing(self.hook.describe_endpoint_config, self.config["EndpointConfigName"])
        return {"EndpointConfig": serialize(found)} if found else super().execute(context)


class EnsureEndpointOperator(SageMakerEndpointOperator):
    """``SageMakerEndpointOperator``: create, update onto a new config, or leave an up-to-date endpoint."""

    def execute(self, context: Any) -> dict:
        current = _existing(self.hook.describe_endpoint, self.config["EndpointName"])
        if current and current["EndpointConfigName"] == self.config["EndpointConfigName"] \
                and current["EndpointStatus"] == "InService":
            self.log.info("endpoint %s already runs %s", current["EndpointName"], current["EndpointConfigName"])
            return {"Endpoint": serialize(current)}
        return super().execute(context)
