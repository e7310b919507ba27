"""``airflow dags test`` of the StyleGAN2 DAGs on the local stack, their SageMaker jobs run in Docker.

The tests share one Airflow home (a fresh SQLite database: no clash with other runs on the
shared local stack) and its own S3 prefixes, model package group and SNS subscription, passed to the
DAGs as ``AIRFLOW_VAR_REELFORGE_STYLEGAN2_*`` variables.

The DAGs' SageMaker requests go, unchanged, to ``sagemaker_local.py``: processing and training jobs run
the built StyleGAN2 image (``reelforge-stylegan2:local`` from ``make images``, tagged with the image URI
the DAGs ask for) through the SageMaker SDK's local mode, which reads inputs from and writes outputs
to moto's S3; the model registry and everything else is moto's. Nothing is seeded: the prepared
dataset, the model and the metrics the quality gate reads are what the container wrote.
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
HERE = Path(__file__).resolve().parent
DAGSTEST_DIR = HERE / "dagstest"
#: What ``make images`` (scripts/push-images) tags the StyleGAN2 image built from this checkout.
LOCAL_IMAGE = os.environ.get("REELFORGE_STYLEGAN2_LOCAL_IMAGE", "reelforge-stylegan2:local")
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
    #: the SageMaker endpoint the DAGs use (``sagemaker_local``); empty: moto's
    sagemaker_endpoint: str = ""
    jobs: object = field(default=None, repr=False)  # a SageMaker client on that endpoint

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
        conn = {}
        if self.sagemaker_endpoint:
            # The provider's per-service endpoint: SageMaker calls go to local mode, the rest to moto.
            aws = json.loads(os.environ["AIRFLOW_CONN_AWS_DEFAULT"])
            aws.setdefault("extra", {})["service_config"] = {"sagemaker": {"endpoint_url": self.sagemaker_endpoint}}
            conn = {"AIRFLOW_CONN_AWS_DEFAULT": json.dumps(aws)}
        return {
            **os.environ,
            **conn,
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
                              timeout=1500)


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
    yield from _inbox(stack)


def _inbox(stack):
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


def _docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="session")
def sagemaker_local(stack, tmp_path_factory):
    """Route the DAGs' SageMaker client to local mode on the built image (see the module docstring).

    Docker, docker-compose and the image are part of the stack for these tests: without them this fails
    (it does not skip) and says what is missing.
    """
    import shutil

    missing = [tool for tool in ("docker", "docker-compose") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"{', '.join(missing)} not found: the StyleGAN2 DAG tests run their jobs in Docker "
                    f"(scripts/local-stack installs it)")
    info = _docker("info", "--format", "{{.ServerVersion}}")
    if info.returncode != 0:
        pytest.fail(f"no Docker daemon: {info.stderr.strip()[-500:]}")
    if _docker("image", "inspect", LOCAL_IMAGE).returncode != 0:
        pytest.fail(f"image {LOCAL_IMAGE} not found: build it with `make images` (scripts/push-images stylegan2)")
    # The image must hold this checkout's container code (a stale image would test old code).
    digest = ("import hashlib, pathlib, reelforge_stylegan2 as p; h = hashlib.sha256(); "
              "files = sorted(pathlib.Path(p.__file__).parent.glob('*.py')); "
              "[h.update(f.name.encode() + f.read_bytes()) for f in files]; print(h.hexdigest())")
    in_image = _docker("run", "--rm", "--network", "none", "--entrypoint", "python", LOCAL_IMAGE, "-c", digest)
    here = subprocess.run([sys.executable, "-c", digest], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "containers" / "stylegan2" / "src")})
    if in_image.returncode != 0 or in_image.stdout.strip() != here.stdout.strip():
        pytest.fail(f"{LOCAL_IMAGE} does not hold this checkout's containers/stylegan2/src: rebuild it with "
                    f"`make images` (scripts/push-images stylegan2). {in_image.stderr.strip()[-300:]}")
    image_uri = os.environ.get("AIRFLOW_VAR_REELFORGE_STYLEGAN2_IMAGE_URI", "")
    if not image_uri:
        pytest.fail("AIRFLOW_VAR_REELFORGE_STYLEGAN2_IMAGE_URI is not set (source the local stack's env.sh)")
    tagged = _docker("tag", LOCAL_IMAGE, image_uri)
    assert tagged.returncode == 0, tagged.stderr

    root = tmp_path_factory.mktemp("sagemaker-local")
    log_path = root / "server.log"
    with open(log_path, "w") as log_file:
        server = subprocess.Popen(
            [sys.executable, str(HERE / "sagemaker_local.py"), "--moto", os.environ["REELFORGE_AWS_ENDPOINT_URL"],
             "--root", str(root / "jobs")],
            stdout=subprocess.PIPE, stderr=log_file, text=True,
            # Its S3 calls are SageMaker's (the job role's), not Airflow's: kept out of tests/iam's call log.
            env={**{k: v for k, v in os.environ.items() if k != "REELFORGE_AWS_CALL_LOG"}, "PYTHONUNBUFFERED": "1"})
    try:
        line = server.stdout.readline().strip()
        if not line.startswith("listening on "):
            server.kill()
            pytest.fail(f"sagemaker_local.py did not start: {line!r}\n{log_path.read_text()[-3000:]}")
        url = line.removeprefix("listening on ")
        session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                        region_name="us-east-1")
        stack.sagemaker_endpoint = url
        stack.jobs = session.client("sagemaker", endpoint_url=url)
        yield {"url": url, "image_uri": image_uri, "log": log_path}
    finally:
        stack.sagemaker_endpoint, stack.jobs = "", None
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()


INGEST, ARTIFACTS, OUTPUT = "reelforge-ingest", "reelforge-artifacts", "reelforge-output"
#: The smallest run the form allows at the smallest resolution: 1 kimg (NVlabs' --kimg minimum) at 64 px,
#: no FID limit (the Inception network NVlabs downloads for FID cannot be fetched here), 4 samples.
TRAINING_CONF = {"resolution": 64, "kimg": 1, "gamma": 0.5, "augment": "noaug", "instance_type": "ml.g4dn.xlarge",
                 "spot": True, "max_runtime_hours": 2, "max_wait_hours": 4, "max_fid": None, "samples": 4,
                 "truncation": 0.6, "snapshot_ticks": 1000, "checkpoint_uri": ""}


@pytest.fixture(scope="session")
def nvlabs_dir(tmp_path_factory) -> Path:
    """NVlabs' stylegan2-ada-pytorch at the pinned commit (``../shared/upstream``), unpacked."""
    import tarfile

    upstream = Path(os.environ.get("REELFORGE_UPSTREAM_DIR", ROOT.parent / "shared" / "upstream"))
    archive = upstream / "stylegan2-ada-pytorch-d72cc7d.tar.gz"
    if not archive.is_file():
        pytest.fail(f"{archive} not found (the pinned NVlabs snapshot, see ../shared/upstream/SOURCES.md)")
    target = tmp_path_factory.mktemp("nvlabs")
    with tarfile.open(archive) as tar:
        tar.extractall(target)  # noqa: S202 - the pinned snapshot (sha256 in SOURCES.md); Python 3.11.2: no filter=
    (unpacked,) = target.iterdir()
    return unpacked


