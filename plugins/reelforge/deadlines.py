"""Deadline references of our own, registered by the ``reelforge`` Airflow plugin.

``RunQueuedDeadline`` measures a run's deadline from when it was queued, like Airflow's
``DeadlineReference.DAGRUN_QUEUED_AT``. We use it instead because Airflow 3.3.2 fails to clear a
run (UI "Clear", REST ``clearTaskInstances``) of a DAG with a ``DAGRUN_QUEUED_AT`` deadline:
``_recalculate_dagrun_queued_at_deadlines`` passes the stored (serialised) interval to
``timedelta(seconds=...)`` and raises ``TypeError``. Clearing a run is how users retry, so the
built-in reference is not usable for us. The deadline of a cleared run keeps its first time.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from airflow.sdk.definitions.deadline import BaseDeadlineReference


class RunQueuedDeadline(BaseDeadlineReference):
    """The run's ``queued_at`` (else its ``run_after``), evaluated when the run is created."""

    required_kwargs = {"dag_id", "run_id"}

    def _evaluate_with(self, *, session: Any, dag_id: str, run_id: str, **kwargs: Any) -> datetime | None:
        from airflow.models.dagrun import DagRun
        from sqlalchemy import select

        run = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, DagRun.run_id == run_id))
        if run is None:
            return None
        return run.queued_at or run.run_after or run.start_date


def deadline_alert(workflow: str, *, interval: Any, topic_variable: str) -> Any:
    """The one deadline every DAG uses: :class:`RunQueuedDeadline` plus an SNS alert to the workflow's
    topic, read from the Variable ``topic_variable`` when the alert fires."""
    from airflow.sdk import AsyncCallback, DeadlineAlert

    from reelforge.settings import AWS_CONN_ID

    return DeadlineAlert(
        reference=RunQueuedDeadline(),
        interval=interval,
        callback=AsyncCallback(
            "reelforge.notifiers.deadline.notify_deadline_missed",
            kwargs={"topic_variable": topic_variable, "aws_conn_id": AWS_CONN_ID, "workflow": workflow},
        ),
    )
