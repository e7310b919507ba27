"""What every ReelForge DAG shares, written once: retries, the failure message on the workflow's SNS
topic, and the event-driven schedule from an SQS queue of S3 notifications.

A DAG file then reads like configuration::

    default_args = dag_defaults.default_args(owner="media-platform", retries=3, retry_seconds=30,
                                             max_retry_delay=timedelta(minutes=15), topic_variable=TOPIC_VARIABLE,
                                             event="sr_failed", title="ReelForge SR failed")
    schedule = dag_defaults.queue_schedule("reelforge-sr-ingest", "sr_ingest_queue", ingest_queue_url())

(The deadline, the same for every DAG, is :func:`reelforge.deadlines.deadline_alert`.)
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from reelforge.settings import AWS_CONN_ID, retry_delay, variable_template

#: Every failure message carries these (subscribers parse them): Jinja, rendered when the task fails.
FAILURE_FIELDS: dict[str, str] = {
    "dag_id": '"{{ dag.dag_id }}"',
    "run_id": '"{{ run_id }}"',
    "task_id": '"{{ ti.task_id }}"',
    "map_index": "{{ ti.map_index }}",
    "try_number": "{{ ti.try_number }}",
    "reason": "{{ (exception | string) | tojson }}",
    "log": "{{ ti.log_url | tojson }}",
}


def failure_message(event: str, extra: Mapping[str, str] | None = None) -> str:
    """The JSON failure message (a template): ``event``, :data:`FAILURE_FIELDS` and ``extra`` (name → Jinja
    that renders to a JSON value)."""
    fields = {**FAILURE_FIELDS, **(extra or {})}
    return "{" + ", ".join([f'"event": {json.dumps(event)}', *(f'"{k}": {v}' for k, v in fields.items())]) + "}"


def _notifier(*, topic_variable: str, event: str, subject: str, message: str) -> Any:
    """An ``SnsNotifier`` to the topic the Variable ``topic_variable`` names (rendering fails, naming it, when
    unset), attribute ``event``; ``subject`` and ``message`` may be templates."""
    from airflow.providers.amazon.aws.notifications.sns import SnsNotifier

    return SnsNotifier(aws_conn_id=AWS_CONN_ID, target_arn=variable_template(topic_variable), subject=subject,
                       message=message, message_attributes={"event": event})


def failure_notifier(*, topic_variable: str, event: str, title: str, extra: Mapping[str, str] | None = None) -> Any:
    """The failure message (:func:`failure_message`), subject ``<title>: <run id>``."""
    return _notifier(topic_variable=topic_variable, event=event, subject=title + ": {{ dag_run.run_id[:50] }}",
                     message=failure_message(event, extra))


def success_notifier(*, topic_variable: str, event: str, subject: str, message_from: str) -> Any:
    """For a task's ``on_success_callback``: the message is what task ``message_from`` returned (XCom)."""
    return _notifier(topic_variable=topic_variable, event=event, subject=subject,
                     message="{{ ti.xcom_pull(task_ids='" + message_from + "') }}")


def default_args(*, owner: str, retries: int, retry_seconds: int, max_retry_delay: timedelta, topic_variable: str,
                 event: str, title: str, extra: Mapping[str, str] | None = None) -> dict[str, Any]:
    """``default_args``: retries with exponential backoff and the failure notifier."""
    return {
        "owner": owner,
        "retries": retries,
        "retry_delay": retry_delay(retry_seconds),
        "retry_exponential_backoff": True,
        "max_retry_delay": max_retry_delay,
        "on_failure_callback": failure_notifier(topic_variable=topic_variable, event=event, title=title, extra=extra),
    }


def queue_schedule(asset: str, watcher: str, queue_url: str | None, *, waiter_delay: int = 2) -> list[Any] | None:
    """An asset fed by the SQS queue of S3 notifications (polled every ``waiter_delay`` s when idle); ``None``
    (no schedule) when no queue is configured: the workflow's upload reconciler and its form start runs then."""
    if not queue_url:
        return None
    from airflow.providers.common.messaging.triggers.msg_queue import MessageQueueTrigger
    from airflow.sdk import Asset, AssetWatcher

    trigger = MessageQueueTrigger(scheme="sqs", sqs_queue=queue_url, aws_conn_id=AWS_CONN_ID, max_messages=1,
                                  waiter_delay=waiter_delay)
    return [Asset(asset, watchers=[AssetWatcher(name=watcher, trigger=trigger)])]
