"""``airflow dags test`` of the avatar DAGs on the local stack, in their own Airflow home.

Reuses the StyleGAN2 tests' harness (fresh SQLite home, boto3 clients, the SNS→SQS ``inbox``) with the
avatar topic, namespaced S3 prefixes and endpoint names, passed as ``AIRFLOW_VAR_REELFORGE_AVATAR_*``.

``avatar_sagemaker`` runs the personalisation DAG's SageMaker work for real, in the built avatar image
(``reelforge-avatar:local`` from ``scripts/push-images --bases local avatar``): the preprocessing job through
the SageMaker SDK's local mode (``tests/dags/stylegan2/sagemaker_local.py``), the async fine-tune endpoint
through ``sagemaker_standins`` (the image's ``serve`` behind a stand-in for SageMaker's async platform, which
local mode lacks), and the Triton multi-model endpoint through the same stand-in with the real Python-backend
models in ``TritonMmeDouble`` (a TEST DOUBLE of the Triton server). Both endpoints get the same tiny base
pipeline, built here and stored in S3 where ``reelforge_avatar_base_model_uri`` points.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from dataclasses import dataclass, fields
from pathlib import Path

import pytest

from tests.dags.stylegan2 import conftest as _sg2

ROOT = Path(__file__).resolve().parents[3]
CONTAINER_TESTS = ROOT / "tests" / "containers" / "avatar"
for _path in (str(ROOT / "containers" / "avatar" / "src"), str(CONTAINER_TESTS)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

inbox = _sg2.inbox  # the fixture: an SQS queue subscribed to ``stack.topic_arn``

DAGSTEST_DIR = Path(__file__).resolve().parent / "dagstest"
TOPIC = "reelforge-avatar-notifications"
LOCAL_IMAGE = os.environ.get("REELFORGE_AVATAR_LOCAL_IMAGE", "reelforge-avatar:local")
ARTIFACTS = "reelforge-artifacts"
#: The tiny base's identity (tests/containers/avatar/tiny_pipeline.py): the serving base of these runs.
BASE_ID, BASE_REVISION = "tests/tiny-sd", "0" * 40


@dataclass
class AvatarStack(_sg2.Stack):
    """The StyleGAN2 harness's stack with the avatar namespace and Variables."""

    endpoint_url: str = ""
    runtime_endpoint: str = ""  # the sagemaker-runtime stand-in (empty: moto's)

    @property
    def prefix(self) -> str:
        return f"avatar-test-{self.ns}/"

    def name(self, what: str) -> str:
        return f"avatar-test-{self.ns}-{what}"

    def env(self) -> dict[str, str]:
        env = {key: value for key, value in super().env().items() if "STYLEGAN2" not in key}
        services = {name: {"endpoint_url": url} for name, url in (("sagemaker", self.sagemaker_endpoint),
                                                                 ("sagemaker-runtime", self.runtime_endpoint)) if url}
        if services:
            aws = json.loads(os.environ["AIRFLOW_CONN_AWS_DEFAULT"])
            aws.setdefault("extra", {})["service_config"] = services
            env["AIRFLOW_CONN_AWS_DEFAULT"] = json.dumps(aws)
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
            "AIRFLOW_VAR_REELFORGE_AVATAR_BASE_MODEL_ID": BASE_ID,
            "AIRFLOW_VAR_REELFORGE_AVATAR_BASE_MODEL_REVISION": BASE_REVISION,
            "AIRFLOW_VAR_REELFORGE_AVATAR_MIN_SELFIES": "2",
            "AIRFLOW_VAR_REELFORGE_AVATAR_POLL_INTERVAL_S": "1",
            "AIRFLOW_VAR_REELFORGE_AVATAR_SAMPLE_STEPS": "3",
        }

    @property
    def base_model_uri(self) -> str:
        """The settings' default ``s3://<artifacts>/<prefix>base/sd21-base.tar.gz``."""
        return f"s3://{ARTIFACTS}/{self.prefix}base/sd21-base.tar.gz"


@pytest.fixture(scope="session")
def stack(tmp_path_factory) -> AvatarStack:
    """The StyleGAN2 harness's stack (clients on the local endpoint, a migrated home) on the avatar topic."""
    base = _sg2.stack.__wrapped__(tmp_path_factory)  # skips without a local endpoint
    shared = {f.name: getattr(base, f.name) for f in fields(base)}
    topic_arn = base.sns.create_topic(Name=TOPIC)["TopicArn"]
    return AvatarStack(**{**shared, "topic_arn": topic_arn}, endpoint_url=os.environ["REELFORGE_AWS_ENDPOINT_URL"])


def _docker(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)