@pytest.fixture(scope="session")
def training_run(stack, sagemaker_local, shared_data):
    """One ``stylegan2_training`` run on the anime images, its jobs run by local mode on the built image.

    Shared by the training test (which checks it) and the weekly test (which serves its model).
    """
    import time
    from datetime import UTC, datetime

    prefix = f"{stack.artifacts_prefix}raw/anime/"
    images = sorted((shared_data / "images" / "anime").iterdir())
    for path in images:
        stack.s3.put_object(Bucket=INGEST, Key=prefix + path.name, Body=path.read_bytes())
    stack.s3.put_object(Bucket=INGEST, Key=prefix + "README.txt", Body=b"not an image")
    since = datetime.now(UTC).replace(microsecond=0)
    time.sleep(1)
    conf = {**TRAINING_CONF, "dataset_uri": f"s3://{INGEST}/{prefix}"}
    subscription = _inbox(stack)  # subscribed before the run: its SNS messages are kept
    drain = next(subscription)
    started = time.monotonic()
    result = stack.dags_test("stylegan2_training", "2026-03-01T10:00:00+00:00", conf)
    seconds = time.monotonic() - started
    messages = drain()
    next(subscription, None)  # unsubscribe, delete the queue
    return {"result": result, "conf": conf, "since": since, "images": images, "prefix": prefix,
            "seconds": seconds, "image_uri": sagemaker_local["image_uri"], "server_log": sagemaker_local["log"],
            "messages": messages}
