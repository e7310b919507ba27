"""TEST DOUBLE of Triton's ``triton_python_backend_utils`` (the module Triton's Python-backend stub provides).

Implements only what the avatar models use: ``Tensor``, ``InferenceRequest`` (a client request and a BLS
request: ``exec()`` calls the registered model's ``execute`` in this process), ``InferenceResponse``,
``TritonError``, ``get_input_tensor_by_name``, ``get_output_tensor_by_name``, ``is_model_ready``, ``load_model``
(with override ``files``, as Triton does: they are written to a fresh model folder and its ``1/model.py`` is
started). Models are registered with :func:`register_model` or started with :func:`start_model`; nothing here
runs Triton.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np

_MODELS: dict[str, object] = {}
LOAD_CALLS: list[str] = []


class TritonError(Exception):
    def __init__(self, msg: str) -> None:
        super().__init__(msg)
        self._msg = msg

    def message(self) -> str:
        return self._msg


class Tensor:
    def __init__(self, name: str, array) -> None:
        self._name, self._array = name, np.asarray(array)

    def name(self) -> str:
        return self._name

    def as_numpy(self) -> np.ndarray:
        return self._array


class InferenceResponse:
    def __init__(self, output_tensors: list[Tensor] | None = None, error: TritonError | None = None) -> None:
        self._outputs, self._error = list(output_tensors or []), error

    def output_tensors(self) -> list[Tensor]:
        return self._outputs

    def has_error(self) -> bool:
        return self._error is not None

    def error(self) -> TritonError | None:
        return self._error


class InferenceRequest:
    def __init__(self, model_name: str = "", requested_output_names: list[str] | None = None,
                 inputs: list[Tensor] | None = None) -> None:
        self.model_name, self.requested_output_names, self._inputs = model_name, requested_output_names, inputs or []

    def inputs(self) -> list[Tensor]:
        return self._inputs

    def exec(self) -> InferenceResponse:
        model = _MODELS.get(self.model_name)
        if model is None:
            return InferenceResponse(error=TritonError(f"model {self.model_name} is not loaded"))
        return model.execute([self])[0]


def get_input_tensor_by_name(request: InferenceRequest, name: str) -> Tensor | None:
    return next((t for t in request.inputs() if t.name() == name), None)


def get_output_tensor_by_name(response: InferenceResponse, name: str) -> Tensor | None:
    return next((t for t in response.output_tensors() if t.name() == name), None)


def is_model_ready(model_name: str, model_version: str = "") -> bool:
    return model_name in _MODELS


def start_model(model_dir: Path, config: str, version: str = "1") -> object:
    """Run ``<model_dir>/<version>/model.py``'s ``TritonPythonModel`` and ``initialize`` it with Triton's args."""
    source = model_dir / version / "model.py"
    namespace: dict = {}
    exec(compile(source.read_text(), str(source), "exec"), namespace)  # noqa: S102 - the model's own entry
    model = namespace["TritonPythonModel"]()
    model.initialize({"model_config": config, "model_repository": str(model_dir), "model_version": version,
                      "model_name": json.loads(config)["name"], "model_instance_kind": "CPU",
                      "model_instance_device_id": "0"})
    return model


def load_model(model_name: str, config: str = "", files: dict | None = None) -> None:
    LOAD_CALLS.append(model_name)
    if files is None:
        if model_name not in _MODELS:
            raise TritonError(f"no model {model_name} in the double's repository")
        return
    if not config:
        raise TritonError("load_model with files needs the model configuration")
    folder = Path(tempfile.mkdtemp(prefix=f"{model_name}-")) / model_name
    for key, content in files.items():
        if not key.startswith("file:"):
            raise TritonError(f"override file keys start with 'file:', not {key!r}")
        path = folder / key.removeprefix("file:")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
    _MODELS[model_name] = start_model(folder, config)


def register_model(name: str, model: object) -> None:
    _MODELS[name] = model


def reset() -> None:
    _MODELS.clear()
    LOAD_CALLS.clear()
