"""The one place that turns Airflow Variables, connection ids and env into typed settings.

Variables are named ``reelforge_<workflow>_<setting>`` (``reelforge_<setting>`` when shared). Read
them inside tasks, never at DAG parse time (:func:`setting` calls ``Variable.get``). Each workflow's own
settings live in its package's ``settings.py``; this module holds what they share.
"""

from __future__ import annotations

import os
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
