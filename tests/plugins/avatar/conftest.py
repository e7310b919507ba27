"""The local AWS endpoint (moto server) for the avatar operator and trigger tests.

The trigger polls S3 with aiobotocore, which moto's in-process mock does not patch: these tests use
the server the local stack runs, through Airflow's ``aws_default`` connection (``AIRFLOW_CONN_AWS_DEFAULT``).
"""

from __future__ import annotations

import os
import uuid

import boto3
import pytest

BUCKET = "reelforge-artifacts"


@pytest.fixture(scope="session")
def s3():
    endpoint = os.environ.get("REELFORGE_AWS_ENDPOINT_URL")
    if not endpoint or not os.environ.get("AIRFLOW_CONN_AWS_DEFAULT"):
        pytest.skip("no local AWS endpoint")
    client = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    client.create_bucket(Bucket=BUCKET)
    return client


@pytest.fixture
def prefix() -> str:
    return f"avatar-unit-{uuid.uuid4().hex[:8]}/"
