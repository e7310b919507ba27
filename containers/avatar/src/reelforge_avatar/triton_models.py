"""Triton Python-backend models of the avatar multi-model endpoint.

Triton runs every Python model in its own stub process, so one base pipeline per GPU is shared the only way
that works across models: :class:`SharedBaseModel` (``avatar_base``, one GPU instance) owns the pipeline and
loads, activates and deletes LoRA adapters by name (``load_lora_weights(adapter_name=…)``, ``set_adapters``,
``delete_adapters``); each user's model (:class:`UserLoraModel`, from that user's ``model.tar.gz``) is a light
forwarder that registers its adapter at ``initialize``, sends its requests there (BLS) and removes the adapter
at ``finalize``. The base refuses an adapter whose manifest names another base id or revision.

How the base reaches the endpoint: the first user model on an instance asks Triton to load ``avatar_base``
with its configuration and ``1/model.py`` as override files (``pb_utils.load_model(…, files=…)``), and the
base's ``initialize`` fetches the pipeline from ``$REELFORGE_AVATAR_BASE_MODEL_URI`` (the same tar the fine-tune
endpoint gets as its model data) into ``$REELFORGE_AVATAR_BASE_MODEL_DIR`` unless a pipeline is already there.
A user's request carries its package folder, so a base that was reloaded re-registers lost adapters.
"""

from __future__ import annotations

import io
import json
import logging
import os
from collections import OrderedDict
from pathlib import Path

import numpy as np

from reelforge_avatar.base_model import BASE_DIR_ENV, check_same_base, fetch_base, read_identity
from reelforge_avatar.package import verify_model_dir
from reelforge_avatar.triton_config import BASE_MODEL_NAME, BASE_MODEL_PY, base_config_json

log = logging.getLogger(__name__)

MAX_ADAPTERS_ENV = "REELFORGE_AVATAR_MAX_ADAPTERS"
DEFAULTS = {"STEPS": 30, "GUIDANCE": 7.5, "SEED": 0}
STEPS_LIMIT = 150


def _pb():
    import triton_python_backend_utils as pb_utils

    return pb_utils


def _text(request, name: str) -> str | None:
    tensor = _pb().get_input_tensor_by_name(request, name)
    if tensor is None:
        return None
    value = np.asarray(tensor.as_numpy()).reshape(-1)[0]
    return value.decode("utf-8") if isinstance(value, bytes | np.bytes_) else str(value)


def _number(request, name: str, kind: type):
    tensor = _pb().get_input_tensor_by_name(request, name)
    if tensor is None:
        return kind(DEFAULTS[name])
    return kind(np.asarray(tensor.as_numpy()).reshape(-1)[0])


def _png_tensor(image) -> object:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return _pb().Tensor("IMAGE_PNG", np.array([buf.getvalue()], dtype=np.object_))


def _error(message: str):
    pb = _pb()
    return pb.InferenceResponse(output_tensors=[], error=pb.TritonError(message))


