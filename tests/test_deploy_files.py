"""Deployment files are valid: IAM policies scoped to the project's resources, Dockerfiles, image pushes.

docker-compose.yaml is checked in tests/test_compose.py.
"""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("path", sorted((ROOT / "include" / "iam").glob("*-policy.json")), ids=lambda p: p.name)
def test_iam_policies_are_least_privilege(path):
    # "*" only for actions that AWS lets take no resource (include/iam/action-resources.json; tests/iam checks
    # each policy against the calls its principal was recorded making)
    table = json.loads((ROOT / "include" / "iam" / "action-resources.json").read_text())
    policy = json.loads(path.read_text())
    for statement in policy["Statement"]:
        actions = statement["Action"] if isinstance(statement["Action"], list) else [statement["Action"]]
        resources = statement["Resource"] if isinstance(statement["Resource"], list) else [statement["Resource"]]
        assert statement["Effect"] == "Allow"
        assert not any(a == "*" or a.endswith(":*") for a in actions), f"{path.name}: wildcard action {actions}"
        for resource in resources:
            if resource == "*":
                assert all(table["actions"].get(a) == [] for a in actions), f"{path.name}: unscoped {actions}"
                continue
            assert "reelforge-" in resource or any(re.match(p, resource) for p in table["not_project_named"]), (
                f"{path.name}: {resource} is not one of the project's resources")


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

#: The user each image's final stage runs as, from what the platform that runs it requires.
#: SageMaker runs training, processing and endpoint containers as root and the container must write to what it
#: mounts or creates root-owned (/opt/ml/model, /opt/ml/output, /opt/ml/processing/<output>); the DLC's `serve`
#: (SageMaker inference toolkit → TorchServe) writes its config under /etc. Slurm/pyxis runs a job's container as
#: the submitting user, compose starts the Slurm daemons with `user: "0:0"`, and the Airflow image keeps the
#: official image's `airflow` user: those default to an unprivileged user.
RUNS_AS = {
    "airflow/Dockerfile": "airflow",
    "animate_anyone/Dockerfile": "reelforge",
    "avatar/Dockerfile": "root",
    "avatar/Dockerfile.triton": "root",
    "slurm/Dockerfile": "reelforge",
    "slurm/Dockerfile.compute": "reelforge",
    "sr/Dockerfile": "reelforge",
    "stylegan2/Dockerfile": "root",
}


def test_every_dockerfile_has_a_platform_user():
    assert {f"{p.parent.name}/{p.name}" for p in DOCKERFILES} == set(RUNS_AS)


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_dockerfiles_pin_their_bases_run_as_their_platform_needs_and_hold_no_secrets(path):
    import re

    text = path.read_text()
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, re.M))
    bases = [args.get(m.strip("${}"), m) for m in re.findall(r"^FROM (\S+)", text, re.M)]
    assert bases, f"{path}: no FROM"
    for base in bases:
        assert ":" in base.split("/")[-1] or "@sha256:" in base, f"{path}: base image {base!r} has no tag"
        assert not base.endswith((":latest", ":main")), f"{path}: unpinned base {base!r}"
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users, f"{path}: no USER: say which user the final stage runs as"
    assert users[-1] == RUNS_AS[f"{path.parent.name}/{path.name}"], f"{path}: the final stage runs as {users[-1]}"
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
