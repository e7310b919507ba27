"""Deployment settings of the super-resolution workflows (Variables ``reelforge_sr_<name>``).

Read them inside tasks, never at parse time; the few values DAG files need while parsing (the SQS
queue, the reconcile period) come from the environment (no database access).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

from reelforge.settings import required, setting

TOPIC_VARIABLE = "reelforge_sr_topic_arn"


def ingest_queue_url() -> str | None:
    """SQS queue that receives the ingest bucket's S3 notifications (env: read at parse time, no DB)."""
    return os.environ.get("REELFORGE_SR_INGEST_QUEUE_URL") or None


#: The SR DAG's id: the DAGs and tasks that start or watch its runs name it through this.
DAG_ID = "video_super_resolution"
#: The SR DAG's ``max_active_runs``: the reconciler reads the same number to tell a backlog.
MAX_ACTIVE_RUNS = 16


def reconcile_interval() -> timedelta:
    """How often the SR reconciler lists the ingest prefix (parse time; ``REELFORGE_SR_RECONCILE_SECONDS``).

    A lost notification is recovered within this period plus the grace period.
    """
    return timedelta(seconds=int(os.environ.get("REELFORGE_SR_RECONCILE_SECONDS", 300)))


@dataclass(frozen=True)
class SRSettings:
    """Deployment settings of the super-resolution workflow."""

    ingest_bucket: str
    ingest_prefix: str
    output_bucket: str
    output_prefix: str
    topic_arn: str
    cluster_work_root: str
    worker_venv: str
    model_dir: str
    container_image: str
    cpu_partition: str
    gpu_partition: str
    gpu_gres: str
    array_throttle: int
    max_source_bytes: int
    reconcile_grace_seconds: int = 120
    reconcile_overlap_seconds: int = 12 * 3600
    reconcile_backlog_grace_seconds: int = 3600


def sr_mpix_per_second() -> float:
    """The cluster's measured SR throughput per task (input megapixels per second): time limits and estimates."""
    return float(setting("reelforge_sr_mpix_per_second", "2.0"))


def sr_task_startup_seconds() -> float:
    """What one upscale task spends before its first frame (Python, torch, weights, ffmpeg): estimates."""
    return float(setting("reelforge_sr_task_startup_seconds", "5"))


def sr_parallel_tasks() -> float | None:
    """How many upscale tasks the cluster runs at full speed at once (estimates; ``bench/eta.py`` measures it).
    Unset or 0: every array task at once runs at full speed (a GPU or its own cores per task)."""
    value = float(setting("reelforge_sr_parallel_tasks", "0"))
    return value if value > 0 else None


def sr_settings() -> SRSettings:
    """Read the SR settings (Variables, else defaults that match the local stack)."""
    return SRSettings(
        ingest_bucket=setting("reelforge_sr_ingest_bucket", "reelforge-ingest"),
        ingest_prefix=setting("reelforge_sr_ingest_prefix", "sr/incoming/"),
        output_bucket=setting("reelforge_sr_output_bucket", "reelforge-output"),
        output_prefix=setting("reelforge_sr_output_prefix", "sr/"),
        topic_arn=required(TOPIC_VARIABLE, "the SR SNS topic ARN"),
        cluster_work_root=setting("reelforge_cluster_work_root", "/fsx/reelforge"),
        worker_venv=setting("reelforge_sr_worker_venv", "/opt/reelforge/worker-venv"),
        model_dir=setting("reelforge_model_dir", "/fsx/models"),
        container_image=setting("reelforge_sr_container_image", ""),
        cpu_partition=setting("reelforge_sr_cpu_partition", "cpu"),
        gpu_partition=setting("reelforge_sr_gpu_partition", "gpu"),
        gpu_gres=setting("reelforge_sr_gpu_gres", ""),
        array_throttle=int(setting("reelforge_sr_array_throttle", "8")),
        max_source_bytes=int(setting("reelforge_sr_max_source_bytes", str(50 * 1024**3))),
        reconcile_grace_seconds=int(setting("reelforge_sr_reconcile_grace_seconds", "120")),
        reconcile_overlap_seconds=int(setting("reelforge_sr_reconcile_overlap_seconds", str(12 * 3600))),
        reconcile_backlog_grace_seconds=int(setting("reelforge_sr_reconcile_backlog_grace_seconds", "3600")),
    )
