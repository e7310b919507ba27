"""The Triton Python-backend models with a test double of ``triton_python_backend_utils``: two users' LoRA
adapters on one shared base, generation, unload, and refusal of a LoRA trained on another base."""

from __future__ import annotations

import io
import json
import shutil
import sys

import numpy as np
import pytest
import triton_python_backend_utils_double as pb
from PIL import Image
from reelforge_avatar.package import build_model_dir
from reelforge_avatar.training import TrainConfig, train_lora
from reelforge_avatar.triton_config import BASE_MODEL_NAME, BASE_MODEL_PY, base_config_json, base_config_pbtxt
from tiny_pipeline import BASE_ID, BASE_REVISION

PROMPT = "a photo of <<TOK>> person"


@pytest.fixture(scope="module")
def user_packages(tiny_base, instance_images, tmp_path_factory):
    """Two users' unpacked model packages (LoRAs trained for 2 steps each, different seeds) + one on another base."""
    root = tmp_path_factory.mktemp("models")
    packages = {}
    for name, seed, revision in (("user-a", 1, BASE_REVISION), ("user-b", 2, BASE_REVISION),
                                 ("user-other-base", 3, "f" * 40)):
        config = TrainConfig(instance_prompt=PROMPT, class_prompt="a photo of a person", max_train_steps=2,
                             learning_rate=2e-2, lora_rank=4, seed=seed, num_class_images=1, class_inference_steps=1)
        work = tmp_path_factory.mktemp(name)
        weights = train_lora(tiny_base, instance_images, None, work / "lora", config, work_dir=work)
        build_model_dir(root, model_name=name, lora_weights=weights,
                        manifest_fields={"base_model_id": BASE_ID, "base_model_revision": revision, "lora_rank": 4,
                                         "max_train_steps": 2, "token": "<<TOK>>"})
        packages[name] = root / name
    return packages


@pytest.fixture
def triton(monkeypatch, tiny_base):
    """The double installed as ``triton_python_backend_utils`` and a started shared base model."""
    from reelforge_avatar.triton_models import SharedBaseModel

    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", pb)
    monkeypatch.setenv("REELFORGE_AVATAR_BASE_MODEL_DIR", str(tiny_base))
    pb.reset()
    base = SharedBaseModel()
    base.initialize({"model_config": json.dumps({"name": BASE_MODEL_NAME, "parameters": {}}),
                     "model_instance_kind": "CPU", "model_instance_device_id": "0"})
    pb.register_model(BASE_MODEL_NAME, base)
    yield base
    base.finalize()
    pb.reset()


def _user(model_dir):
    """Start a user's model as Triton would, through its generated ``1/model.py``."""
    namespace: dict = {}
    exec(compile((model_dir / "1" / "model.py").read_text(), str(model_dir / "1" / "model.py"), "exec"), namespace)  # noqa: S102
    model = namespace["TritonPythonModel"]()
    model.initialize({"model_repository": str(model_dir), "model_version": "1",
                      "model_config": json.dumps({"name": model_dir.name})})
    return model


def _infer(model, prompt: str = PROMPT, seed: int = 5, steps: int = 3) -> bytes:
    request = pb.InferenceRequest(inputs=[
        pb.Tensor("PROMPT", np.array([prompt.encode()], dtype=np.object_)),
        pb.Tensor("SEED", np.array([seed], dtype=np.int64)), pb.Tensor("STEPS", np.array([steps], dtype=np.int32)),
        pb.Tensor("GUIDANCE", np.array([3.0], dtype=np.float32))])
    (response,) = model.execute([request])
    assert not response.has_error(), response.error() and response.error().message()
    return bytes(pb.get_output_tensor_by_name(response, "IMAGE_PNG").as_numpy()[0])


def _pixels(png: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(png)) as img:
        assert img.format == "PNG"
        return np.asarray(img, dtype=np.int16)


