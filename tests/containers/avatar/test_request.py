"""The fine-tune request contract: a valid request parses; unknown keys, missing keys and bad values are refused."""

from __future__ import annotations

import json

import pytest
from reelforge_avatar.errors import RequestError
from reelforge_avatar.request import parse_request
from reelforge_avatar.serving import input_fn


def valid(**overrides) -> dict:
    request = {
        "job_name": "avatar-u42-20260101", "instance_data_uri": "s3://bucket/avatars/u42/crops/",
        "class_data_uri": None, "output_s3_uri": "s3://bucket/avatars/u42/model/model.tar.gz",
        "model_name": "avatar-u42-3f2a", "token": "<<TOK>>", "class_prompt": "a photo of a person",
        "base_model_id": "stabilityai/stable-diffusion-2-1-base", "base_model_revision": "abc123",
        "max_train_steps": 400, "lora_rank": 8, "learning_rate": 1e-4, "gradient_accumulation_steps": 1,
        "mixed_precision": "fp16", "seed": 0, "num_class_images": 100,
    }
    request.update(overrides)
    return request


def test_a_valid_request_parses_from_json_bytes():
    req = input_fn(json.dumps(valid()).encode(), "application/json")
    assert req.model_name == "avatar-u42-3f2a" and req.class_data_uri is None
    assert req.instance_prompt == "a photo of <<TOK>> person"
    assert req.to_dict() == valid()


@pytest.mark.parametrize(("overrides", "match"), [
    ({"extra": 1}, "unknown request keys: \\['extra'\\]"),
    ({"max_train_steps": "400"}, "max_train_steps must be int"),
    ({"max_train_steps": True}, "max_train_steps must be int"),
    ({"learning_rate": "1e-4"}, "learning_rate must be float"),
    ({"class_data_uri": 5}, "class_data_uri must be str or NoneType"),
    ({"model_name": "Avatar_U42"}, "model_name must match"),
    ({"instance_data_uri": "s3://bucket/crops"}, "must be a prefix"),
    ({"output_s3_uri": "https://x/model.tar.gz"}, "output_s3_uri must be an s3://"),
    ({"output_s3_uri": "s3://b/model.zip"}, "must end with .tar.gz"),
    ({"mixed_precision": "bf16"}, "mixed_precision"),
    ({"lora_rank": 0}, "lora_rank must be in"),
    ({"learning_rate": 5.0}, "learning_rate must be in"),
    ({"token": " "}, "token must not be empty"),
])
def test_bad_requests_are_refused_clearly(overrides, match):
    with pytest.raises(RequestError, match=match):
        parse_request(valid(**overrides))


def test_missing_keys_not_json_and_wrong_content_type():
    request = valid()
    del request["seed"]
    with pytest.raises(RequestError, match="missing request keys: \\['seed'\\]"):
        parse_request(request)
    with pytest.raises(RequestError, match="not JSON"):
        input_fn(b"{nope", "application/json")
    with pytest.raises(RequestError, match="must be a JSON object"):
        parse_request("[1, 2]")
    with pytest.raises(RequestError, match="content type"):
        input_fn(json.dumps(valid()), "text/csv")
