"""Deployment settings of the StyleGAN2 workflows (Variables ``reelforge_stylegan2_<name>``).

Defaults never name an AWS account: the topic, role and image are required (the local stack sets
them). Read them inside tasks, never at parse time; the few values DAG files need while parsing come
from the environment (no database access).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

from reelforge.settings import required, setting, variable_template
from reelforge.storage import folder

TOPIC_VARIABLE = "reelforge_stylegan2_topic_arn"
TOPIC_ARN_TEMPLATE = variable_template(TOPIC_VARIABLE)
#: The training DAG's id and ``max_active_runs`` (its upload reconciler reads both).
DAG_ID = "stylegan2_training"
MAX_ACTIVE_RUNS = 4


def deadline_interval(name: str, default_minutes: int) -> timedelta:
    """A DAG's deadline: ``REELFORGE_STYLEGAN2_<NAME>_DEADLINE_MINUTES`` (read at parse time), else the default."""
    env = f"REELFORGE_STYLEGAN2_{name.upper()}_DEADLINE_MINUTES"
    return timedelta(minutes=int(os.environ.get(env, default_minutes)))


def dataset_queue_url() -> str | None:
    """SQS queue receiving the dataset prefix's S3 notifications (env: read at parse time, no DB)."""
    return os.environ.get("REELFORGE_STYLEGAN2_DATASET_QUEUE_URL") or None


def dataset_location() -> tuple[str, str]:
    """Where datasets are uploaded: bucket and folder (``reelforge_stylegan2_dataset_bucket``/``_prefix``)."""
    return (setting("reelforge_stylegan2_dataset_bucket", "reelforge-ingest"),
            folder(setting("reelforge_stylegan2_dataset_prefix", "stylegan2/datasets/")))


def artifacts_location() -> tuple[str, str]:
    """Prepared datasets, checkpoints and the intake ledger: ``reelforge_stylegan2_artifacts_bucket``/``_prefix``."""
    return (setting("reelforge_stylegan2_artifacts_bucket", "reelforge-artifacts"),
            folder(setting("reelforge_stylegan2_artifacts_prefix", "stylegan2/")))


@dataclass(frozen=True)
class StyleGAN2Settings:
    image_uri: str
    role_arn: str
    artifacts_bucket: str
    artifacts_prefix: str
    output_bucket: str
    output_prefix: str
    batch_input_bucket: str
    batch_input_prefix: str
    model_package_group: str
    topic_arn: str
    prep_instance_type: str
    generate_instance_type: str
    training_volume_gb: int
    processing_volume_gb: int


def stylegan2_settings() -> StyleGAN2Settings:
    artifacts_bucket, artifacts_prefix = artifacts_location()
    return StyleGAN2Settings(
        image_uri=required("reelforge_stylegan2_image_uri", "the StyleGAN2 image in ECR"),
        role_arn=required("reelforge_stylegan2_role_arn", "the SageMaker execution role of the StyleGAN2 jobs"),
        artifacts_bucket=artifacts_bucket,
        artifacts_prefix=artifacts_prefix,
        output_bucket=setting("reelforge_stylegan2_output_bucket", "reelforge-output"),
        output_prefix=folder(setting("reelforge_stylegan2_output_prefix", "stylegan2/")),
        batch_input_bucket=setting("reelforge_stylegan2_batch_input_bucket", "reelforge-ingest"),
        batch_input_prefix=folder(setting("reelforge_stylegan2_batch_input_prefix", "stylegan2/batch/incoming/")),
        model_package_group=setting("reelforge_stylegan2_model_package_group", "reelforge-stylegan2"),
        topic_arn=required(TOPIC_VARIABLE, "the StyleGAN2 SNS topic ARN"),
        prep_instance_type=setting("reelforge_stylegan2_prep_instance_type", "ml.m5.2xlarge"),
        generate_instance_type=setting("reelforge_stylegan2_generate_instance_type", "ml.g4dn.xlarge"),
        training_volume_gb=int(setting("reelforge_stylegan2_training_volume_gb", "200")),
        processing_volume_gb=int(setting("reelforge_stylegan2_processing_volume_gb", "100")),
    )
