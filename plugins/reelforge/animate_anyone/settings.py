"""Deployment settings of the AnimateAnyone workflow (Airflow Variables ``reelforge_animate_anyone_*``).

Read inside tasks only (:func:`aa_settings` calls ``Variable.get``). The defaults match the local
stack; production sets at least the tracking URI (the SageMaker managed MLflow tracking server
ARN), the container image and the partition/GPU settings of the HyperPod cluster.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from datetime import timedelta

from reelforge.settings import required, setting
from reelforge.storage import folder

PREFIX = "reelforge_animate_anyone_"
TOPIC_VARIABLE = "reelforge_animate_anyone_topic_arn"
#: The training DAG's id and ``max_active_runs`` (its upload reconciler reads both).
DAG_ID = "animate_anyone_training"
MAX_ACTIVE_RUNS = 4
#: The local stack's MLflow tracking server (tests start it; see containers/animate_anyone/README.md).
AA_MLFLOW_DEFAULT = "http://127.0.0.1:5055"


def aa_manifest_queue_url() -> str | None:
    """SQS queue receiving the S3 notifications of new training-data manifests (env, parse time)."""
    return os.environ.get("REELFORGE_AA_MANIFEST_QUEUE_URL") or None


def aa_deadline() -> timedelta:
    """How long a training run may take after it is queued before the deadline alert (parse time)."""
    return timedelta(minutes=int(os.environ.get("REELFORGE_AA_DEADLINE_MINUTES", 3 * 24 * 60)))


def aa_poll_interval() -> float:
    """Seconds between Slurm state polls of the training jobs (parse time; tests shorten it)."""
    return float(os.environ.get("REELFORGE_AA_POLL_SECONDS", "30"))


def manifest_location() -> tuple[str, str]:
    """Where training-data manifests are uploaded: ``reelforge_animate_anyone_manifest_bucket``/``_prefix``."""
    return (setting(PREFIX + "manifest_bucket", "reelforge-ingest"),
            folder(setting(PREFIX + "manifest_prefix", "animate-anyone/manifests/")))


def output_location() -> tuple[str, str]:
    """Checkpoints, exports and the intake ledger: ``reelforge_animate_anyone_output_bucket``/``_prefix``."""
    return (setting(PREFIX + "output_bucket", "reelforge-output"),
            folder(setting(PREFIX + "output_prefix", "animate-anyone/")))


@dataclass(frozen=True)
class AASettings:
    cluster_work_root: str
    output_bucket: str
    output_prefix: str
    topic_arn: str
    mlflow_tracking_uri: str
    mlflow_experiment: str
    venv: str
    container_image: str
    container_mounts: str
    code_dir: str
    model_dir: str
    launcher: str
    deepspeed_config: str
    partition: str
    export_partition: str
    gres: str
    gpus_per_node: int
    cpus_per_task: int
    time_limit_stage1: str
    time_limit_stage2: str
    sbatch_args: tuple[str, ...]
    auto_resume: str
    max_sweep_runs: int
    max_nodes: int
    max_manifest_bytes: int


def aa_settings() -> AASettings:
    def s(name: str, default: str) -> str:
        return setting(PREFIX + name, default)

    extra = json.loads(s("sbatch_args", "[]"))
    if not isinstance(extra, list) or not all(isinstance(a, str) and a.startswith("-") for a in extra):
        raise ValueError(f"{PREFIX}sbatch_args must be a JSON list of sbatch options, got {extra!r}")
    output_bucket, output_prefix = output_location()
    return AASettings(
        cluster_work_root=setting("reelforge_cluster_work_root", "/fsx/reelforge"),
        output_bucket=output_bucket,
        output_prefix=output_prefix,
        topic_arn=required(TOPIC_VARIABLE, "the AnimateAnyone SNS topic ARN"),
        mlflow_tracking_uri=s("mlflow_tracking_uri", AA_MLFLOW_DEFAULT),
        mlflow_experiment=s("mlflow_experiment", "reelforge-animate-anyone"),
        venv=s("venv", "/opt/reelforge/animate-anyone-venv"),
        container_image=s("container_image", ""),
        container_mounts=s("container_mounts", "/fsx:/fsx"),
        code_dir=s("code_dir", "/opt/Moore-AnimateAnyone"),
        model_dir=s("model_dir", "/fsx/models/animate-anyone"),
        launcher=s("launcher", "accelerate"),
        deepspeed_config=s("deepspeed_config", ""),
        partition=s("partition", "gpu"),
        export_partition=s("export_partition", "cpu"),
        gres=s("gres", ""),
        gpus_per_node=int(s("gpus_per_node", "1")),
        cpus_per_task=int(s("cpus_per_task", "1")),
        time_limit_stage1=s("time_limit_stage1", "2-00:00:00"),
        time_limit_stage2=s("time_limit_stage2", "2-00:00:00"),
        sbatch_args=tuple(extra),
        auto_resume=s("auto_resume", "auto"),
        max_sweep_runs=int(s("max_sweep_runs", "16")),
        max_nodes=int(s("max_nodes", "16")),
        max_manifest_bytes=int(s("max_manifest_bytes", str(64 * 1024**2))),
    )
