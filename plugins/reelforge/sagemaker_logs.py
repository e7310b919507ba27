"""A finished SageMaker job's CloudWatch logs, copied into the Airflow task log (one section per stream).

The provider's ``print_log=True`` cannot do this for a deferrable operator: it blocks the worker for
``check_interval`` after creating the job, prints what exists by then and defers to a trigger that prints
nothing. :func:`print_job_logs` is a ``post_execute`` hook instead: once the job has ended and the
operator returned its description, it copies the job's log streams (the last ``MAX_LINES`` lines of each)
into the task log. It never fails the task: a job without logs (or logs that cannot be read) gets a line
saying so.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

#: Lines kept from the end of each stream (a long training run logs every tick).
MAX_LINES = 500
#: Streams copied per job (one per instance: ``<job>/algo-1-<timestamp>``).
MAX_STREAMS = 8
_SECTIONS = {"Training": "TrainingJobName", "Processing": "ProcessingJobName"}


def job_of(result: Any) -> tuple[str, str] | None:
    """``(section, job name)`` from a SageMaker operator's return value, ``None`` if it names no job."""
    if not isinstance(result, Mapping):
        return None
    for section, field in _SECTIONS.items():
        described = result.get(section)
        if isinstance(described, Mapping) and described.get(field):
            return section, str(described[field])
    return None


def stream_tail(client: Any, group: str, stream: str, max_lines: int = MAX_LINES) -> tuple[list[str], int]:
    """The last ``max_lines`` messages of a stream (read from its start) and how many were dropped."""
    lines: list[str] = []
    dropped = 0
    kwargs: dict[str, Any] = {"logGroupName": group, "logStreamName": stream, "startFromHead": True}
    while True:
        page = client.get_log_events(**kwargs)
        lines.extend(str(e.get("message", "")).rstrip("\n") for e in page.get("events", []))
        if len(lines) > max_lines:
            dropped += len(lines) - max_lines
            lines = lines[-max_lines:]
        token = page.get("nextForwardToken")
        if not page.get("events") or not token or token == kwargs.get("nextToken"):
            return lines, dropped
        kwargs["nextToken"] = token


def copy_job_logs(client: Any, section: str, job_name: str, out: logging.Logger | Any = log,
                  max_lines: int = MAX_LINES) -> int:
    """Write the job's streams into ``out`` as ``::group::`` sections; the number of streams copied."""
    group = f"/aws/sagemaker/{section}Jobs"
    streams = client.describe_log_streams(logGroupName=group, logStreamNamePrefix=f"{job_name}/",
                                          limit=MAX_STREAMS).get("logStreams", [])
    if not streams:
        out.info("No CloudWatch log streams for SageMaker %s job %s in %s", section.lower(), job_name, group)
    for stream in streams:
        name = stream["logStreamName"]
        lines, dropped = stream_tail(client, group, name, max_lines)
        out.info("::group::SageMaker %s log %s (%d lines%s)", section.lower(), name, len(lines),
                 f", first {dropped} left out" if dropped else "")
        for line in lines:
            out.info("%s", line)
        out.info("::endgroup::")
    return len(streams)


def print_job_logs(context: Mapping[str, Any], result: Any) -> None:
    """``post_execute`` hook for the provider's SageMaker training/processing operators (and our subclasses)."""
    found = job_of(result)
    if found is None:
        return
    section, job_name = found
    task = context["task"]
    try:
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
        from botocore.config import Config

        config = Config(connect_timeout=5, read_timeout=20, retries={"max_attempts": 2})
        client = AwsBaseHook(aws_conn_id=getattr(task, "aws_conn_id", None), region_name=getattr(task, "region_name",
                             None), client_type="logs", config=config).conn
        copy_job_logs(client, section, job_name, task.log)
    except Exception as err:  # the logs are a courtesy: the job's outcome is already decided
        task.log.warning("Could not copy the CloudWatch logs of SageMaker %s job %s: %s", section.lower(), job_name,
                         err)
