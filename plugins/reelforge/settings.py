"""The one place that turns Airflow Variables, connection ids and env into typed settings.

Variables are named ``reelforge_<workflow>_<setting>`` (``reelforge_<setting>`` when shared). Read
them inside tasks, never at DAG parse time: :func:`sr_settings` calls ``Variable.get``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import timedelta

AWS_CONN_ID = os.environ.get("REELFORGE_AWS_CONN_ID", "aws_default")
SLURM_CONN_ID = os.environ.get("REELFORGE_SLURM_CONN_ID", "slurm_ssh")
HYPERPOD_CONN_ID = os.environ.get("REELFORGE_HYPERPOD_CONN_ID", "hyperpod_ssh")

def retry_delay(default_seconds: int) -> timedelta:
    """First retry delay of a workflow's tasks; ``REELFORGE_RETRY_DELAY_SECONDS`` overrides it (tests)."""
    return timedelta(seconds=int(os.environ.get("REELFORGE_RETRY_DELAY_SECONDS", default_seconds)))


def wait_before_defer(default_seconds: float = 30.0) -> float:
    """Seconds a Slurm step is watched from its task before deferring (parse time).

    ``REELFORGE_SLURM_WAIT_BEFORE_DEFER_SECONDS`` overrides it; 0 defers at once.
    """
    return float(os.environ.get("REELFORGE_SLURM_WAIT_BEFORE_DEFER_SECONDS", default_seconds))


def deadline_interval(workflow: str = "", default_minutes: int = 360) -> timedelta:
    """How long after it is queued a run may take before the deadline alert fires.

    Read at parse time from ``REELFORGE_<WORKFLOW>_DEADLINE_SECONDS`` (a run's length is not known
    when Airflow computes the deadline, at run creation; the SR array's Slurm time limits do scale
    with the video).
    """
    name = f"{workflow.upper().replace('-', '_')}_" if workflow else ""
    env = f"REELFORGE_{name}DEADLINE_SECONDS"
    return timedelta(seconds=int(os.environ.get(env, default_minutes * 60)))


class MissingSettingError(RuntimeError):
    """A setting without a safe default (an account's ARN, role or image) is not configured."""


def required(key: str, what: str) -> str:
    """A Variable that names something in an AWS account: no default, so a deployment that misses it
    fails at once, saying what to set, instead of talking to another account."""
    from airflow.sdk import Variable

    value = Variable.get(key, default=None)
    if value in (None, ""):
        raise MissingSettingError(f"Airflow Variable {key!r} ({what}) is not set: set it, or export "
                                  f"AIRFLOW_VAR_{key.upper()} (the local stack's env.sh sets it)")
    return str(value)


def variable_template(key: str) -> str:
    """Jinja for a required Variable in a templated field: rendering fails, naming it, when it is unset."""
    return "{{ var.value." + key + " }}"


SR_TOPIC_VARIABLE = "reelforge_sr_topic_arn"


def sr_ingest_queue_url() -> str | None:
    """SQS queue that receives the ingest bucket's S3 notifications (env: read at parse time, no DB)."""
    return os.environ.get("REELFORGE_SR_INGEST_QUEUE_URL") or None


#: The SR DAG's id: the DAGs and tasks that start or watch its runs name it through this.
SR_DAG_ID = "video_super_resolution"
#: The SR DAG's ``max_active_runs``: the reconciler reads the same number to tell a backlog.
SR_MAX_ACTIVE_RUNS = 16


def sr_reconcile_interval() -> timedelta:
    """How often the SR reconciler lists the ingest prefix (parse time; ``REELFORGE_SR_RECONCILE_SECONDS``).

    A lost notification is recovered within this period plus the grace period.
    """
    return timedelta(seconds=int(os.environ.get("REELFORGE_SR_RECONCILE_SECONDS", 300)))


#: Tags a DAG may carry (the integrity test holds every DAG to this list).
DAG_TAGS = frozenset(
    {"reelforge", "slurm", "super-resolution", "stylegan2", "avatar", "animate-anyone", "maintenance",
     "backfill"}
)


def setting(key: str, default: str) -> str:
    """One Variable as a string, its default when unset or empty."""
    from airflow.sdk import Variable

    value = Variable.get(key, default=default)
    return default if value in (None, "") else str(value)


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


def sr_settings() -> SRSettings:
    """Read the SR settings (Variables, else defaults that match the local stack)."""
    return SRSettings(
        ingest_bucket=setting("reelforge_sr_ingest_bucket", "reelforge-ingest"),
        ingest_prefix=setting("reelforge_sr_ingest_prefix", "sr/incoming/"),
        output_bucket=setting("reelforge_sr_output_bucket", "reelforge-output"),
        output_prefix=setting("reelforge_sr_output_prefix", "sr/"),
        topic_arn=required(SR_TOPIC_VARIABLE, "the SR SNS topic ARN"),
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
