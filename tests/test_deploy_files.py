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


def test_parallelcluster_template_is_parameterised_and_scales_to_zero():
    import re

    import yaml

    text = (ROOT / "include/cluster/parallelcluster/cluster-config.yaml").read_text()
    config = yaml.safe_load(text)
    assert config["Region"] == "${AWS_REGION}"
    assert config["HeadNode"]["Networking"]["SubnetId"].startswith("${")
    queues = {q["Name"]: q for q in config["Scheduling"]["SlurmQueues"]}
    assert set(queues) == {"cpu", "gpu"}
    for queue in queues.values():
        assert all(r["MinCount"] == 0 for r in queue["ComputeResources"])
        assert all(s.startswith("${") for s in queue["Networking"]["SubnetIds"])
    assert config["SharedStorage"][0]["MountDir"] == "/fsx"
    literal = re.sub(r"\$\{[A-Z_]+\}", "", text)
    assert not re.search(r"\b\d{12}\b", literal), "hard-coded account id"
    assert not re.search(r"\b(subnet|sg|vpc)-[0-9a-f]{6,}", literal), "hard-coded network id"
    assert not re.search(r"\b[a-z]{2}-[a-z]+-\d\b", literal), "hard-coded region"
