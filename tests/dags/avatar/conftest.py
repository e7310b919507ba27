"""``airflow dags test`` of the avatar DAGs against the local AWS endpoint (moto), in their own Airflow home.

Reuses the StyleGAN2 tests' harness (fresh SQLite home, boto3 clients, the SNS→SQS ``inbox``) with the
avatar topic, namespaced S3 prefixes and endpoint names, passed as ``AIRFLOW_VAR_REELFORGE_AVATAR_*``.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass, fields
from pathlib import Path

import boto3
import pytest

from tests.dags.stylegan2 import conftest as _sg2

inbox = _sg2.inbox  # the fixture: an SQS queue subscribed to ``stack.topic_arn``

DAGSTEST_DIR = Path(__file__).resolve().parent / "dagstest"
TOPIC = "reelforge-avatar-notifications"
MOTO_API = "/moto-api/static/sagemaker"


@dataclass
class AvatarStack(_sg2.Stack):
    """The StyleGAN2 harness's stack with the avatar namespace, Variables and moto's result queues."""

    endpoint_url: str = ""

    @property
    def prefix(self) -> str:
        return f"avatar-test-{self.ns}/"

    def name(self, what: str) -> str:
        return f"avatar-test-{self.ns}-{what}"

    def env(self) -> dict[str, str]:
        env = {key: value for key, value in super().env().items() if "STYLEGAN2" not in key}
        return {
            **env,
            "AIRFLOW__CORE__DAGS_FOLDER": str(DAGSTEST_DIR),
            "REELFORGE_RETRY_DELAY_SECONDS": "1",
            "AIRFLOW_VAR_REELFORGE_AVATAR_TOPIC_ARN": self.topic_arn,
            "AIRFLOW_VAR_REELFORGE_AVATAR_ARTIFACTS_PREFIX": self.prefix,
            "AIRFLOW_VAR_REELFORGE_AVATAR_OUTPUT_PREFIX": self.prefix,
            "AIRFLOW_VAR_REELFORGE_AVATAR_INGEST_PREFIX": f"{self.prefix}incoming/",
            "AIRFLOW_VAR_REELFORGE_AVATAR_FINETUNE_ENDPOINT": self.name("ft"),
            "AIRFLOW_VAR_REELFORGE_AVATAR_MME_ENDPOINT": self.name("mme"),
            "AIRFLOW_VAR_REELFORGE_AVATAR_BASE_MODEL_REVISION": "1f758383196d38df1dfe523ddb1030f2bfab7741",
            "AIRFLOW_VAR_REELFORGE_AVATAR_MIN_SELFIES": "2",
            "AIRFLOW_VAR_REELFORGE_AVATAR_POLL_INTERVAL_S": "1",
        }

    def drain_seeds(self) -> None:
        """Use up results left queued in moto by earlier runs (its queues are global and FIFO).

        Each call with a new input takes the next queued result; moto's static default means empty.
        The async queue falls back to the sync one, so it is drained first.
        """
        rt = boto3.client("sagemaker-runtime", endpoint_url=self.endpoint_url, region_name="us-east-1",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
        s3 = self.s3
        for _ in range(1000):
            token = uuid.uuid4().hex
            async_answer = rt.invoke_endpoint_async(EndpointName="avatar-test-drain",
                                                    InputLocation=f"s3://drain/{token}")
            bucket, key = async_answer["OutputLocation"][5:].split("/", 1)
            try:
                body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
            except s3.exceptions.NoSuchKey:
                continue  # a queued failure
            if body == b'{"default": "response"}':
                break
        for _ in range(1000):
            answer = rt.invoke_endpoint(EndpointName="avatar-test-drain", Body=uuid.uuid4().hex.encode())
            if answer["Body"].read() == b"body":
                return
        raise AssertionError("moto's result queues do not drain")

    def seed(self, kind: str, results: list[dict]) -> None:
        """Queue moto's next SageMaker runtime results (``async-endpoint-results`` / ``endpoint-results``)."""
        import requests

        response = requests.post(f"{self.endpoint_url}{MOTO_API}/{kind}", json={"results": results}, timeout=10)
        response.raise_for_status()


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> AvatarStack:
    """The StyleGAN2 harness's stack (clients on the local endpoint, a migrated home) on the avatar topic."""
    base = _sg2.stack.__wrapped__(tmp_path_factory)  # skips without a local endpoint
    shared = {f.name: getattr(base, f.name) for f in fields(base)}
    topic_arn = base.sns.create_topic(Name=TOPIC)["TopicArn"]
    return AvatarStack(**{**shared, "topic_arn": topic_arn}, endpoint_url=os.environ["REELFORGE_AWS_ENDPOINT_URL"])
