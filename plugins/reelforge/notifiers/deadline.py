"""Deadline-missed callback: an SNS message saying which run is late (runs in the triggerer)."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

log = logging.getLogger(__name__)


def _describe(context: dict[str, Any] | None) -> dict[str, Any]:
    context = context or {}
    dag_run = context.get("dag_run") or {}
    deadline = context.get("deadline") or {}

    def pick(obj: Any, *names: str) -> Any:
        for name in names:
            value = obj.get(name) if isinstance(obj, dict) else getattr(obj, name, None)
            if value is not None:
                return value
        return None

    return {
        "event": "deadline_missed",
        "dag_id": pick(dag_run, "dag_id"),
        "run_id": pick(dag_run, "dag_run_id", "run_id"),
        "deadline": str(pick(deadline, "deadline_time") or ""),
    }


def _topic(target_arn: str, topic_variable: str | None) -> str:
    """The topic ARN from the Variable (the deployment's), else ``target_arn`` if one was given
    (deadlines that Airflow stored before topics became required still carry one)."""
    if not topic_variable:
        return target_arn
    try:
        from airflow.sdk import Variable

        return Variable.get(topic_variable, default=None) or target_arn
    except Exception:  # noqa: BLE001 - no Variable access here: only an explicit ARN can help
        log.exception("could not read the Variable %s", topic_variable)
        return target_arn


async def notify_deadline_missed(
    *,
    topic_variable: str | None = None,
    target_arn: str = "",
    aws_conn_id: str = "aws_default",
    workflow: str = "",
    context: dict | None = None,
) -> None:
    """Publish a late-run alert; never raises past the log (the run itself goes on)."""
    from airflow.providers.amazon.aws.hooks.sns import SnsHook

    target_arn = await asyncio.to_thread(_topic, target_arn, topic_variable)
    body = {**_describe(context), "workflow": workflow}
    if not target_arn:
        log.error("deadline missed, and no topic to say so: set the Variable %s (%s)", topic_variable, body)
        return
    subject = f"ReelForge {workflow}: run {body['run_id']} missed its deadline"[:99]
    try:
        await asyncio.to_thread(
            SnsHook(aws_conn_id=aws_conn_id).publish_to_target,
            target_arn=target_arn,
            message=json.dumps(body),
            subject=subject,
            message_attributes={"event": "deadline_missed"},
        )
    except Exception:  # noqa: BLE001 - an alert must not crash the triggerer
        log.exception("could not publish the deadline alert for %s", body)
