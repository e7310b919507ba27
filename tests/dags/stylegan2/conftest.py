"""``airflow dags test`` of the StyleGAN2 DAGs against the local AWS endpoint (moto).

The tests share one Airflow home (a fresh SQLite database: no clash with other runs on the
shared local stack) and its own S3 prefixes, model package group and SNS subscription, passed to the
DAGs as ``AIRFLOW_VAR_REELFORGE_STYLEGAN2_*`` variables. moto's SageMaker jobs complete at once and
write nothing, so tests seed what a real job would have written (the prepared dataset, the metrics file).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import boto3
import pytest

ROOT = Path(__file__).resolve().parents[3]
DAGSTEST_DIR = Path(__file__).resolve().parent / "dagstest"
TOPIC = "reelforge-stylegan2-notifications"
AIRFLOW = str(Path(sys.executable).with_name("airflow"))


@dataclass
class Stack:
    """boto3 clients on the local endpoint and this module's namespace."""

    ns: str
    home: Path
    s3: object = field(repr=False)
    sm: object = field(repr=False)
    sns: object = field(repr=False)
    sqs: object = field(repr=False)
    topic_arn: str = ""

    @property
    def artifacts_prefix(self) -> str:
        return f"stylegan2-test-{self.ns}/"

    @property
    def output_prefix(self) -> str:
        return f"stylegan2-test-{self.ns}/"

    @property
    def batch_input_prefix(self) -> str:
        return f"stylegan2-test-{self.ns}/batch/incoming/"

    @property
    def model_package_group(self) -> str:
        return f"reelforge-stylegan2-test-{self.ns}"

    def env(self) -> dict[str, str]:
        return {
            **os.environ,
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGSTEST_DIR),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "REELFORGE_RETRY_DELAY_SECONDS": "1",
            "AIRFLOW_VAR_REELFORGE_STYLEGAN2_ARTIFACTS_PREFIX": self.artifacts_prefix,
            "AIRFLOW_VAR_REELFORGE_STYLEGAN2_OUTPUT_PREFIX": self.output_prefix,
            "AIRFLOW_VAR_REELFORGE_STYLEGAN2_BATCH_INPUT_PREFIX": self.batch_input_prefix,
            "AIRFLOW_VAR_REELFORGE_STYLEGAN2_MODEL_PACKAGE_GROUP": self.model_package_group,
            "AIRFLOW_VAR_REELFORGE_STYLEGAN2_TOPIC_ARN": self.topic_arn,
        }

    def dags_test(self, dag_id: str, logical_date: str, conf: dict | None = None,
                  env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
        argv = [AIRFLOW, "dags", "test", dag_id, logical_date]
        if conf is not None:
            argv += ["-c", json.dumps(conf)]
        return subprocess.run(argv, env={**self.env(), **(env or {})}, cwd=self.home, capture_output=True, text=True,
                              timeout=300)


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> Stack:
    endpoint = os.environ.get("REELFORGE_AWS_ENDPOINT_URL")
    if not endpoint:
        pytest.skip("no local AWS endpoint")
    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                    region_name="us-east-1")
    clients = {attr: session.client(service, endpoint_url=endpoint)
               for attr, service in (("s3", "s3"), ("sm", "sagemaker"), ("sns", "sns"), ("sqs", "sqs"))}
    home = tmp_path_factory.mktemp("airflow-home")
    migrated = subprocess.run([AIRFLOW, "db", "migrate"], env={**os.environ, "AIRFLOW_HOME": str(home)},
                              cwd=home, capture_output=True, text=True, timeout=300)
    assert migrated.returncode == 0, migrated.stderr[-3000:]
    topic_arn = clients["sns"].create_topic(Name=TOPIC)["TopicArn"]
    return Stack(ns=uuid.uuid4().hex[:8], home=home, topic_arn=topic_arn, **clients)


@pytest.fixture
def inbox(stack):
    """An SQS queue subscribed to the StyleGAN2 topic; yields a function returning the messages so far."""
    name = f"test-sg2-inbox-{uuid.uuid4().hex[:8]}"
    url = stack.sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = stack.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sub = stack.sns.subscribe(TopicArn=stack.topic_arn, Protocol="sqs", Endpoint=arn,
                              Attributes={"RawMessageDelivery": "true"})["SubscriptionArn"]

    def drain() -> list[dict]:
        messages = []
        while got := stack.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10,
                                               WaitTimeSeconds=1).get("Messages", []):
            for m in got:
                messages.append(json.loads(m["Body"]))
                stack.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
        return messages

    yield drain
    stack.sns.unsubscribe(SubscriptionArn=sub)
    stack.sqs.delete_queue(QueueUrl=url)
