"""The test-only AWS call recorder (tests/support/aws_recorder): one JSON line per operation, with its DAG task."""

from __future__ import annotations

import asyncio
import importlib.util
import json
from pathlib import Path

import botocore.session
from botocore.stub import Stubber

SPEC = importlib.util.spec_from_file_location(
    "reelforge_aws_recorder", Path(__file__).resolve().parents[1] / "support" / "aws_recorder" /
    "reelforge_aws_recorder.py")
recorder = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(recorder)


class BaseOperator:  # what the recorder looks for on the stack (by class name, as Airflow's)
    def __init__(self, dag_id: str, task_id: str) -> None:
        self.dag_id, self.task_id = dag_id, task_id

    def execute(self, client) -> None:
        client.list_training_jobs(NameContains="reelforge-sg2-train-x", MaxResults=50)


def _session() -> botocore.session.Session:
    session = botocore.session.get_session()
    session.register("before-parameter-build", recorder.record)
    return session


def test_records_operation_resource_and_the_task_on_the_stack(tmp_path, monkeypatch):
    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv(recorder.ENV, str(log))
    client = _session().create_client("sagemaker", region_name="us-east-1", aws_access_key_id="k",
                                      aws_secret_access_key="s")  # noqa: S106
    with Stubber(client) as stub:
        stub.add_response("list_training_jobs", {"TrainingJobSummaries": []})
        BaseOperator("stylegan2_training", "train").execute(client)
    s3 = _session().create_client("s3", region_name="us-east-1", aws_access_key_id="k", aws_secret_access_key="s")
    s3.generate_presigned_url("get_object", Params={"Bucket": "reelforge-ingest", "Key": "sr/incoming/a.mp4"})
    first, second = (json.loads(line) for line in log.read_text().splitlines())
    assert (first["service"], first["operation"], first["dag_id"], first["task_id"]) == (
        "sagemaker", "ListTrainingJobs", "stylegan2_training", "train")
    assert first["params"] == {"NameContains": "reelforge-sg2-train-x"}
    assert (second["operation"], second["presign"], second["params"]["Key"]) == ("GetObject", True,
                                                                                "sr/incoming/a.mp4")


def test_aiobotocore_clients_are_recorded_too(tmp_path, monkeypatch):
    from aiobotocore.session import get_session

    log = tmp_path / "calls.jsonl"
    monkeypatch.setenv(recorder.ENV, str(log))

    async def call() -> None:
        session = get_session()
        session.register("before-parameter-build", recorder.record)
        async with session.create_client("sqs", region_name="us-east-1", aws_access_key_id="k",
                                         aws_secret_access_key="s") as client:  # noqa: S106
            with Stubber(client) as stub:
                stub.add_response("receive_message", {"Messages": []})
                await client.receive_message(QueueUrl="https://sqs.us-east-1.amazonaws.com/1/reelforge-sr-ingest-events")

    asyncio.run(call())
    (entry,) = (json.loads(line) for line in log.read_text().splitlines())
    assert (entry["service"], entry["operation"]) == ("sqs", "ReceiveMessage")
    assert entry["params"]["QueueUrl"].endswith("/reelforge-sr-ingest-events")


def test_nothing_is_written_without_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv(recorder.ENV, raising=False)
    client = _session().create_client("s3", region_name="us-east-1", aws_access_key_id="k",
                                      aws_secret_access_key="s")  # noqa: S106
    client.generate_presigned_url("get_object", Params={"Bucket": "b", "Key": "k"})
    assert list(tmp_path.iterdir()) == []
