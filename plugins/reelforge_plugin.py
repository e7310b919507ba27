"""The ``reelforge`` Airflow plugin: registers what Airflow must find by name (deadline references)."""

from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin

from reelforge.deadlines import RunQueuedDeadline


class ReelForgePlugin(AirflowPlugin):
    name = "reelforge"
    deadline_references = [RunQueuedDeadline]
