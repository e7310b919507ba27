"""Deployment settings of the avatar workflow (Variables ``reelforge_avatar_<name>``).

Defaults never name an AWS account: the topic, role and image are required (the local stack sets
them). Read them inside tasks, never at parse time; the few values DAG files need while parsing come
from the environment (no database access).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from reelforge.settings import required, setting, variable_template
from reelforge.storage import folder as _prefix

#: Production sets ``reelforge_avatar_topic_arn`` (and, for users' messages, ``..._user_topic_arn``).
TOPIC_VARIABLE = "reelforge_avatar_topic_arn"
TOPIC_ARN_TEMPLATE = variable_template(TOPIC_VARIABLE)
#: The personalization DAG's id and ``max_active_runs`` (its upload reconciler reads both).
DAG_ID = "avatar_personalization"
MAX_ACTIVE_RUNS = 8
USER_TOPIC_ARN_TEMPLATE = "{{ var.value.get('reelforge_avatar_user_topic_arn', var.value.reelforge_avatar_topic_arn) }}"


def selfie_queue_url() -> str | None:
    """SQS queue receiving the selfie prefix's S3 notifications (env: read at parse time, no DB)."""
    return os.environ.get("REELFORGE_AVATAR_SELFIE_QUEUE_URL") or None


def triton_image_beside(image_uri: str) -> str:
    """``…/reelforge-avatar:<tag>`` → ``…/reelforge-avatar-triton:<tag>`` (how scripts/push-images names them)."""
    repo, sep, tag = image_uri.rpartition(":")
    if not sep or "/" in tag or not repo.endswith("/reelforge-avatar"):
        return ""
    return f"{repo}-triton:{tag}"


def ingest_location() -> tuple[str, str]:
    """Where selfie sets are uploaded: ``reelforge_avatar_ingest_bucket``/``_prefix``."""
    return (setting("reelforge_avatar_ingest_bucket", "reelforge-ingest"),
            _prefix(setting("reelforge_avatar_ingest_prefix", "avatar/incoming/")))


def artifacts_location() -> tuple[str, str]:
    """Crops, packages and the intake ledger: ``reelforge_avatar_artifacts_bucket``/``_prefix``."""
    return (setting("reelforge_avatar_artifacts_bucket", "reelforge-artifacts"),
            _prefix(setting("reelforge_avatar_artifacts_prefix", "avatar/")))


@dataclass(frozen=True)
class AvatarSettings:
    image_uri: str  # the avatar container (preprocess entry)
    role_arn: str  # SageMaker execution role of jobs and endpoints
    ingest_bucket: str
    ingest_prefix: str
    artifacts_bucket: str
    artifacts_prefix: str
    output_bucket: str
    output_prefix: str
    finetune_endpoint: str
    mme_endpoint: str
    mme_bucket: str
    mme_prefix: str
    topic_arn: str
    user_topic_arn: str
    base_model_id: str
    base_model_revision: str
    learning_rate: float
    gradient_accumulation_steps: int
    mixed_precision: str
    seed: int
    negative_prompt: str
    sample_steps: int
    guidance: float
    prep_instance_type: str
    processing_volume_gb: int
    min_selfies: int
    max_selfies: int
    max_selfie_bytes: int
    max_total_bytes: int
    max_package_bytes: int
    finetune_timeout_s: int
    poll_interval_s: int
    link_expiry_s: int
    # endpoint lifecycle (avatar_endpoints)
    finetune_image_uri: str
    base_model_uri: str
    triton_image_uri: str
    finetune_instance_type: str
    mme_instance_type: str
    mme_instance_count: int
    async_max_instances: int
    async_output_prefix: str
    async_topic_arn: str
    # invocation-time estimates (seconds) behind reelforge.avatar.limits
    finetune_setup_s: float
    finetune_class_image_s: float
    finetune_step_s: float
    sample_step_s: float
    sample_overhead_s: float