def _check_image() -> None:
    """Docker runs and the image holds this checkout's ``containers/avatar/src`` (a stale one tests old code)."""
    if _docker("info", "--format", "{{.ServerVersion}}").returncode != 0:
        pytest.fail("no Docker daemon: the avatar DAG tests run the avatar image (scripts/local-stack starts it)")
    digest = ("import hashlib, pathlib, reelforge_avatar as p; h = hashlib.sha256(); "
              "files = sorted(pathlib.Path(p.__file__).parent.glob('*.py')); "
              "[h.update(f.name.encode() + f.read_bytes()) for f in files]; print(h.hexdigest())")
    in_image = _docker("run", "--rm", "--network", "none", "--entrypoint", "python", LOCAL_IMAGE, "-c", digest)
    here = subprocess.run([sys.executable, "-c", digest], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "containers" / "avatar" / "src")})
    if in_image.returncode != 0 or in_image.stdout.strip() != here.stdout.strip():
        pytest.fail(f"{LOCAL_IMAGE} is missing or does not hold this checkout's containers/avatar/src: build it "
                    f"with `scripts/push-images --bases local avatar`. {in_image.stderr.strip()[-300:]}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _sagemaker_local(root: Path):
    """``tests/dags/stylegan2/sagemaker_local.py``: the SageMaker API with processing jobs run by local mode."""
    log_path = root / "sagemaker-local.log"
    with open(log_path, "w") as log_file:
        server = subprocess.Popen(
            [sys.executable, str(ROOT / "tests" / "dags" / "stylegan2" / "sagemaker_local.py"),
             "--moto", os.environ["REELFORGE_AWS_ENDPOINT_URL"], "--root", str(root / "jobs")],
            stdout=subprocess.PIPE, stderr=log_file, text=True,
            env={**{k: v for k, v in os.environ.items() if k != "REELFORGE_AWS_CALL_LOG"}, "PYTHONUNBUFFERED": "1"})
    line = server.stdout.readline().strip()
    if not line.startswith("listening on "):
        server.kill()
        pytest.fail(f"sagemaker_local.py did not start: {line!r}\n{log_path.read_text()[-3000:]}")
    return server, line.removeprefix("listening on ")


@pytest.fixture(scope="module")
def avatar_sagemaker(stack, tmp_path_factory):
    """The DAG's SageMaker work run in the built image and the Triton double (see the module docstring)."""
    from reelforge_avatar import safe_tar
    from reelforge_avatar.base_model import write_identity
    from sagemaker_standins import AsyncEndpoint, FineTuneContainer, MultiModelEndpoint, RuntimeStandIn
    from tiny_pipeline import build_tiny_pipeline
    from triton_server_double import TritonMmeDouble

    _check_image()
    image_uri = os.environ.get("AIRFLOW_VAR_REELFORGE_AVATAR_IMAGE_URI", "")
    if not image_uri:
        pytest.fail("AIRFLOW_VAR_REELFORGE_AVATAR_IMAGE_URI is not set (source the local stack's env.sh)")
    assert _docker("tag", LOCAL_IMAGE, image_uri).returncode == 0
    root = tmp_path_factory.mktemp("avatar-sagemaker")

    # The deploy step: the stamped base pipeline folder, tarred, at reelforge_avatar_base_model_uri.
    base = build_tiny_pipeline(root / "build" / "pipeline")
    write_identity(base, BASE_ID, BASE_REVISION)
    safe_tar.pack(base, root / "base.tar.gz")
    bucket, key = stack.base_model_uri[5:].split("/", 1)
    stack.s3.upload_file(str(root / "base.tar.gz"), bucket, key)
    # SageMaker unpacks the fine-tune endpoint's ModelDataUrl at /opt/ml/model.
    model_dir = root / "opt-ml-model"
    stack.s3.download_file(bucket, key, str(root / "model-data.tar.gz"))
    safe_tar.extract(root / "model-data.tar.gz", model_dir)

    moto = os.environ["REELFORGE_AWS_ENDPOINT_URL"]
    container = FineTuneContainer(image_uri, model_dir, _free_port(), {
        "AWS_ENDPOINT_URL": moto, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",  # the role
        "AWS_DEFAULT_REGION": "us-east-1", "REELFORGE_AVATAR_CLASS_STEPS": "2"})
    # The Triton endpoint's environment (endpoints.endpoint_plan): the base comes from the same tar.
    mme_env = {"REELFORGE_AVATAR_BASE_MODEL_DIR": str(root / "mme" / "avatar-base"),
               "REELFORGE_AVATAR_BASE_MODEL_URI": stack.base_model_uri, "AWS_ENDPOINT_URL_S3": moto,
               "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1"}
    saved = {k: os.environ.get(k) for k in mme_env}
    os.environ.update(mme_env)
    processing, sagemaker_url = _sagemaker_local(root)
    runtime = RuntimeStandIn()
    triton = TritonMmeDouble(root / "mme" / "repository")
    try:
        container.start()
        async_prefix = f"s3://{ARTIFACTS}/{stack.prefix}async/"
        runtime.async_endpoints[stack.name("ft")] = AsyncEndpoint(container, stack.s3, f"{async_prefix}output/",
                                                                  f"{async_prefix}failure/")
        runtime.mme[stack.name("mme")] = MultiModelEndpoint(triton, stack.s3,
                                                            f"s3://{ARTIFACTS}/{stack.prefix}mme/models/")
        stack.sagemaker_endpoint, stack.runtime_endpoint = sagemaker_url, runtime.url
        yield {"container": container, "runtime": runtime, "triton": triton, "image_uri": image_uri}
    finally:
        stack.sagemaker_endpoint, stack.runtime_endpoint = "", ""
        (root / "finetune-container.log").write_text(container.logs())
        container.stop()
        triton.unload_all()
        runtime.close()
        processing.terminate()
        processing.wait(timeout=30)
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
