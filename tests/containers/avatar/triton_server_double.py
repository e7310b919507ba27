"""TEST DOUBLE of Triton Inference Server as SageMaker's Triton multi-model endpoint runs it (Triton cannot be
installed here: NVIDIA ships ``tritonserver`` only in its CUDA images).

What stands in for Triton, and nothing more: a model repository that unpacks a ``TargetModel`` tar the way the
MME does and starts its ``1/model.py`` (the REAL Python-backend code, ``initialize``/``execute``) through the
``triton_python_backend_utils`` double, and the KServe v2 HTTP protocol with Triton's binary tensor extension,
(de)serialised with ``tritonclient.utils``. Errors come back as Triton's do: HTTP 400 with ``{"error": ...}``.
"""

from __future__ import annotations

import json
import re
import sys
import threading
from pathlib import Path

import numpy as np

BINARY_JSON = "application/vnd.sagemaker-triton.binary+json"
_HEADER_SIZE = re.compile(r"json-header-size=(\d+)")


def _pb():
    import triton_python_backend_utils_double as pb

    sys.modules["triton_python_backend_utils"] = pb  # what the Python-backend stub provides to model.py
    return pb


def decode_request(body: bytes, content_type: str) -> tuple[dict, dict[str, np.ndarray]]:
    """A KServe v2 request → (its JSON header, {input name: array})."""
    from tritonclient.utils import deserialize_bytes_tensor, triton_to_np_dtype

    match = _HEADER_SIZE.search(content_type or "")
    size = int(match.group(1)) if match else len(body)
    header, offset, arrays = json.loads(body[:size]), size, {}
    for item in header.get("inputs", []):
        binary = item.get("parameters", {}).get("binary_data_size")
        if binary is None:
            array = np.array(item["data"], dtype=np.object_ if item["datatype"] == "BYTES"
                             else triton_to_np_dtype(item["datatype"]))
        else:
            raw = body[offset:offset + binary]
            offset += binary
            array = (deserialize_bytes_tensor(raw) if item["datatype"] == "BYTES"
                     else np.frombuffer(raw, dtype=triton_to_np_dtype(item["datatype"])))
        arrays[item["name"]] = array.reshape(item["shape"])
    if offset != len(body):
        raise ValueError(f"{len(body) - offset} bytes after the last tensor")
    return header, arrays


def encode_response(model_name: str, outputs: list) -> tuple[bytes, str]:
    """Output tensors → a KServe v2 response with every tensor as binary data (what tritonclient asked for)."""
    from tritonclient.utils import np_to_triton_dtype, serialize_byte_tensor

    described, blobs = [], []
    for tensor in outputs:
        array = tensor.as_numpy()
        datatype = "BYTES" if array.dtype == np.object_ else np_to_triton_dtype(array.dtype)
        raw = serialize_byte_tensor(array).item() if datatype == "BYTES" else array.tobytes()
        described.append({"name": tensor.name(), "datatype": datatype, "shape": list(array.shape),
                          "parameters": {"binary_data_size": len(raw)}})
        blobs.append(raw)
    header = json.dumps({"model_name": model_name, "model_version": "1", "outputs": described}).encode()
    return header + b"".join(blobs), f"{BINARY_JSON};json-header-size={len(header)}"


class TritonMmeDouble:
    """Triton's model repository and HTTP inference behind an MME (see the module docstring)."""

    def __init__(self, repository: Path) -> None:
        self.repository = repository
        self.lock = threading.Lock()
        self.loaded: dict[str, str] = {}  # TargetModel → Triton model name
        _pb().reset()

    def load_target(self, target_model: str, archive: Path) -> str:
        """Unpack a ``TargetModel`` tar into the repository and start the model it holds (once)."""
        from reelforge_avatar import safe_tar

        with self.lock:
            if target_model in self.loaded:
                return self.loaded[target_model]
            folder = self.repository / target_model.replace("/", "_")
            names = safe_tar.extract(archive, folder)
            (model_name,) = {n.split("/", 1)[0] for n in names}
            config = json.dumps({"name": model_name})
            pb = _pb()
            pb.register_model(model_name, pb.start_model(folder / model_name, config))
            self.loaded[target_model] = model_name
            return model_name

    def infer(self, model_name: str, body: bytes, content_type: str) -> tuple[int, bytes, str]:
        """One KServe v2 inference → (HTTP status, body, content type)."""
        pb = _pb()
        try:
            header, arrays = decode_request(body, content_type)
        except (ValueError, KeyError) as err:
            return 400, json.dumps({"error": f"bad request: {err}"}).encode(), "application/json"
        model = pb._MODELS.get(model_name)
        if model is None:
            return 400, json.dumps({"error": f"model {model_name} is not loaded"}).encode(), "application/json"
        request = pb.InferenceRequest(model_name=model_name, inputs=[pb.Tensor(k, v) for k, v in arrays.items()],
                                      requested_output_names=[o["name"] for o in header.get("outputs", [])])
        with self.lock:  # one instance of each model: Triton runs its execute calls one at a time
            (response,) = model.execute([request])
        if response.has_error():
            return 400, json.dumps({"error": response.error().message()}).encode(), "application/json"
        wanted = {o["name"] for o in header.get("outputs", [])} or None
        outputs = [t for t in response.output_tensors() if wanted is None or t.name() in wanted]
        payload, out_type = encode_response(model_name, outputs)
        return 200, payload, out_type

    def unload_all(self) -> None:
        pb = _pb()
        with self.lock:
            for name in list(self.loaded.values()):
                model = pb._MODELS.pop(name, None)
                if model is not None:
                    model.finalize()
            base = pb._MODELS.pop("avatar_base", None)
            if base is not None:
                base.finalize()
            self.loaded.clear()
            pb.reset()
