"""The fine-tune async endpoint end to end on CPU: S3 (moto) → DreamBooth+LoRA on a tiny pipeline → model.tar.gz.

Also the failure paths: a training failure raises (no success body, nothing uploaded), a base-model mismatch
is refused before any training, and ``output_fn`` never answers a non-success.
"""

from __future__ import annotations

import json

import boto3
import numpy as np
import pytest
import torch
from moto import mock_aws
from reelforge_avatar import safe_tar, serving
from reelforge_avatar.errors import TrainingError, UserError
from reelforge_avatar.package import sha256_file, verify_model_dir
from tiny_pipeline import BASE_ID, BASE_REVISION

BUCKET = "reelforge-avatars"


def _request(**overrides) -> dict:
    request = {
        "job_name": "avatar-u1", "instance_data_uri": f"s3://{BUCKET}/u1/crops/", "class_data_uri": None,
        "output_s3_uri": f"s3://{BUCKET}/u1/model/model.tar.gz", "model_name": "avatar-u1", "token": "<<TOK>>",
        "class_prompt": "a photo of a person", "base_model_id": BASE_ID, "base_model_revision": BASE_REVISION,
        "max_train_steps": 3, "lora_rank": 4, "learning_rate": 5e-3, "gradient_accumulation_steps": 2,
        "mixed_precision": "fp16", "seed": 3, "num_class_images": 2,
    }
    request.update(overrides)
    return request


@pytest.fixture
def s3(instance_images, monkeypatch):
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket=BUCKET)
        for path in sorted(instance_images.iterdir()):
            client.upload_file(str(path), BUCKET, f"u1/crops/{path.name}")
        yield client


@pytest.fixture
def service(tiny_base, s3, tmp_path, monkeypatch):
    monkeypatch.setenv("REELFORGE_AVATAR_BASE_MODEL_DIR", str(tiny_base))
    ctx = serving.model_fn("/opt/ml/model")
    ctx.s3_client, ctx.work_root = s3, tmp_path
    ctx.class_inference_steps = 2
    return ctx


def _images(pipe, prompt: str) -> np.ndarray:
    return pipe(prompt, num_inference_steps=3, generator=torch.Generator().manual_seed(11), output_type="np").images


def test_finetune_uploads_a_verified_lora_package_that_changes_the_pipeline(service, s3, tiny_base, tmp_path):
    request = serving.input_fn(json.dumps(_request()), "application/json")
    body, content_type = serving.output_fn(serving.predict_fn(request, service), "application/json")
    result = json.loads(body)
    assert content_type == "application/json" and result["status"] == "succeeded"
    assert result["model_uri"] == f"s3://{BUCKET}/u1/model/model.tar.gz"
    manifest = result["manifest"]
    assert (manifest["base_model_id"], manifest["base_model_revision"]) == (BASE_ID, BASE_REVISION)
    assert (manifest["lora_rank"], manifest["max_train_steps"], manifest["token"]) == (4, 3, "<<TOK>>")
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="u1/model/")["Contents"]}
    assert keys == {"u1/model/model.tar.gz"}  # the temporary key is gone

    archive = tmp_path / "model.tar.gz"
    s3.download_file(BUCKET, "u1/model/model.tar.gz", str(archive))
    names = safe_tar.extract(archive, tmp_path / "unpacked")
    assert set(names) == {"avatar-u1/config.pbtxt", "avatar-u1/1/model.py", "avatar-u1/1/manifest.json",
                          "avatar-u1/1/lora/pytorch_lora_weights.safetensors"}
    model_dir = tmp_path / "unpacked" / "avatar-u1"
    assert verify_model_dir(model_dir) == manifest
    assert set(manifest["files"]) == set(names) - {"avatar-u1/1/manifest.json"}
    assert 'name: "avatar-u1"' in (model_dir / "config.pbtxt").read_text()
    weights = model_dir / "1" / "lora" / "pytorch_lora_weights.safetensors"
    assert manifest["files"]["avatar-u1/1/lora/pytorch_lora_weights.safetensors"] == sha256_file(weights)

    from diffusers import StableDiffusionPipeline
    from safetensors.torch import load_file

    state = load_file(str(weights))
    assert any(k.startswith("unet.") for k in state) and any(k.startswith("text_encoder.") for k in state)
    pipe = StableDiffusionPipeline.from_pretrained(str(tiny_base), local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    before = _images(pipe, "a photo of <<TOK>> person")
    assert np.array_equal(before, _images(pipe, "a photo of <<TOK>> person"))  # the comparison is deterministic
    pipe.load_lora_weights(str(weights.parent), weight_name=weights.name, adapter_name="avatar-u1")
    after = _images(pipe, "a photo of <<TOK>> person")
    assert np.abs(after - before).max() > 1e-3
    pipe.delete_adapters("avatar-u1")
    assert np.allclose(_images(pipe, "a photo of <<TOK>> person"), before, atol=1e-5)


def test_a_training_failure_raises_and_uploads_nothing(service, s3, monkeypatch):
    def nan_loss(*args, **kwargs):
        return torch.tensor(float("nan"), requires_grad=True)

    monkeypatch.setattr(torch.nn.functional, "mse_loss", nan_loss)
    request = serving.input_fn(json.dumps(_request()), "application/json")
    with pytest.raises(TrainingError, match="loss is nan"):
        serving.predict_fn(request, service)
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="u1/model/")


