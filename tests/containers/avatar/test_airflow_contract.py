"""The Airflow side and the container agree, each edge run from both sides:

* request: the plan's fine-tune request is one the endpoint's ``input_fn`` accepts;
* package: the ``model.tar.gz`` the service's ``predict_fn`` uploads passes the DAG's package check;
* MME request and response: the DAG's KServe v2 request (tritonclient) goes through the REAL Python-backend
  models (``initialize``/``execute``) inside ``triton_server_double.TritonMmeDouble`` (a TEST DOUBLE of the
  Triton server, which cannot run here), and the DAG decodes the response into PNG images;
* the preprocessing arguments, the base model the serving base pins, and the invocation limits.
"""

from __future__ import annotations

import io
import json
import tarfile
from dataclasses import fields
from datetime import UTC, datetime

import boto3
import numpy as np
import pytest
from moto import mock_aws
from PIL import Image
from reelforge_avatar import safe_tar, serving
from reelforge_avatar.base_model import PRODUCTION_BASE_ID, PRODUCTION_BASE_REVISION
from reelforge_avatar.cli import main
from tiny_pipeline import BASE_ID, BASE_REVISION, RESOLUTION

from reelforge.avatar.limits import ASYNC_INVOCATION_LIMIT_S, max_steps
from reelforge.avatar.mme import MmeResponseError, decode_image, sample_request
from reelforge.avatar.package import expected_manifest, inspect_package, verify_manifest
from reelforge.avatar.plan import form_params, generation_requests, plan_avatar
from reelforge.avatar.settings import AvatarSettings
from reelforge.sagemaker_requests import InvalidParamsError

FORM = {"user_id": "Jane.Doe_42", "selfies_uri": "s3://in/avatar/incoming/jane/s/", "steps": 400, "lora_rank": 16,
        "token": "<<TOK>>", "samples": 3, "prompt": "a portrait of {token} person", "class_images": 100}
BUCKET = "art"


def settings(**overrides) -> AvatarSettings:
    values = {f.name: f"x-{f.name}" for f in fields(AvatarSettings)}
    values.update(min_selfies=10, max_selfies=40, max_selfie_bytes=10**7, max_total_bytes=10**8, mixed_precision="fp16",
                  artifacts_bucket=BUCKET, artifacts_prefix="avatar/", mme_bucket=BUCKET, mme_prefix="avatar/mme/",
                  output_bucket="out", output_prefix="avatar/", learning_rate=1e-4, gradient_accumulation_steps=2,
                  seed=7, processing_volume_gb=30, base_model_id=PRODUCTION_BASE_ID,
                  base_model_revision=PRODUCTION_BASE_REVISION, negative_prompt="blurry", sample_steps=30,
                  guidance=7.5, max_package_bytes=10**8, finetune_setup_s=300.0, finetune_class_image_s=4.0,
                  finetune_step_s=0.9, sample_step_s=0.15, sample_overhead_s=3.0)
    values.update(overrides)
    return AvatarSettings(**values)


def airflow_plan(form: dict | None = None, **overrides) -> dict:
    return plan_avatar(p=form_params(form or FORM), run_id="manual__r", run_after=datetime(2026, 1, 1, tzinfo=UTC),
                       settings=settings(**overrides))


def test_the_request_airflow_sends_is_one_the_endpoint_accepts():
    request = serving.input_fn(json.dumps(airflow_plan()["request"]), "application/json")
    assert (request.max_train_steps, request.lora_rank, request.gradient_accumulation_steps) == (400, 16, 2)
    assert request.num_class_images == 100
    assert (request.base_model_id, request.base_model_revision) == (PRODUCTION_BASE_ID, PRODUCTION_BASE_REVISION)


def test_the_preprocessing_arguments_are_the_container_cli(tmp_path, monkeypatch):
    spec = airflow_plan()["prep_config"]["AppSpecification"]
    assert spec["ContainerEntrypoint"] == ["reelforge-avatar", "preprocess"]
    args = spec["ContainerArguments"]
    assert args[args.index("--min-faces") + 1] == "10"
    # argparse would raise SystemExit on an unknown option; an empty folder is a refused set (exit 2).
    monkeypatch.setenv("REELFORGE_OPT_ML", str(tmp_path))
    args = [str(tmp_path / a.removeprefix("/opt/ml/")) if a.startswith("/opt/ml/") else a for a in args]
    (tmp_path / "processing" / "input" / "selfies").mkdir(parents=True)
    assert main(["preprocess", *args]) == 2
    assert "face" in (tmp_path / "output" / "failure").read_text()


