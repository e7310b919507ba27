"""Issue 20: nothing outside the local stack's own files names moto's account, and a missing setting that
names an account fails at once, naming what to set (no silent talk to a fake account in production)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from reelforge.settings import MissingSettingError

ROOT = Path(__file__).resolve().parent.parent
MOTO_ACCOUNT = "123456789012"
#: The local stack's files, where moto's account is the point.
LOCAL_STACK_FILES = {"scripts/local-stack", "docker-compose.yaml"}


def test_moto_account_appears_only_in_the_local_stack_and_tests():
    out = subprocess.run(["git", "grep", "-l", MOTO_ACCOUNT, "--", ".", ":!tests"], cwd=ROOT,
                         capture_output=True, text=True)
    assert out.returncode in (0, 1), out.stderr
    named = set(out.stdout.split()) - LOCAL_STACK_FILES
    assert not named, f"moto's account named outside the local stack: {sorted(named)}"


def test_a_missing_account_setting_fails_naming_the_variable(monkeypatch):
    from reelforge.settings import required

    monkeypatch.delenv("AIRFLOW_VAR_REELFORGE_SR_TOPIC_ARN", raising=False)
    with pytest.raises(MissingSettingError, match="'reelforge_sr_topic_arn'.*AIRFLOW_VAR_REELFORGE_SR_TOPIC_ARN"):
        required("reelforge_sr_topic_arn", "the SR SNS topic ARN")
    monkeypatch.setenv("AIRFLOW_VAR_REELFORGE_SR_TOPIC_ARN", "arn:aws:sns:eu-west-1:000000000000:t")
    assert required("reelforge_sr_topic_arn", "the SR SNS topic ARN").endswith(":t")


@pytest.mark.parametrize("load, variable", [
    ("reelforge.sr.settings:sr_settings", "reelforge_sr_topic_arn"),
    ("reelforge.stylegan2.settings:stylegan2_settings", "reelforge_stylegan2_"),
    ("reelforge.avatar.settings:avatar_settings", "reelforge_avatar_"),
    ("reelforge.animate_anyone.settings:aa_settings", "reelforge_animate_anyone_topic_arn"),
])
def test_each_workflow_fails_at_once_without_its_account_settings(monkeypatch, load, variable):
    """A deployment that sets no Variable at all: every workflow's settings name what to set, and no default
    stands in for an account's topic, role or image."""
    import importlib

    for name in [k for k in os.environ if k.startswith("AIRFLOW_VAR_REELFORGE_")]:
        monkeypatch.delenv(name)
    module, _, function = load.partition(":")
    with pytest.raises(MissingSettingError, match=f"'{variable}"):
        getattr(importlib.import_module(module), function)()