def test_undecodable_instance_data_raises(service, s3):
    s3.put_object(Bucket=BUCKET, Key="u2/crops/face_0000.png", Body=b"not a png")
    request = serving.input_fn(json.dumps(_request(instance_data_uri=f"s3://{BUCKET}/u2/crops/")), "application/json")
    with pytest.raises(OSError):
        serving.predict_fn(request, service)
    assert "Contents" not in s3.list_objects_v2(Bucket=BUCKET, Prefix="u1/model/")


def test_empty_instance_prefix_and_base_mismatch_are_refused(service, s3):
    request = serving.input_fn(json.dumps(_request(instance_data_uri=f"s3://{BUCKET}/nobody/")), "application/json")
    with pytest.raises(UserError, match="no instance images"):
        serving.predict_fn(request, service)
    request = serving.input_fn(json.dumps(_request(base_model_revision="f" * 40)), "application/json")
    with pytest.raises(UserError, match="base model mismatch"):
        serving.predict_fn(request, service)


def test_output_fn_never_answers_a_failure_as_success():
    with pytest.raises(RuntimeError, match="non-success"):
        serving.output_fn({"status": "failed"}, "application/json")


def test_serve_follows_the_sagemaker_container_contract(tiny_base, monkeypatch):
    """``serve`` (the local base's stand-in for the DLC's TorchServe): /ping, /invocations, errors as 500."""
    import threading
    import urllib.error
    import urllib.request
    from pathlib import Path

    from reelforge_avatar import serve

    monkeypatch.setenv("REELFORGE_AVATAR_BASE_MODEL_DIR", str(tiny_base))
    monkeypatch.setenv("SAGEMAKER_SUBMIT_DIRECTORY", str(Path(serve.__file__).parents[2] / "code"))
    monkeypatch.setenv("SAGEMAKER_PROGRAM", "inference.py")
    server = serve.make_server(0)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}"
    try:
        with urllib.request.urlopen(f"{url}/ping", timeout=10) as answer:  # noqa: S310 - local
            assert answer.status == 200
        bad = urllib.request.Request(f"{url}/invocations", data=json.dumps({**_request(), "steps": 1}).encode(),  # noqa: S310
                                     method="POST", headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(bad, timeout=10)  # noqa: S310 - local
        assert refused.value.code == 500
        assert refused.value.read().decode() == "RequestError: unknown request keys: ['steps']"
        mismatch = urllib.request.Request(  # noqa: S310 - local
            f"{url}/invocations", data=json.dumps(_request(base_model_revision="f" * 40)).encode(), method="POST",
            headers={"Content-Type": "application/json"})
        with pytest.raises(urllib.error.HTTPError, match="500") as refused:
            urllib.request.urlopen(mismatch, timeout=10)  # noqa: S310 - local
        assert "base model mismatch" in refused.value.read().decode()
    finally:
        server.shutdown()
        server.server_close()