def avatar_settings() -> AvatarSettings:
    topic = required(TOPIC_VARIABLE, "the avatar SNS topic ARN")
    artifacts_bucket, artifacts_prefix = artifacts_location()
    ingest_bucket, ingest_prefix = ingest_location()
    image = required("reelforge_avatar_image_uri", "the avatar image in ECR")
    return AvatarSettings(
        image_uri=image,
        role_arn=required("reelforge_avatar_role_arn", "the SageMaker execution role of the avatar jobs"),
        ingest_bucket=ingest_bucket,
        ingest_prefix=ingest_prefix,
        artifacts_bucket=artifacts_bucket,
        artifacts_prefix=artifacts_prefix,
        output_bucket=setting("reelforge_avatar_output_bucket", "reelforge-output"),
        output_prefix=_prefix(setting("reelforge_avatar_output_prefix", "avatar/")),
        finetune_endpoint=setting("reelforge_avatar_finetune_endpoint", "reelforge-avatar-finetune"),
        mme_endpoint=setting("reelforge_avatar_mme_endpoint", "reelforge-avatar-mme"),
        mme_bucket=setting("reelforge_avatar_mme_bucket", artifacts_bucket),
        mme_prefix=_prefix(setting("reelforge_avatar_mme_prefix", f"{artifacts_prefix}mme/models/")),
        topic_arn=topic,
        user_topic_arn=setting("reelforge_avatar_user_topic_arn", topic),
        base_model_id=setting("reelforge_avatar_base_model_id", "stabilityai/stable-diffusion-2-1-base"),
        # The commit containers/avatar pins (reelforge_avatar.base_model.PRODUCTION_BASE_REVISION).
        base_model_revision=setting("reelforge_avatar_base_model_revision", "5ede9e4bf3e3fd1cb0ef2f7a3fff13ee514fdf06"),
        learning_rate=float(setting("reelforge_avatar_learning_rate", "1e-4")),
        gradient_accumulation_steps=int(setting("reelforge_avatar_gradient_accumulation_steps", "1")),
        mixed_precision=setting("reelforge_avatar_mixed_precision", "fp16"),
        seed=int(setting("reelforge_avatar_seed", "0")),
        negative_prompt=setting("reelforge_avatar_negative_prompt",
                                "blurry, deformed, disfigured, extra limbs, text, watermark"),
        sample_steps=int(setting("reelforge_avatar_sample_steps", "30")),
        guidance=float(setting("reelforge_avatar_guidance", "7.5")),
        prep_instance_type=setting("reelforge_avatar_prep_instance_type", "ml.m5.xlarge"),
        processing_volume_gb=int(setting("reelforge_avatar_processing_volume_gb", "30")),
        min_selfies=int(setting("reelforge_avatar_min_selfies", "10")),  # = usable faces the container requires
        max_selfies=int(setting("reelforge_avatar_max_selfies", "40")),
        max_selfie_bytes=int(setting("reelforge_avatar_max_selfie_bytes", str(20 * 1024**2))),
        max_total_bytes=int(setting("reelforge_avatar_max_total_bytes", str(300 * 1024**2))),
        max_package_bytes=int(setting("reelforge_avatar_max_package_bytes", str(2 * 1024**3))),
        finetune_timeout_s=int(setting("reelforge_avatar_finetune_timeout_s", str(4 * 3600))),
        poll_interval_s=int(setting("reelforge_avatar_poll_interval_s", "30")),
        link_expiry_s=int(setting("reelforge_avatar_link_expiry_s", str(7 * 24 * 3600))),
        finetune_image_uri=setting("reelforge_avatar_finetune_image_uri", image),
        # The base pipeline folder (with reelforge_base.json, `reelforge-avatar stamp-base`) as model.tar.gz.
        base_model_uri=setting("reelforge_avatar_base_model_uri",
                               f"s3://{artifacts_bucket}/{artifacts_prefix}base/sd21-base.tar.gz"),
        # Our image (containers/avatar/Dockerfile.triton, pushed beside image_uri): SageMaker's own Triton image
        # has none of our models' code.
        triton_image_uri=setting("reelforge_avatar_triton_image_uri", triton_image_beside(image)),
        finetune_instance_type=setting("reelforge_avatar_finetune_instance_type", "ml.g4dn.xlarge"),
        mme_instance_type=setting("reelforge_avatar_mme_instance_type", "ml.g4dn.xlarge"),
        mme_instance_count=int(setting("reelforge_avatar_mme_instance_count", "1")),
        async_max_instances=int(setting("reelforge_avatar_async_max_instances", "2")),
        async_output_prefix=_prefix(setting("reelforge_avatar_async_output_prefix", f"{artifacts_prefix}async/")),
        async_topic_arn=setting("reelforge_avatar_async_topic_arn", topic),
        # Estimates for ml.g4dn.xlarge (T4, fp16, 512 px); measure and set them for the instance types you use.
        finetune_setup_s=float(setting("reelforge_avatar_finetune_setup_s", "300")),
        finetune_class_image_s=float(setting("reelforge_avatar_finetune_class_image_s", "4")),
        finetune_step_s=float(setting("reelforge_avatar_finetune_step_s", "0.9")),
        sample_step_s=float(setting("reelforge_avatar_sample_step_s", "0.15")),
        sample_overhead_s=float(setting("reelforge_avatar_sample_overhead_s", "3")),
    )