def test_two_users_share_one_base_and_get_their_own_adapter(triton, user_packages):
    pipe = triton.pipe
    plain = _infer(triton)  # the base without any adapter
    user_a, user_b = _user(user_packages["user-a"]), _user(user_packages["user-b"])
    assert triton.loaded_adapters() == ["user-a", "user-b"]
    assert triton.pipe is pipe  # one pipeline: adapters, not pipelines, are loaded
    assert set(pipe.get_list_adapters()["unet"]) == {"user-a", "user-b"}

    a1, b1, a2 = _infer(user_a), _infer(user_b), _infer(user_a)
    assert a1 == a2  # same seed, same adapter → same image, whatever ran in between
    assert np.abs(_pixels(a1) - _pixels(plain)).max() > 0
    assert np.abs(_pixels(b1) - _pixels(plain)).max() > 0
    assert np.abs(_pixels(a1) - _pixels(b1)).max() > 0
    assert _infer(triton) == plain  # no adapter named → the plain base again
    assert _infer(user_a, seed=6) != a1

    user_a.finalize()
    assert triton.loaded_adapters() == ["user-b"]
    assert set(pipe.get_list_adapters()["unet"]) == {"user-b"}
    assert _infer(user_b) == b1
    user_b.finalize()
    assert triton.loaded_adapters() == []


def test_a_lora_trained_on_another_base_is_refused(triton, user_packages):
    with pytest.raises(RuntimeError, match="base model mismatch"):
        _user(user_packages["user-other-base"])
    assert triton.loaded_adapters() == []


def test_a_tampered_package_is_refused(triton, user_packages, tmp_path):
    copy = tmp_path / "user-a"
    shutil.copytree(user_packages["user-a"], copy)
    weights = copy / "1" / "lora" / "pytorch_lora_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:-8] + b"\x00" * 8)
    with pytest.raises(Exception, match="sha256 mismatch"):
        _user(copy)


def test_evicted_adapters_reload_and_bad_requests_come_back_as_errors(triton, user_packages, monkeypatch):
    triton.max_adapters = 1
    user_a, user_b = _user(user_packages["user-a"]), _user(user_packages["user-b"])
    assert triton.loaded_adapters() == ["user-b"]  # user-a evicted (LRU)
    a = _infer(user_a)  # reloaded from its package on demand
    assert triton.loaded_adapters() == ["user-a"]
    assert len(a) > 100
    bad = pb.InferenceRequest(inputs=[pb.Tensor("PROMPT", np.array([PROMPT.encode()], dtype=np.object_)),
                                      pb.Tensor("STEPS", np.array([999], dtype=np.int32))])
    (response,) = user_b.execute([bad])
    assert response.has_error() and "STEPS must be in" in response.error().message()
    (response,) = triton.execute([pb.InferenceRequest(inputs=[pb.Tensor("ACTION", np.array([b"explode"]))])])
    assert response.has_error() and "unknown ACTION" in response.error().message()


def test_user_model_loads_the_base_from_override_files_when_it_is_not_ready(triton, user_packages):
    pb.reset()  # no avatar_base in the repository: the user's model has Triton load it from override files
    user = _user(user_packages["user-a"])
    assert pb.LOAD_CALLS == [BASE_MODEL_NAME]
    base = pb._MODELS[BASE_MODEL_NAME]
    assert base is not triton and base.loaded_adapters() == ["user-a"]
    assert json.loads(base_config_json())["parameters"]["base_model_dir"] == {"string_value": "/opt/ml/avatar-base"}
    assert len(_infer(user)) > 100
    user.finalize()
    base.finalize()


def test_shipped_triton_repository_matches_the_generator():
    from pathlib import Path

    repo = Path(__file__).resolve().parents[3] / "containers" / "avatar" / "triton" / "avatar_base"
    assert (repo / "config.pbtxt").read_text() == base_config_pbtxt()
    assert (repo / "1" / "model.py").read_text() == BASE_MODEL_PY


def test_stamp_base_records_the_identity_the_base_checks(tmp_path, capsys):
    from reelforge_avatar.base_model import read_identity
    from reelforge_avatar.cli import main

    assert main(["stamp-base", "--dir", str(tmp_path)]) == 2  # not a pipeline folder
    (tmp_path / "model_index.json").write_text("{}")
    assert main(["stamp-base", "--dir", str(tmp_path), "--id", "org/model", "--revision", "abc"]) == 0
    assert read_identity(tmp_path) == {"base_model_id": "org/model", "base_model_revision": "abc"}