def test_the_default_serving_base_is_the_one_the_container_pins(monkeypatch):
    from airflow.sdk import Variable

    from reelforge.avatar.settings import avatar_settings

    # only the settings that name an account (which have no default) are set
    account = {"reelforge_avatar_topic_arn": "arn:aws:sns:eu-west-1:000000000000:t",
               "reelforge_avatar_image_uri": "000000000000.dkr.ecr.eu-west-1.amazonaws.com/reelforge-avatar:1",
               "reelforge_avatar_role_arn": "arn:aws:iam::000000000000:role/r"}
    monkeypatch.setattr(Variable, "get", staticmethod(lambda key, default=None: account.get(key, default)))
    found = avatar_settings()
    assert (found.base_model_id, found.base_model_revision) == (PRODUCTION_BASE_ID, PRODUCTION_BASE_REVISION)
    assert found.triton_image_uri == "000000000000.dkr.ecr.eu-west-1.amazonaws.com/reelforge-avatar-triton:1"


def test_runs_that_cannot_finish_within_one_invocation_are_refused_with_the_reason():
    fit = max_steps(class_images=100, settings=settings())
    assert fit == (ASYNC_INVOCATION_LIMIT_S - 300 - 400) // (2 * 0.9)
    assert airflow_plan({**FORM, "steps": fit})["request"]["max_train_steps"] == fit
    with pytest.raises(InvalidParamsError, match=rf"an async invocation must finish within 3600 s: at most {fit} "):
        airflow_plan({**FORM, "steps": fit + 1})
    fewer = max_steps(class_images=10, settings=settings())
    assert fewer > fit and airflow_plan({**FORM, "steps": fewer, "class_images": 10})
    with pytest.raises(InvalidParamsError, match="at most 944 steps with 400 class images"):
        airflow_plan({**FORM, "steps": 1000, "class_images": 400})
    with pytest.raises(InvalidParamsError, match="must answer within 60 s"):
        airflow_plan(sample_steps=400)


@pytest.fixture(scope="module")
def edge(tiny_base, instance_images, tmp_path_factory):
    """The plan's request run by the service's handlers against S3 (moto): the package it uploaded, the base tar."""
    with pytest.MonkeyPatch.context() as mp, mock_aws():
        for key, value in (("AWS_DEFAULT_REGION", "us-east-1"), ("AWS_ACCESS_KEY_ID", "testing"),
                           ("AWS_SECRET_ACCESS_KEY", "testing"), ("REELFORGE_AVATAR_BASE_MODEL_DIR", str(tiny_base))):
            mp.setenv(key, value)
        mp.delenv("AWS_ENDPOINT_URL", raising=False)
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket=BUCKET)
        plan = airflow_plan({**FORM, "steps": 50, "lora_rank": 4, "class_images": 1},
                            base_model_id=BASE_ID, base_model_revision=BASE_REVISION, learning_rate=2e-2,
                            gradient_accumulation_steps=1, mixed_precision="no")
        bucket, prefix = plan["crops_uri"][5:].split("/", 1)
        for path in sorted(instance_images.iterdir()):
            s3.upload_file(str(path), bucket, prefix + path.name)
        service = serving.model_fn("/opt/ml/model")
        service.s3_client, service.work_root, service.class_inference_steps = s3, tmp_path_factory.mktemp("w"), 2
        request = serving.input_fn(json.dumps(plan["request"]), "application/json")
        body, _ = serving.output_fn(serving.predict_fn(request, service), "application/json")
        out_bucket, key = plan["request"]["output_s3_uri"][5:].split("/", 1)
        package = s3.get_object(Bucket=out_bucket, Key=key)["Body"].read()
        base_tar = tmp_path_factory.mktemp("base-tar") / "sd-base.tar.gz"
        safe_tar.pack(tiny_base, base_tar)
        s3.upload_file(str(base_tar), BUCKET, "avatar/base/sd-base.tar.gz")
        yield {"plan": plan, "response": json.loads(body), "package": package, "s3": s3, "mp": mp,
               "base_uri": f"s3://{BUCKET}/avatar/base/sd-base.tar.gz"}


def _check(plan: dict, package: bytes, response_manifest: dict | None = None) -> list[str]:
    """What ``tasks.verify_package`` checks of a package, on the bytes."""
    request = plan["request"]
    found = inspect_package(io.BytesIO(package), model_name=request["model_name"], max_unpacked_bytes=10**8)
    problems = verify_manifest(found, expected_manifest(request, base_model_id=BASE_ID,
                                                        base_model_revision=BASE_REVISION))
    if response_manifest not in (None, found["manifest"]):
        problems.append("the response's manifest differs")
    return problems


def test_the_package_the_service_writes_passes_the_dags_check(edge):
    assert edge["response"]["model_uri"] == edge["plan"]["request"]["output_s3_uri"]
    assert _check(edge["plan"], edge["package"], edge["response"]["manifest"]) == []


