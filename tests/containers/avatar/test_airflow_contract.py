"""The Airflow side and the container agree: the fine-tune request, the preprocessing arguments, the base model."""

from __future__ import annotations

import json
from dataclasses import fields
from datetime import UTC, datetime

from reelforge_avatar.base_model import PRODUCTION_BASE_ID, PRODUCTION_BASE_REVISION
from reelforge_avatar.cli import main
from reelforge_avatar.request import parse_request

from reelforge.avatar.config import AvatarSettings
from reelforge.avatar.plan import form_params, plan_avatar

FORM = {"user_id": "Jane.Doe_42", "selfies_uri": "s3://in/avatar/incoming/jane/s/", "steps": 400, "lora_rank": 16,
        "token": "<<TOK>>", "samples": 3, "prompt": "a portrait of {token} person"}


def airflow_plan() -> dict:
    values = {f.name: f"x-{f.name}" for f in fields(AvatarSettings)}
    values.update(min_selfies=10, max_selfies=40, max_selfie_bytes=10**7, max_total_bytes=10**8, mixed_precision="fp16",
                  artifacts_bucket="art", artifacts_prefix="avatar/", mme_bucket="art", mme_prefix="avatar/mme/",
                  output_bucket="out", output_prefix="avatar/", learning_rate=1e-4, gradient_accumulation_steps=2,
                  seed=7, processing_volume_gb=30, base_model_id=PRODUCTION_BASE_ID,
                  base_model_revision=PRODUCTION_BASE_REVISION)
    return plan_avatar(p=form_params(FORM), run_id="manual__r", run_after=datetime(2026, 1, 1, tzinfo=UTC),
                       settings=AvatarSettings(**values))


def test_the_request_airflow_sends_is_one_the_endpoint_accepts():
    request = parse_request(json.dumps(airflow_plan()["request"]))
    assert (request.max_train_steps, request.lora_rank, request.gradient_accumulation_steps) == (400, 16, 2)
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

    from reelforge.avatar.config import avatar_settings

    # only the settings that name an account (which have no default) are set
    account = {"reelforge_avatar_topic_arn": "arn:aws:sns:eu-west-1:000000000000:t",
               "reelforge_avatar_image_uri": "000000000000.dkr.ecr.eu-west-1.amazonaws.com/reelforge-avatar:1",
               "reelforge_avatar_role_arn": "arn:aws:iam::000000000000:role/r"}
    monkeypatch.setattr(Variable, "get", staticmethod(lambda key, default=None: account.get(key, default)))
    settings = avatar_settings()
    assert (settings.base_model_id, settings.base_model_revision) == (PRODUCTION_BASE_ID, PRODUCTION_BASE_REVISION)
