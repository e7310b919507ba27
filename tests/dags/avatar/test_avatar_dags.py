"""Both avatar DAGs under ``airflow dags test`` on moto: requests sent, failure and success paths, endpoints.

moto runs no container: its async endpoint answers with a seeded result (success body or failure
object) and its ``invoke_endpoint`` with seeded bodies. Like the StyleGAN2 tests, the test uploads what
the real fine-tune would have written (a small but real ``model.tar.gz`` with a correct manifest).
"""

from __future__ import annotations

import hashlib
import io
import json
import sys
import tarfile
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[3]
INGEST, ARTIFACTS, OUTPUT = "reelforge-ingest", "reelforge-artifacts", "reelforge-output"
BASE_MODEL = "stabilityai/stable-diffusion-2-1-base"
REVISION = "1f758383196d38df1dfe523ddb1030f2bfab7741"  # what conftest sets as the serving base revision


def test_the_dag_declares_its_deadline_and_the_dagstest_variant_only_drops_it():
    sys.path.insert(0, str(ROOT / "dags"))
    import avatar_personalization

    (alert,) = avatar_personalization.dag.deadline
    assert alert.interval.total_seconds() >= 3600
    variant = avatar_personalization.build_dag(with_deadline=False)
    assert variant.deadline in (None, [])
    assert sorted(variant.task_dict) == sorted(avatar_personalization.dag.task_dict)


