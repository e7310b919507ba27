"""Deployment files are valid: IAM policies scoped to the project's resources, Dockerfiles, image pushes.

docker-compose.yaml is checked in tests/test_compose.py.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


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


DOCKERFILES = sorted((ROOT / "containers").glob("*/Dockerfile*"))


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_dockerfiles_pin_their_bases_run_unprivileged_and_hold_no_secrets(path):
    import re

    text = path.read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
    bases = [args.get(m.strip("${}"), m) for m in re.findall(r"^FROM (\S+)", text, re.M)]
    assert bases, f"{path}: no FROM"
    for base in bases:
        assert ":" in base.split("/")[-1] or "@sha256:" in base, f"{path}: base image {base!r} has no tag"
        assert not base.endswith((":latest", ":main")), f"{path}: unpinned base {base!r}"
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in {"root", "0"}, f"{path}: the final stage runs as root"
    assert not re.search(r"AKIA[0-9A-Z]{16}|aws_secret_access_key|BEGIN [A-Z ]*PRIVATE KEY", text, re.I)
    assert not re.search(r"^ENV\s+\S*(SECRET|PASSWORD|TOKEN)\S*[= ]", text, re.M | re.I), f"{path}: secret in ENV"


def test_push_images_builds_every_container_pushes_to_ecr_and_imports_sr_for_enroot():
    result = subprocess.run(["bash", str(ROOT / "scripts" / "push-images"), "--dry-run", "--push", "--tag", "1.2.3",
                             "--registry", "123456789012.dkr.ecr.us-east-1.amazonaws.com", "--enroot-dir", "/fsx/img"],
                            capture_output=True, text=True, check=True)
    lines = result.stdout.splitlines()
    for path in DOCKERFILES:
        variant = path.name.removeprefix("Dockerfile").removeprefix(".")
        repo = f"reelforge-{path.parent.name.replace('_', '-')}" + (f"-{variant}" if variant else "")
        assert any(line.startswith("docker build") and f"-t {repo}:1.2.3 " in line for line in lines), repo
        assert f"docker push 123456789012.dkr.ecr.us-east-1.amazonaws.com/{repo}:1.2.3 " in lines
    assert "enroot import -o /fsx/img/reelforge-sr+1.2.3.sqsh dockerd://reelforge-sr:1.2.3 " in lines
    # build contexts: the repository for Airflow, containers/ for the Slurm compute node, else the folder
    contexts = {line.split(" -t ")[1].split(":")[0]: line.rsplit(" ", 2)[-2] for line in lines
                if line.startswith("docker build")}
    assert contexts["reelforge-airflow"] == str(ROOT)
    assert contexts["reelforge-slurm-compute"] == str(ROOT / "containers")
    assert contexts["reelforge-sr"] == str(ROOT / "containers" / "sr")
    bad = subprocess.run(["bash", str(ROOT / "scripts" / "push-images"), "--dry-run", "--tag", "x;rm -rf /"],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "invalid tag" in bad.stderr