class SharedBaseModel:
    """``avatar_base``: the one base pipeline per GPU with the users' LoRA adapters loaded by name."""

    def initialize(self, args: dict) -> None:
        import torch
        from diffusers import StableDiffusionPipeline

        config = json.loads(args["model_config"])
        params = {k: v.get("string_value") for k, v in config.get("parameters", {}).items()}
        self.base_dir = fetch_base(Path(os.environ.get(BASE_DIR_ENV) or params.get("base_model_dir")
                                        or "/opt/ml/avatar-base"))
        self.identity = read_identity(self.base_dir)
        self.max_adapters = int(os.environ.get(MAX_ADAPTERS_ENV, "32"))
        cuda = torch.cuda.is_available() and args.get("model_instance_kind", "GPU") == "GPU"
        self.device = f"cuda:{args.get('model_instance_device_id', '0')}" if cuda else "cpu"
        dtype = torch.float16 if cuda else torch.float32
        self.pipe = StableDiffusionPipeline.from_pretrained(str(self.base_dir), local_files_only=True, dtype=dtype,
                                                            safety_checker=None, requires_safety_checker=False)
        self.pipe.to(self.device)
        self.pipe.set_progress_bar_config(disable=True)
        self.adapters: OrderedDict[str, str] = OrderedDict()  # name → model dir, least recently used first

    # adapters -------------------------------------------------------------------------------------------------
    def load_adapter(self, name: str, model_dir: str) -> None:
        """Verify the package (sha256, same base) and load its LoRA as adapter ``name`` (LRU-evicting)."""
        if name in self.adapters:
            self.adapters.move_to_end(name)
            return
        manifest = verify_model_dir(Path(model_dir))
        check_same_base(self.identity, manifest["base_model_id"], manifest["base_model_revision"])
        weights = Path(model_dir).parent / manifest["lora_weights"]
        while len(self.adapters) >= self.max_adapters:
            oldest, _ = self.adapters.popitem(last=False)
            self.pipe.delete_adapters(oldest)
        self.pipe.load_lora_weights(str(weights.parent), weight_name=weights.name, adapter_name=name)
        self.adapters[name] = model_dir
        log.info("adapter %s loaded (%d on this base)", name, len(self.adapters))

    def unload_adapter(self, name: str) -> None:
        if self.adapters.pop(name, None) is not None:
            self.pipe.delete_adapters(name)

    def loaded_adapters(self) -> list[str]:
        return list(self.adapters)

    # requests ------------------------------------------------------------------------------------------------
    def _generate(self, request):
        import torch

        prompt = _text(request, "PROMPT")
        if not prompt:
            raise ValueError("PROMPT is required")
        steps, guidance, seed = _number(request, "STEPS", int), _number(request, "GUIDANCE", float), _number(
            request, "SEED", int)
        if not 1 <= steps <= STEPS_LIMIT:
            raise ValueError(f"STEPS must be in [1, {STEPS_LIMIT}], not {steps}")
        name, model_dir = _text(request, "ADAPTER_NAME"), _text(request, "ADAPTER_DIR")
        if name:
            if name not in self.adapters:
                if not model_dir:
                    raise ValueError(f"adapter {name} is not loaded")
                self.load_adapter(name, model_dir)
            self.adapters.move_to_end(name)
            self.pipe.enable_lora()
            self.pipe.set_adapters([name])
        elif self.adapters:
            self.pipe.disable_lora()
        generator = torch.Generator(device="cpu").manual_seed(seed)
        image = self.pipe(prompt, negative_prompt=_text(request, "NEGATIVE_PROMPT") or None,
                          num_inference_steps=steps, guidance_scale=guidance, generator=generator).images[0]
        return _pb().InferenceResponse(output_tensors=[_png_tensor(image)])

    def execute(self, requests: list) -> list:
        responses = []
        for request in requests:
            action = _text(request, "ACTION") or "generate"
            try:
                if action == "load":
                    self.load_adapter(_text(request, "ADAPTER_NAME") or "", _text(request, "ADAPTER_DIR") or "")
                    responses.append(_pb().InferenceResponse(output_tensors=[]))
                elif action == "unload":
                    self.unload_adapter(_text(request, "ADAPTER_NAME") or "")
                    responses.append(_pb().InferenceResponse(output_tensors=[]))
                elif action == "generate":
                    responses.append(self._generate(request))
                else:
                    responses.append(_error(f"unknown ACTION {action!r}"))
            except Exception as err:  # noqa: BLE001 - every failure goes back to the caller as a Triton error
                log.exception("avatar_base %s failed", action)
                responses.append(_error(f"{action}: {err}"))
        return responses

    def finalize(self) -> None:
        for name in list(self.adapters):
            self.unload_adapter(name)
        self.pipe = None


def _bls(inputs: list, outputs: list[str]):
    pb = _pb()
    response = pb.InferenceRequest(model_name=BASE_MODEL_NAME, requested_output_names=outputs, inputs=inputs).exec()
    if response.has_error():
        raise RuntimeError(response.error().message())
    return response


def _str_tensor(name: str, value: str):
    return _pb().Tensor(name, np.array([value.encode("utf-8")], dtype=np.object_))


class UserLoraModel:
    """One user's avatar: registers its adapter on the shared base and forwards generation requests to it."""

    def initialize(self, args: dict) -> None:
        pb = _pb()
        self.model_dir = str(Path(args["model_repository"]))
        self.version_dir = Path(self.model_dir) / str(args.get("model_version") or "1")
        self.manifest = verify_model_dir(Path(self.model_dir))
        self.name = self.manifest["model_name"]
        if not pb.is_model_ready(BASE_MODEL_NAME):
            # The base is no TargetModel: the MME's repository holds only users' packages. Triton's load API
            # with override files puts it there (explicit model control, as SageMaker's MME runs Triton).
            pb.load_model(BASE_MODEL_NAME, config=base_config_json(),
                          files={"file:1/model.py": BASE_MODEL_PY.encode()})
        _bls([_str_tensor("ACTION", "load"), _str_tensor("ADAPTER_NAME", self.name),
              _str_tensor("ADAPTER_DIR", self.model_dir)], [])

    def execute(self, requests: list) -> list:
        pb = _pb()
        responses = []
        for request in requests:
            inputs = [_str_tensor("ADAPTER_NAME", self.name), _str_tensor("ADAPTER_DIR", self.model_dir)]
            for key in ("PROMPT", "NEGATIVE_PROMPT", "SEED", "STEPS", "GUIDANCE"):
                tensor = pb.get_input_tensor_by_name(request, key)
                if tensor is not None:
                    inputs.append(pb.Tensor(key, tensor.as_numpy()))
            try:
                reply = _bls(inputs, ["IMAGE_PNG"])
                image = pb.get_output_tensor_by_name(reply, "IMAGE_PNG")
                responses.append(pb.InferenceResponse(output_tensors=[pb.Tensor("IMAGE_PNG", image.as_numpy())]))
            except Exception as err:  # noqa: BLE001 - reported to the client as a Triton error
                responses.append(_error(f"{self.name}: {err}"))
        return responses

    def finalize(self) -> None:
        try:
            _bls([_str_tensor("ACTION", "unload"), _str_tensor("ADAPTER_NAME", self.name)], [])
        except Exception as err:  # noqa: BLE001 - the base may already be gone at shutdown
            log.warning("unload of %s failed: %s", self.name, err)
