"""Deployment files are valid: docker-compose config, IAM policies scoped to the project's resources."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.skipif(shutil.which("docker-compose") is None, reason="docker-compose not installed")
def test_docker_compose_config_is_valid():
    env = {"PATH": "/usr/bin:/bin", "AIRFLOW_JWT_SECRET": "test-only"}
    result = subprocess.run(["docker-compose", "-f", str(ROOT / "docker-compose.yaml"), "config", "-q"],
                            capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("path", sorted((ROOT / "include" / "iam").glob("*.json")), ids=lambda p: p.name)
def test_iam_policies_are_least_privilege(path):
    policy = json.loads(path.read_text())
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        assert statement["Effect"] == "Allow"
        assert not any(a == "*" or a.endswith(":*") for a in actions), f"{path.name}: wildcard action {actions}"
        for resource in resources:
            assert resource != "*", f"{path.name}: unscoped resource"
            assert "reelforge-" in resource, f"{path.name}: {resource} is not one of the project's resources"
