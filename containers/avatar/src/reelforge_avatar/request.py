"""The fine-tune request: the JSON object the Airflow side writes as the async endpoint's input."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, fields
from typing import Any

from reelforge_avatar.errors import RequestError

DEFAULT_TOKEN = "<<TOK>>"  # noqa: S105 - DreamBooth's rare identifier word, not a secret
_MODEL_NAME = re.compile(r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$")


@dataclass(frozen=True)
class FineTuneRequest:
    """One user's DreamBooth+LoRA job. Every key is required; ``class_data_uri`` may be null."""

    job_name: str
    instance_data_uri: str
    class_data_uri: str | None
    output_s3_uri: str
    model_name: str
    token: str
    class_prompt: str
    base_model_id: str
    base_model_revision: str
    max_train_steps: int
    lora_rank: int
    learning_rate: float
    gradient_accumulation_steps: int
    mixed_precision: str
    seed: int
    num_class_images: int

    @property
    def instance_prompt(self) -> str:
        return f"a photo of {self.token} person"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_TYPES: dict[str, tuple[type, ...]] = {
    "job_name": (str,), "instance_data_uri": (str,), "class_data_uri": (str, type(None)), "output_s3_uri": (str,),
    "model_name": (str,), "token": (str,), "class_prompt": (str,), "base_model_id": (str,),
    "base_model_revision": (str,), "max_train_steps": (int,), "lora_rank": (int,), "learning_rate": (float, int),
    "gradient_accumulation_steps": (int,), "mixed_precision": (str,), "seed": (int,), "num_class_images": (int,),
}


def _s3(value: str, key: str, *, prefix: bool) -> None:
    if not value.startswith("s3://") or "/" not in value[5:] or value[5:].startswith("/"):
        raise RequestError(f"{key} must be an s3://bucket/key URI, not {value!r}")
    if prefix and not value.endswith("/"):
        raise RequestError(f"{key} must be a prefix ending with '/', not {value!r}")


def parse_request(raw: bytes | str | dict) -> FineTuneRequest:
    """Validate the request (JSON bytes, text or an already decoded object) or raise :class:`RequestError`."""
    if isinstance(raw, bytes | str):
        try:
            raw = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise RequestError(f"request is not JSON: {err}") from err
    if not isinstance(raw, dict):
        raise RequestError(f"request must be a JSON object, not {type(raw).__name__}")
    names = {f.name for f in fields(FineTuneRequest)}
    unknown, missing = sorted(set(raw) - names), sorted(names - set(raw))
    if unknown:
        raise RequestError(f"unknown request keys: {unknown}")
    if missing:
        raise RequestError(f"missing request keys: {missing}")
    for key, types in _TYPES.items():
        value = raw[key]
        if isinstance(value, bool) or not isinstance(value, types):
            raise RequestError(f"{key} must be {' or '.join(t.__name__ for t in types)}, not {type(value).__name__}")
    for key in ("job_name", "token", "class_prompt", "base_model_id", "base_model_revision"):
        if not raw[key].strip():
            raise RequestError(f"{key} must not be empty")
    if not _MODEL_NAME.match(raw["model_name"]):
        raise RequestError(f"model_name must match [a-z0-9-] (1-63 chars, no leading/trailing '-'), "
                           f"not {raw['model_name']!r}")
    _s3(raw["instance_data_uri"], "instance_data_uri", prefix=True)
    if raw["class_data_uri"] is not None:
        _s3(raw["class_data_uri"], "class_data_uri", prefix=True)
    _s3(raw["output_s3_uri"], "output_s3_uri", prefix=False)
    if not raw["output_s3_uri"].endswith(".tar.gz"):
        raise RequestError(f"output_s3_uri must end with .tar.gz, not {raw['output_s3_uri']!r}")
    if raw["mixed_precision"] not in ("no", "fp16"):
        raise RequestError(f"mixed_precision must be 'no' or 'fp16', not {raw['mixed_precision']!r}")
    for key, low, high in (("max_train_steps", 1, 20000), ("lora_rank", 1, 256),
                           ("gradient_accumulation_steps", 1, 64), ("num_class_images", 1, 1000)):
        if not low <= raw[key] <= high:
            raise RequestError(f"{key} must be in [{low}, {high}], not {raw[key]}")
    if not 0 < raw["learning_rate"] < 1:
        raise RequestError(f"learning_rate must be in (0, 1), not {raw['learning_rate']}")
    if raw["seed"] < 0:
        raise RequestError(f"seed must be >= 0, not {raw['seed']}")
    return FineTuneRequest(**{**raw, "learning_rate": float(raw["learning_rate"])})
