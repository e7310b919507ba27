"""Fixtures of the AnimateAnyone end-to-end test: the cluster venv, an MLflow server, an SNS inbox.

The DAG reaches the cluster through ``hyperpod_ssh``; locally that is the same sshd/Slurm as
``slurm_ssh``. These variables must be in the environment before the session's Airflow starts
(the ``airflow`` fixture), so they are set when this file is imported, at collection.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from pathlib import Path

import pytest

if os.environ.get("AIRFLOW_CONN_SLURM_SSH"):
    os.environ.setdefault("AIRFLOW_CONN_HYPERPOD_SSH", os.environ["AIRFLOW_CONN_SLURM_SSH"])
os.environ.setdefault("REELFORGE_AA_POLL_SECONDS", "2")

TOPIC = "reelforge-animate-anyone-notifications"

if os.environ.get("REELFORGE_AA_PRIVATE_AIRFLOW_PORT"):
    # Beside another Airflow on :8080 (same machine, shared state dir): a private instance with its
    # own home and SQLite database on another port. Not used by default (CI runs the shared one).

    @pytest.fixture(scope="session")
    def airflow(tmp_path_factory):
        from airflow_local import LocalAirflow

        port = int(os.environ["REELFORGE_AA_PRIVATE_AIRFLOW_PORT"])
        home = tmp_path_factory.mktemp("airflow-home")
        private = {
            "AIRFLOW_HOME": str(home),
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
            "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
            "AIRFLOW__API__PORT": str(port),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{port}/execution/",
            "REELFORGE_RETRY_DELAY_SECONDS": os.environ.get("REELFORGE_RETRY_DELAY_SECONDS", "2"),
        }
        saved = {k: os.environ.get(k) for k in private}
        os.environ.update(private)
        try:
            subprocess.run(["airflow", "db", "migrate"], check=True, capture_output=True)
            instance = LocalAirflow(Path(home) / "airflow.log", base_url=f"http://127.0.0.1:{port}")
            instance.start()
            try:
                yield instance
            finally:
                instance.stop()
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value


@pytest.fixture(scope="session")
def aa_cluster():
    """The venv and Moore code the AnimateAnyone jobs run with and the MLflow tracking server they log to."""
    from tests.e2e.animate_anyone.cluster_env import ensure_moore, ensure_venv, mlflow_server

    ensure_venv()
    ensure_moore()
    with mlflow_server() as url:
        yield url


@pytest.fixture
def aa_inbox(aws):
    """An SQS queue subscribed to the AnimateAnyone topic (created if missing); yields a drain function."""
    topic = aws.sns.create_topic(Name=TOPIC)["TopicArn"]
    name = f"test-aa-inbox-{uuid.uuid4().hex[:8]}"
    url = aws.sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    sub = aws.sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn,
                            Attributes={"RawMessageDelivery": "true"})["SubscriptionArn"]

    def drain() -> list[dict]:
        messages = []
        while True:
            got = aws.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
            if not got:
                return messages
            for m in got:
                messages.append(json.loads(m["Body"]))
                aws.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])

    yield drain
    aws.sns.unsubscribe(SubscriptionArn=sub)
    aws.sqs.delete_queue(QueueUrl=url)
