"""SnsPublishOnceOperator: a retry of a try that already published does not publish again (moto)."""

from __future__ import annotations

import json
from types import SimpleNamespace

import boto3
import pytest
from moto import mock_aws

from reelforge.operators.sns_once import SnsPublishOnceOperator


@pytest.fixture
def aws(monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        s3, sns, sqs = (boto3.client(name, region_name="us-east-1") for name in ("s3", "sns", "sqs"))
        s3.create_bucket(Bucket="output")
        topic = sns.create_topic(Name="sr")["TopicArn"]
        queue = sqs.create_queue(QueueName="inbox")["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=queue, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn)  # SNS's envelope: its MessageId, the Message

        def inbox() -> list[tuple[str, str]]:
            got = sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10).get("Messages", [])
            return [(e["MessageId"], e["Message"]) for e in (json.loads(m["Body"]) for m in got)]

        yield SimpleNamespace(s3=s3, topic=topic, inbox=inbox)


def publish(aws, receipt: str, run_id: str, try_number: int) -> str:
    op = SnsPublishOnceOperator(task_id="notify_success", aws_conn_id=None, target_arn=aws.topic,
                                message='{"job_id": "j1"}', receipt_uri=receipt)
    return op.execute({"ti": SimpleNamespace(run_id=run_id, try_number=try_number)})


def test_a_retry_of_the_same_run_returns_the_first_message_id_and_publishes_nothing(aws):
    receipt = "s3://output/sr/_announced/j1/run-1.json"
    first = publish(aws, receipt, "run-1", 1)
    again = publish(aws, receipt, "run-1", 2)
    assert isinstance(first, str) and again == first
    assert aws.inbox() == [(first, '{"job_id": "j1"}')]
    recorded = json.loads(aws.s3.get_object(Bucket="output", Key="sr/_announced/j1/run-1.json")["Body"].read())
    assert (recorded["message_id"], recorded["run_id"], recorded["try_number"]) == (first, "run-1", 1)


def test_another_run_publishes_its_own_message(aws):
    first = publish(aws, "s3://output/sr/_announced/j1/run-1.json", "run-1", 1)
    forced = publish(aws, "s3://output/sr/_announced/j1/run-2.json", "run-2", 1)
    assert sorted(aws.inbox()) == sorted([(first, '{"job_id": "j1"}'), (forced, '{"job_id": "j1"}')])


def test_a_receipt_it_cannot_read_fails_the_task_rather_than_publishing_blind(aws):
    with pytest.raises(Exception, match="NoSuchBucket"):
        publish(aws, "s3://no-such-bucket/sr/_announced/j1/run-1.json", "run-1", 1)
    assert aws.inbox() == []