def plan_of(stack, user: str, timeout: float = 0) -> dict | None:
    """The run's ``plan.json`` (names and requests, as the DAG derived them), waiting up to ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        for page in stack.s3.get_paginator("list_objects_v2").paginate(Bucket=ARTIFACTS, Prefix=f"{stack.prefix}runs/"):
            for obj in page.get("Contents", []):
                if obj["Key"].endswith("/plan.json"):
                    plan = read_json(stack, ARTIFACTS, obj["Key"])
                    if plan["user_id"] == user:
                        return plan
        if time.monotonic() >= deadline:
            return None
        time.sleep(0.05)


class FineTuneDouble(threading.Thread):
    """Test double of the fine-tune container (none runs here): once the run has planned, it writes the
    ``model.tar.gz`` the container would write to the request's ``output_s3_uri`` and queues moto's async
    answer naming it. The plan task runs two tasks before ``fine_tune`` invokes the endpoint."""

    def __init__(self, stack, user: str) -> None:
        super().__init__(daemon=True)
        self.stack, self.user, self.plan, self.package = stack, user, None, b""

    def run(self) -> None:
        plan = plan_of(self.stack, self.user, timeout=120)
        if plan is None:
            return
        self.package, manifest = model_package()
        bucket, key = plan["request"]["output_s3_uri"][5:].split("/", 1)
        self.stack.s3.put_object(Bucket=bucket, Key=key, Body=self.package)
        self.stack.seed("async-endpoint-results", [{"data": json.dumps(
            {"status": "succeeded", "model_uri": plan["request"]["output_s3_uri"], "manifest": manifest})}])
        self.plan = plan


def upload_selfies(stack, shared_data, user: str, extra: dict[str, bytes] | None = None) -> str:
    prefix = f"{stack.prefix}incoming/{user}/set-1/"
    for path in sorted((shared_data / "images" / "faces").glob("fr_*.jpg"))[:3]:
        stack.s3.put_object(Bucket=INGEST, Key=prefix + path.name, Body=path.read_bytes())
    for name, body in (extra or {}).items():
        stack.s3.put_object(Bucket=INGEST, Key=prefix + name, Body=body)
    return f"s3://{INGEST}/{prefix}"


def conf(user: str, selfies_uri: str, samples: int = 2) -> dict:
    return {"user_id": user, "selfies_uri": selfies_uri, "steps": 120, "lora_rank": 8, "token": "zwx",
            "samples": samples, "prompt": "a watercolour avatar of {token} person"}


def model_package(manifest_extra: dict | None = None) -> tuple[bytes, dict]:
    """A model.tar.gz as the container builds it: LoRA weights, a config and manifest.json at the root."""
    members = {"pytorch_lora_weights.safetensors": bytes(range(256)) * 64,
               "adapter_config.json": json.dumps({"r": 8}).encode()}
    manifest = {"base_model_id": BASE_MODEL, "base_model_revision": REVISION, "lora_rank": 8, "steps": 120,
                "token": "zwx", "files": {n: hashlib.sha256(b).hexdigest() for n, b in members.items()},
                **(manifest_extra or {})}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, body in {**members, "manifest.json": json.dumps(manifest).encode()}.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return buffer.getvalue(), manifest


def read_json(stack, bucket: str, key: str) -> dict:
    return json.loads(stack.s3.get_object(Bucket=bucket, Key=key)["Body"].read())


def test_success_fine_tunes_verifies_registers_on_the_mme_and_sends_the_avatars(stack, shared_data, inbox):
    date, user = "2026-04-01T09:00:00+00:00", f"user-{stack.ns}"
    selfies = upload_selfies(stack, shared_data, user)
    stack.drain_seeds()
    double = FineTuneDouble(stack, user)
    double.start()
    stack.seed("endpoint-results", [{"Body": f"png-{i}-{stack.ns}", "ContentType": "image/png",
                                     "InvokedProductionVariant": "AllTraffic", "CustomAttributes": ""}
                                    for i in range(2)])

    result = stack.dags_test("avatar_personalization", date, conf(user, selfies))
    double.join(timeout=5)
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]
    plan, package = double.plan, double.package
    key, base = plan["key"], f"{stack.prefix}runs/{plan['key']}/"
    names = {"key": key, "model_name": plan["model_name"], "request": f"{base}finetune/request.json",
             "crops": f"s3://{ARTIFACTS}/{base}crops/", "samples": f"{stack.prefix}users/{user}/{key}/"}
    model_uri = f"s3://{ARTIFACTS}/{base}model/model.tar.gz"
    from reelforge.avatar.plan import model_name

    assert plan["model_name"] == model_name(user, plan["run_id"])
    assert plan["model_name"].startswith(f"avatar-user-{stack.ns}-")

    request = read_json(stack, ARTIFACTS, names["request"])
    assert request == {
        "job_name": f"reelforge-avatar-ft-{names['key']}", "instance_data_uri": names["crops"],
        "class_data_uri": None, "output_s3_uri": model_uri, "model_name": names["model_name"], "token": "zwx",
        "class_prompt": "a photo of a person", "base_model_id": BASE_MODEL, "base_model_revision": REVISION,
        "max_train_steps": 120, "lora_rank": 8, "learning_rate": 1e-4, "gradient_accumulation_steps": 1,
        "mixed_precision": "fp16", "seed": 0}
    invocation = read_json(stack, ARTIFACTS, names["request"].replace("request.json", "invocation.json"))
    assert invocation["endpoint_name"] == stack.name("ft")
    assert invocation["inference_id"] == request["job_name"]
    assert invocation["input_location"] == f"s3://{ARTIFACTS}/{names['request']}"

    prep = stack.sm.describe_processing_job(ProcessingJobName=f"reelforge-avatar-prep-{names['key']}")
    assert prep["AppSpecification"]["ContainerEntrypoint"] == ["reelforge-avatar", "preprocess"]
    assert prep["ProcessingInputs"][0]["S3Input"]["S3Uri"] == selfies
    assert prep["ProcessingOutputConfig"]["Outputs"][0]["S3Output"]["S3Uri"] == names["crops"]

    registered = f"{stack.prefix}mme/models/{names['model_name']}.tar.gz"
    assert stack.s3.get_object(Bucket=ARTIFACTS, Key=registered)["Body"].read() == package

    generation = read_json(stack, OUTPUT, names["samples"] + "generation.json")
    assert generation["endpoint"] == stack.name("mme")
    assert generation["target_model"] == f"{names['model_name']}.tar.gz"
    bodies = [s["request"] for s in generation["samples"]]
    assert [b["seed"] for b in bodies] == [0, 1]
    assert {b["prompt"] for b in bodies} == {"a watercolour avatar of zwx person"}
    assert set(bodies[0]) == {"prompt", "negative_prompt", "seed", "steps", "guidance"}
    images = [stack.s3.get_object(Bucket=OUTPUT, Key=s["key"])["Body"].read() for s in generation["samples"]]
    assert sorted(images) == [f"png-{i}-{stack.ns}".encode() for i in range(2)]

    (message,) = [m for m in inbox() if m.get("event") == "avatar_ready"]
    assert message["user_id"] == user and message["target_model"] == generation["target_model"]
    assert [a["uri"] for a in message["avatars"]] == [f"s3://{OUTPUT}/{s['key']}" for s in generation["samples"]]
    for avatar, sample in zip(message["avatars"], generation["samples"], strict=True):
        url = urlsplit(avatar["url"])
        assert url.path.endswith(sample["key"]) and "Signature=" in url.query  # a presigned, expiring link


def test_async_failure_fails_the_run_and_notifies_with_the_endpoints_reason(stack, shared_data, inbox):
    date, user = "2026-04-02T09:00:00+00:00", f"fail-{stack.ns}"
    selfies = upload_selfies(stack, shared_data, user)
    reason = f"CUDA out of memory at step 37 ({stack.ns})"
    stack.drain_seeds()
    stack.seed("async-endpoint-results", [{"is_failure": True, "data": reason}])

    result = stack.dags_test("avatar_personalization", date, conf(user, selfies))
    assert result.returncode != 0

    failures = [m for m in inbox() if m.get("event") == "avatar_failed"]
    (failure,) = failures
    assert failure["task_id"] == "fine_tune"
    assert reason in failure["reason"]
    assert failure["try_number"] == 3  # retried twice first
    plan = plan_of(stack, user)
    registered = stack.s3.list_objects_v2(Bucket=ARTIFACTS, Prefix=f"{stack.prefix}mme/models/{plan['model_name']}")
    assert registered.get("KeyCount", 0) == 0


def test_bad_selfies_are_refused_before_any_sagemaker_work(stack, shared_data, inbox):
    date, user = "2026-04-03T09:00:00+00:00", f"bad-{stack.ns}"
    selfies = upload_selfies(stack, shared_data, user, extra={"notes.txt": b"hello", "fake.png": b"GIF89a..."})

    result = stack.dags_test("avatar_personalization", date, conf(user, selfies))
    assert result.returncode != 0
    (failure,) = [m for m in inbox() if m.get("event") == "avatar_failed"]
    assert failure["task_id"] == "plan" and failure["try_number"] == 1  # no retries for bad input
    assert "'notes.txt': not an image" in failure["reason"]
    assert "'fake.png': content is not JPEG, PNG or WebP" in failure["reason"]
    assert plan_of(stack, user) is None  # refused in plan: no names, no processing job, no invocation


def test_endpoints_dag_creates_async_and_multi_model_endpoints_with_scale_to_zero(stack):
    import boto3

    result = stack.dags_test("avatar_endpoints", "2026-04-05T00:00:00+00:00")
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-3000:]

    ft = stack.sm.describe_endpoint(EndpointName=stack.name("ft"))
    assert ft["EndpointStatus"] == "InService"
    ft_config = stack.sm.describe_endpoint_config(EndpointConfigName=ft["EndpointConfigName"])
    output = ft_config["AsyncInferenceConfig"]["OutputConfig"]
    assert output["S3OutputPath"] == f"s3://{ARTIFACTS}/{stack.prefix}async/output/"
    assert output["S3FailurePath"] == f"s3://{ARTIFACTS}/{stack.prefix}async/failure/"
    assert output["NotificationConfig"] == {"SuccessTopic": stack.topic_arn, "ErrorTopic": stack.topic_arn}
    (variant,) = ft_config["ProductionVariants"]
    assert variant["InstanceType"] == "ml.g4dn.xlarge"
    ft_model = stack.sm.describe_model(ModelName=variant["ModelName"])
    assert ft_model["PrimaryContainer"]["ModelDataUrl"] == f"s3://{ARTIFACTS}/{stack.prefix}base/sd21-base.tar.gz"
    assert ft_model["PrimaryContainer"]["Environment"] == {"HF_HUB_OFFLINE": "1"}

    mme = stack.sm.describe_endpoint(EndpointName=stack.name("mme"))
    (mme_variant,) = stack.sm.describe_endpoint_config(EndpointConfigName=mme["EndpointConfigName"])[
        "ProductionVariants"]
    container = stack.sm.describe_model(ModelName=mme_variant["ModelName"])["PrimaryContainer"]
    assert container["Mode"] == "MultiModel"
    assert container["ModelDataUrl"] == f"s3://{ARTIFACTS}/{stack.prefix}mme/models/"
    assert "sagemaker-tritonserver" in container["Image"]

    session = boto3.session.Session(aws_access_key_id="testing", aws_secret_access_key="testing",
                                    region_name="us-east-1")
    aas = session.client("application-autoscaling", endpoint_url=stack.endpoint_url)
    cw = session.client("cloudwatch", endpoint_url=stack.endpoint_url)
    resource = f"endpoint/{stack.name('ft')}/variant/AllTraffic"
    (target,) = aas.describe_scalable_targets(ServiceNamespace="sagemaker", ResourceIds=[resource])["ScalableTargets"]
    assert (target["MinCapacity"], target["MaxCapacity"]) == (0, 2)
    policies = {p["PolicyType"]: p for p in aas.describe_scaling_policies(
        ServiceNamespace="sagemaker", ResourceId=resource)["ScalingPolicies"]}
    tracking = policies["TargetTrackingScaling"]["TargetTrackingScalingPolicyConfiguration"]
    assert tracking["CustomizedMetricSpecification"]["MetricName"] == "ApproximateBacklogSizePerInstance"
    (alarm,) = cw.describe_alarms(AlarmNames=[f"{stack.name('ft')}-has-backlog-without-capacity"])["MetricAlarms"]
    assert alarm["MetricName"] == "HasBacklogWithoutCapacity"
    assert alarm["AlarmActions"] == [policies["StepScaling"]["PolicyARN"]]

    again = stack.dags_test("avatar_endpoints", "2026-04-06T00:00:00+00:00")  # nothing changed: no update
    assert again.returncode == 0, again.stdout[-5000:] + again.stderr[-3000:]
    assert stack.sm.describe_endpoint(EndpointName=stack.name("ft"))["EndpointConfigName"] == ft["EndpointConfigName"]
