"""The Triton multi-model endpoint's requests and responses: KServe v2 with Triton's binary extension.

SageMaker's Triton container takes a KServe v2 inference request whose JSON header is followed by the
tensors' raw bytes (``Content-Type: application/vnd.sagemaker-triton.binary+json;json-header-size=<n>``) and
answers in the same form. Both sides are built and read with ``tritonclient`` (``tritonclient[http]``). The
tensors are the ones ``containers/avatar`` declares for each user's model: ``PROMPT``, ``NEGATIVE_PROMPT``
(BYTES), ``SEED`` (INT64), ``STEPS`` (INT32), ``GUIDANCE`` (FP32) in, ``IMAGE_PNG`` (BYTES) out.
"""

from __future__ import annotations

import re
from typing import Any

BINARY_JSON = "application/vnd.sagemaker-triton.binary+json"
OUTPUT = "IMAGE_PNG"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_HEADER_SIZE = re.compile(r"json-header-size=(\d+)")


class MmeResponseError(RuntimeError):
    """The endpoint answered something that is not one PNG in a KServe v2 response."""


def content_type(json_size: int | None) -> str:
    """The content type of a body whose JSON header is ``json_size`` bytes (``None``: JSON only)."""
    return "application/json" if json_size is None else f"{BINARY_JSON};json-header-size={json_size}"


def sample_request(body: dict[str, Any]) -> tuple[bytes, str]:
    """``{"prompt", "negative_prompt", "seed", "steps", "guidance"}`` → (request body, content type)."""
    import numpy as np
    import tritonclient.http as httpclient

    def tensor(name: str, value: Any, datatype: str, dtype: Any) -> Any:
        item = httpclient.InferInput(name, [1], datatype)
        item.set_data_from_numpy(np.array([value], dtype=dtype), binary_data=True)
        return item

    inputs = [tensor("PROMPT", body["prompt"].encode(), "BYTES", np.object_),
              tensor("SEED", int(body["seed"]), "INT64", np.int64),
              tensor("STEPS", int(body["steps"]), "INT32", np.int32),
              tensor("GUIDANCE", float(body["guidance"]), "FP32", np.float32)]
    if body.get("negative_prompt"):
        inputs.insert(1, tensor("NEGATIVE_PROMPT", body["negative_prompt"].encode(), "BYTES", np.object_))
    outputs = [httpclient.InferRequestedOutput(OUTPUT, binary_data=True)]
    payload, json_size = httpclient.InferenceServerClient.generate_request_body(inputs, outputs=outputs)
    return payload, content_type(json_size)


def decode_image(body: bytes, response_content_type: str) -> bytes:
    """The PNG bytes of a KServe v2 response (binary or JSON-only), or :class:`MmeResponseError`."""
    import tritonclient.http as httpclient

    match = _HEADER_SIZE.search(response_content_type or "")
    try:
        result = httpclient.InferenceServerClient.parse_response_body(
            body, header_length=int(match.group(1)) if match else None)
        array = result.as_numpy(OUTPUT)
    except Exception as err:  # noqa: BLE001 - whatever the parser trips on, the answer is not usable
        raise MmeResponseError(f"not a KServe v2 response ({response_content_type!r}, {len(body)} bytes): "
                               f"{err}") from err
    if array is None or array.size != 1:
        raise MmeResponseError(f"the response has no single {OUTPUT} tensor: {result.get_response()}")
    image = array.reshape(-1)[0]
    image = image if isinstance(image, bytes) else bytes(image)
    if not image.startswith(PNG_SIGNATURE):
        raise MmeResponseError(f"{OUTPUT} is {len(image)} bytes that are not a PNG: {image[:16]!r}")
    return image
