"""Issue 20: nothing outside the local stack's own files names moto's account, and a missing setting that
names an account fails at once, naming what to set (no silent talk to a fake account in production)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

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
    from reelforge.settings import MissingSettingError, required

    monkeypatch.delenv("AIRFLOW_VAR_REELFORGE_SR_TOPIC_ARN", raising=False)
    with pytest.raises(MissingSettingError, match="'reelforge_sr_topic_arn'.*AIRFLOW_VAR_REELFORGE_SR_TOPIC_ARN"):
        required("reelforge_sr_topic_arn", "the SR SNS topic ARN")
    monkeypatch.setenv("AIRFLOW_VAR_REELFORGE_SR_TOPIC_ARN", "arn:aws:sns:eu-west-1:000000000000:t")
    assert required("reelforge_sr_topic_arn", "the SR SNS topic ARN").endswith(":t")
