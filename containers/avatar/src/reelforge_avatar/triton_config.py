"""Triton ``config.pbtxt`` texts: the shared base model and one per user's LoRA."""

from __future__ import annotations

BASE_MODEL_NAME = "avatar_base"

_IO = """input [
  { name: "PROMPT" data_type: TYPE_STRING dims: [ 1 ]{prompt_optional} },
  { name: "NEGATIVE_PROMPT" data_type: TYPE_STRING dims: [ 1 ] optional: true },
  { name: "SEED" data_type: TYPE_INT64 dims: [ 1 ] optional: true },
  { name: "STEPS" data_type: TYPE_INT32 dims: [ 1 ] optional: true },
  { name: "GUIDANCE" data_type: TYPE_FP32 dims: [ 1 ] optional: true }{extra}
]
output [
  { name: "IMAGE_PNG" data_type: TYPE_STRING dims: [ 1 ] }
]
"""

_BASE_EXTRA = """,
  { name: "ADAPTER_NAME" data_type: TYPE_STRING dims: [ 1 ] optional: true },
  { name: "ADAPTER_DIR" data_type: TYPE_STRING dims: [ 1 ] optional: true },
  { name: "ACTION" data_type: TYPE_STRING dims: [ 1 ] optional: true }"""


def user_config_pbtxt(model_name: str) -> str:
    """One user's model: a light CPU-side Python model that forwards to the shared base (BLS)."""
    return (f'name: "{model_name}"\nbackend: "python"\nmax_batch_size: 0\n'
            + _IO.replace("{extra}", "").replace("{prompt_optional}", "")
            + 'instance_group [ { kind: KIND_CPU count: 1 } ]\n')


def base_config_pbtxt() -> str:
    """The shared base pipeline: one instance per GPU; adapters are loaded into it by name (PROMPT optional:
    ``ACTION`` load/unload requests carry none)."""
    return (f'name: "{BASE_MODEL_NAME}"\nbackend: "python"\nmax_batch_size: 0\n'
            + _IO.replace("{extra}", _BASE_EXTRA).replace("{prompt_optional}", " optional: true")
            + 'instance_group [ { kind: KIND_GPU count: 1 } ]\n'
            + 'parameters [ { key: "base_model_dir" value: { string_value: "/opt/ml/avatar-base" } } ]\n')


#: ``avatar_base/1/model.py``: the shared base's Python-backend entry (also shipped in ``triton/avatar_base``).
BASE_MODEL_PY = '''"""Triton Python-backend entry of the shared avatar base pipeline (one instance per GPU)."""

from reelforge_avatar.triton_models import SharedBaseModel as TritonPythonModel  # noqa: F401
'''

_IO_JSON = [("PROMPT", "TYPE_STRING"), ("NEGATIVE_PROMPT", "TYPE_STRING"), ("SEED", "TYPE_INT64"),
            ("STEPS", "TYPE_INT32"), ("GUIDANCE", "TYPE_FP32"), ("ADAPTER_NAME", "TYPE_STRING"),
            ("ADAPTER_DIR", "TYPE_STRING"), ("ACTION", "TYPE_STRING")]


def base_config_json(base_model_dir: str = "/opt/ml/avatar-base") -> str:
    """``base_config_pbtxt`` as the JSON model configuration Triton's load API takes with override files."""
    import json

    return json.dumps({
        "name": BASE_MODEL_NAME, "backend": "python", "max_batch_size": 0,
        "input": [{"name": n, "data_type": t, "dims": [1], "optional": True} for n, t in _IO_JSON],
        "output": [{"name": "IMAGE_PNG", "data_type": "TYPE_STRING", "dims": [1]}],
        "instance_group": [{"kind": "KIND_GPU", "count": 1}],
        "parameters": {"base_model_dir": {"string_value": base_model_dir}},
    })
