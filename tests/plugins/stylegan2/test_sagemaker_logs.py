"""A finished SageMaker job's CloudWatch logs in the task log (moto's CloudWatch Logs, in process)."""

from __future__ import annotations

import time
from types import SimpleNamespace

import boto3
import pytest
from moto import mock_aws

from reelforge import sagemaker_logs
from reelforge.sagemaker_logs import copy_job_logs, job_of, print_job_logs

GROUP = "/aws/sagemaker/TrainingJobs"
RESULT = {"Training": {"TrainingJobName": "sg2-run-train", "TrainingJobStatus": "Completed"}}


@pytest.fixture
def logs(monkeypatch):
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.setenv(key, "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("logs", region_name="us-east-1")
        client.create_log_group(logGroupName=GROUP)
        yield client


class Recorder:
    """A logger that keeps the formatted messages (Airflow's logging setup bypasses caplog)."""

    def __init__(self) -> None:
        self.messages: list[str] = []

    def info(self, msg: str, *args: object) -> None:
        self.messages.append(msg % args)

    warning = info


def write(client, stream: str, messages: list[str]) -> None:
    client.create_log_stream(logGroupName=GROUP, logStreamName=stream)
    now = int(time.time() * 1000)  # CloudWatch refuses events older than 14 days
    events = [{"timestamp": now + i, "message": m} for i, m in enumerate(messages)]
    client.put_log_events(logGroupName=GROUP, logStreamName=stream, logEvents=events)


def test_job_of_reads_the_operators_return_value():
    assert job_of(RESULT) == ("Training", "sg2-run-train")
    assert job_of({"Processing": {"ProcessingJobName": "prep"}}) == ("Processing", "prep")
    assert job_of({"Training": {}}) is None and job_of(None) is None


def test_each_stream_of_the_job_becomes_a_section_with_its_tail(logs):
    write(logs, "sg2-run-train/algo-1-1700000000", [f"tick {i}: loss {1 / (i + 1):.3f}" for i in range(12)])
    write(logs, "sg2-run-train/algo-2-1700000000", ["other instance"])
    write(logs, "sg2-run-train-other/algo-1-1700000000", ["another job: not copied"])
    out = Recorder()
    assert copy_job_logs(logs, "Training", "sg2-run-train", out, max_lines=5) == 2
    messages = out.messages
    assert messages[0] == "::group::SageMaker training log sg2-run-train/algo-1-1700000000 (5 lines, first 7 left out)"
    assert messages[1:6] == [f"tick {i}: loss {1 / (i + 1):.3f}" for i in range(7, 12)]
    assert messages[6] == "::endgroup::"
    assert messages[7:] == ["::group::SageMaker training log sg2-run-train/algo-2-1700000000 (1 lines)",
                            "other instance", "::endgroup::"]


def test_a_job_without_logs_is_said_so(logs):
    out = Recorder()
    assert copy_job_logs(logs, "Training", "nothing-here", out) == 0
    assert out.messages == ["No CloudWatch log streams for SageMaker training job nothing-here in " + GROUP]


def test_the_post_execute_hook_never_fails_the_task(monkeypatch):
    task = SimpleNamespace(aws_conn_id=None, region_name="us-east-1", log=Recorder())

    def broken(*args, **kwargs):
        raise RuntimeError("CloudWatch Logs unreachable")

    monkeypatch.setattr(sagemaker_logs, "copy_job_logs", broken)
    print_job_logs({"task": task}, RESULT)
    print_job_logs({"task": task}, {"not": "a job"})
    assert task.log.messages == ["Could not copy the CloudWatch logs of SageMaker training job sg2-run-train: "
                               "CloudWatch Logs unreachable"]