def test_the_dags_check_refuses_other_shapes_and_tampering(edge):
    plan, package = edge["plan"], edge["package"]
    name = plan["model_name"]
    with tarfile.open(fileobj=io.BytesIO(package)) as tar:
        members = {m.name: tar.extractfile(m).read() for m in tar.getmembers() if m.isfile()}

    def repack(files: dict[str, bytes]) -> bytes:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
            for member, body in files.items():
                info = tarfile.TarInfo(member)
                info.size = len(body)
                tar.addfile(info, io.BytesIO(body))
        return buffer.getvalue()

    weights = f"{name}/1/lora/pytorch_lora_weights.safetensors"
    tampered = {**members, weights: members[weights][:-4] + b"\0\0\0\0"}
    assert any("sha256" in p for p in _check(plan, repack(tampered)))
    flat = {m.removeprefix(f"{name}/1/").removeprefix(f"{name}/"): b for m, b in members.items()}
    with pytest.raises(ValueError, match=f"outside the model folder {name}/"):
        _check(plan, repack(flat))  # the old DAG-side shape: manifest.json at the root
    manifest = json.loads(members[f"{name}/1/manifest.json"])
    wrong = {**members, f"{name}/1/manifest.json": json.dumps({**manifest, "max_train_steps": 51}).encode()}
    assert _check(plan, repack(wrong)) == ["manifest max_train_steps is 51, expected 50"]


@pytest.fixture(scope="module")
def mme(edge, tmp_path_factory):
    """The registered package loaded by the Triton double; the base fetched from S3 as on the endpoint."""
    from triton_server_double import TritonMmeDouble

    edge["mp"].setenv("REELFORGE_AVATAR_BASE_MODEL_DIR", str(tmp_path_factory.mktemp("mme") / "avatar-base"))
    edge["mp"].setenv("REELFORGE_AVATAR_BASE_MODEL_URI", edge["base_uri"])
    archive = tmp_path_factory.mktemp("target") / "model.tar.gz"
    archive.write_bytes(edge["package"])
    triton = TritonMmeDouble(tmp_path_factory.mktemp("repository"))
    model_name = triton.load_target(edge["plan"]["target_model"], archive)
    yield triton, model_name
    triton.unload_all()


def _png(image: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(image)) as img:
        assert img.format == "PNG" and img.size == (RESOLUTION, RESOLUTION)
        return np.asarray(img, dtype=np.int16)


def test_the_dags_mme_requests_come_back_as_the_users_images(edge, mme):
    import triton_python_backend_utils_double as pb

    triton, model_name = mme
    plan = edge["plan"]
    assert model_name == plan["model_name"]
    assert pb.LOAD_CALLS == ["avatar_base"]  # the user's model loaded the shared base with override files
    base = pb._MODELS["avatar_base"]
    assert base.loaded_adapters() == [model_name]
    assert (base.base_dir / "reelforge_base.json").is_file()  # fetched from REELFORGE_AVATAR_BASE_MODEL_URI

    bodies = [{**b, "steps": 2} for b in generation_requests(plan, settings())]
    assert [b["seed"] for b in bodies] == [7, 8, 9] and bodies[0]["prompt"] == "a portrait of <<TOK>> person"
    images = []
    for body in bodies:
        payload, content_type = sample_request(body)
        status, answer, answer_type = triton.infer(model_name, payload, content_type)
        assert status == 200, answer
        images.append(decode_image(answer, answer_type))
    pixels = [_png(image) for image in images]
    assert np.abs(pixels[0] - pixels[1]).max() > 0  # another seed, another image

    payload, content_type = sample_request(bodies[0])
    assert decode_image(*triton.infer(model_name, payload, content_type)[1:]) == images[0]  # deterministic
    base_only, base_type = sample_request(bodies[0])
    status, answer, answer_type = triton.infer("avatar_base", base_only, base_type)
    assert status == 200 and np.abs(_png(decode_image(answer, answer_type)) - pixels[0]).max() > 0  # the LoRA acts


def test_mme_errors_reach_the_dag_as_errors(mme):
    triton, model_name = mme
    payload, content_type = sample_request({"prompt": "x", "seed": 0, "steps": 999, "guidance": 1.0})
    status, answer, _ = triton.infer(model_name, payload, content_type)
    assert status == 400 and "STEPS must be in [1, 150]" in json.loads(answer)["error"]
    with pytest.raises(MmeResponseError, match="not a KServe v2 response"):
        decode_image(b"\x89PNG\r\n\x1a\n not a response", "image/png")


def test_the_mme_request_is_kserve_v2_with_binary_tensors():
    from triton_server_double import decode_request

    payload, content_type = sample_request({"prompt": "a b", "negative_prompt": "c", "seed": 5, "steps": 3,
                                            "guidance": 2.5})
    assert content_type.startswith("application/vnd.sagemaker-triton.binary+json;json-header-size=")
    header, arrays = decode_request(payload, content_type)
    assert header["outputs"] == [{"name": "IMAGE_PNG", "parameters": {"binary_data": True}}]
    assert {k: v.tolist() for k, v in arrays.items()} == {
        "PROMPT": [b"a b"], "NEGATIVE_PROMPT": [b"c"], "SEED": [5], "STEPS": [3], "GUIDANCE": [2.5]}
    assert {k: str(v.dtype) for k, v in arrays.items() if k in ("SEED", "STEPS", "GUIDANCE")} == {
        "SEED": "int64", "STEPS": "int32", "GUIDANCE": "float32"}
