"""End-to-end fixtures: the real local Airflow (scheduler, triggerer, dag-processor, api-server)."""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest

from airflow_local import LocalAirflow

ROOT = Path(__file__).resolve().parents[2]
RECONCILER = "video_sr_reconciler"
UPLOAD_RECONCILERS = ("stylegan2_upload_reconciler", "avatar_upload_reconciler", "animate_anyone_upload_reconciler")


#: What the e2e Airflow runs with (its processes only: the test process keeps its own environment, so
#: that unit tests later in the same session see the defaults). A value set outside wins.
AIRFLOW_ENV = {
    # Short retry delays so that failure paths finish in seconds; the DAG's defaults are for production.
    "REELFORGE_RETRY_DELAY_SECONDS": "2",
    # A deadline shorter than any SR run (a warm run of a small clip takes about 20 s), so the end-to-end
    # runs also exercise the deadline alert.
    "REELFORGE_SR_DEADLINE_SECONDS": "5",
    # The reconciler runs every 15 s with a 20 s grace here (5 min and 2 min in production). Tests that
    # rely on it unpause it (tests/e2e/test_ingest_reconciler.py, the load test); the others run with it
    # paused, so that their run and message counts are the notification path's alone.
    "REELFORGE_SR_RECONCILE_SECONDS": "15",
    "AIRFLOW_VAR_REELFORGE_SR_RECONCILE_GRACE_SECONDS": "20",
    # At max_active_runs (a burst) uploads wait this long before the reconciler steps in (1 h in production).
    "AIRFLOW_VAR_REELFORGE_SR_RECONCILE_BACKLOG_GRACE_SECONDS": "300",
    # The training workflows' upload reconcilers (paused below; tests/e2e/test_upload_reconcilers.py
    # unpauses them) list every 15 s with a 5 s grace and look 10 min back, under prefixes of their test's
    # own, so that no other test's upload starts a run there.
    "REELFORGE_UPLOAD_RECONCILE_SECONDS": "15",
    **{f"AIRFLOW_VAR_REELFORGE_{name}_RECONCILE_{what}_SECONDS": value
       for name in ("STYLEGAN2", "AVATAR", "ANIMATE_ANYONE") for what, value in (("GRACE", "5"), ("OVERLAP", "600"))},
    "AIRFLOW_VAR_REELFORGE_STYLEGAN2_DATASET_PREFIX": "stylegan2/datasets/reconcile-e2e/",
    "AIRFLOW_VAR_REELFORGE_ANIMATE_ANYONE_MANIFEST_PREFIX": "animate-anyone/manifests/reconcile-e2e/",
}
AIRFLOW_ENV = {k: os.environ.get(k, v) for k, v in AIRFLOW_ENV.items()}


@pytest.fixture(scope="session")
def airflow() -> Iterator[LocalAirflow]:
    state = Path(os.environ.get("REELFORGE_STATE_DIR", ROOT / ".local-stack"))
    instance = LocalAirflow(state / "logs" / "airflow-e2e.log")
    with mock.patch.dict(os.environ, AIRFLOW_ENV):
        instance.start()
    try:
        for dag_id in (RECONCILER, *UPLOAD_RECONCILERS):  # on by default; tests that use one unpause it
            instance.wait_for_dag(dag_id)
            instance.pause(dag_id)
        yield instance
    finally:
        instance.stop()


@pytest.fixture(scope="session")
def aws():
    """boto3 clients through the Airflow aws_default connection (the local AWS endpoint)."""
    from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

    session = AwsBaseHook(aws_conn_id="aws_default", client_type="s3").get_session()
    endpoint = os.environ["REELFORGE_AWS_ENDPOINT_URL"]

    class Clients:
        s3 = session.client("s3", endpoint_url=endpoint)
        sqs = session.client("sqs", endpoint_url=endpoint)
        sns = session.client("sns", endpoint_url=endpoint)

    return Clients


@pytest.fixture
def sns_inbox(aws):
    """An SQS queue subscribed to the SR topic (raw delivery); yields a function that drains it."""
    name = f"test-inbox-{uuid.uuid4().hex[:8]}"
    url = aws.sqs.create_queue(QueueName=name)["QueueUrl"]
    arn = aws.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    topics = [t["TopicArn"] for t in aws.sns.list_topics()["Topics"]]
    topic = next(t for t in topics if t.endswith(":reelforge-sr-notifications"))
    sub = aws.sns.subscribe(TopicArn=topic, Protocol="sqs", Endpoint=arn,
                            Attributes={"RawMessageDelivery": "true"})["SubscriptionArn"]

    received: set[str] = set()

    def drain() -> list[dict]:
        """Each published message once: SQS may hand this test's queue the same message again (same
        MessageId) if a delete comes late; that is the inbox's transport, not a second publish."""
        messages = []
        while True:
            got = aws.sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=1).get("Messages", [])
            if not got:
                return messages
            for m in got:
                if m["MessageId"] not in received:
                    received.add(m["MessageId"])
                    messages.append(json.loads(m["Body"]))
                aws.sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])

    yield drain
    aws.sns.unsubscribe(SubscriptionArn=sub)
    aws.sqs.delete_queue(QueueUrl=url)
