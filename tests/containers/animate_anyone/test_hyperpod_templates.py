"""HyperPod cluster templates: every deployment value is a parameter, and the rendered files validate."""

from __future__ import annotations

import json
import re
import string
import subprocess
from pathlib import Path

import jsonschema
import pytest

HP = Path(__file__).resolve().parents[3] / "include" / "cluster" / "hyperpod"
TEMPLATES = {"cluster-config.json": "cluster-config.schema.json",
             "provisioning_parameters.json": "provisioning-parameters.schema.json"}
# Values shaped like real ones (test data), to check the rendered files against the schemas.
EXAMPLE = {
    "AWS_REGION": "eu-central-1", "CLUSTER_NAME": "reelforge-aa-test", "CONTROLLER_INSTANCE_TYPE": "ml.m5.xlarge",
    "CONTROLLER_VOLUME_GB": "500", "LOGIN_INSTANCE_TYPE": "ml.m5.large", "WORKER_INSTANCE_TYPE": "ml.p5.48xlarge",
    "WORKER_COUNT": "2", "WORKER_VOLUME_GB": "500", "GPU_PARTITION": "gpu", "LIFECYCLE_BUCKET": "reelforge-artifacts",
    "LIFECYCLE_PREFIX": "hyperpod/lifecycle/", "EXECUTION_ROLE_ARN": "arn:aws:iam::111122223333:role/reelforge-hp",
    "SECURITY_GROUP_ID": "sg-0123456789abcdef0", "SUBNET_ID": "subnet-0123456789abcdef0",
    "FSX_DNS_NAME": "fs-0123456789abcdef0.fsx.eu-central-1.amazonaws.com", "FSX_MOUNT_NAME": "abcdefgh",
    "CLUSTER_USER": "reelforge", "CLUSTER_USER_UID": "2001",
    "AIRFLOW_SSH_PUBLIC_KEY": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIExampleKeyOnlyForTests airflow",
}
PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")


def _documented() -> set[str]:
    names = set()
    for line in (HP / "params.example.env").read_text().splitlines():
        if line and not line.startswith("#"):
            names.add(line.split("=", 1)[0])
    return names


@pytest.mark.parametrize("name", sorted(TEMPLATES))
def test_rendered_template_matches_its_schema(name):
    text = (HP / name).read_text()
    rendered = json.loads(string.Template(text).substitute(EXAMPLE))
    schema = json.loads((HP / TEMPLATES[name]).read_text())
    jsonschema.Draft202012Validator.check_schema(schema)
    jsonschema.validate(rendered, schema)


def test_every_placeholder_is_documented_and_used():
    used = set()
    for name in TEMPLATES:
        used |= set(PLACEHOLDER.findall((HP / name).read_text()))
    documented = _documented()
    assert used <= documented, f"undocumented parameters: {used - documented}"
    assert documented - used <= {"AWS_REGION"}, f"documented but unused: {documented - used - {'AWS_REGION'}}"


@pytest.mark.parametrize("path", sorted(p for p in HP.rglob("*") if p.is_file() and p.suffix in {".json", ".sh", ".py",
                                                                                                   ".env"}),
                         ids=lambda p: p.name)
def test_nothing_deployment_specific_is_hard_coded(path):
    literal = PLACEHOLDER.sub("", path.read_text())
    assert not re.search(r"(?<![\w/.-])\d{12}(?![\w-])", literal), "hard-coded account id"
    assert not re.search(r"\b(subnet|sg|vpc|fs)-[0-9a-f]{8,}", literal), "hard-coded network or file system id"
    assert not re.search(r"\b(us|eu|ap|sa|ca|me|af|il|mx)-(north|south|east|west|central|northeast|southeast)-\d\b",
                         literal), "hard-coded region"
    assert ".fsx." not in literal, "hard-coded FSx DNS name"


def test_group_names_agree_between_cluster_config_and_provisioning_parameters():
    cluster = json.loads(string.Template((HP / "cluster-config.json").read_text()).substitute(EXAMPLE))
    params = json.loads(string.Template((HP / "provisioning_parameters.json").read_text()).substitute(EXAMPLE))
    groups = {g["InstanceGroupName"] for g in cluster["InstanceGroups"]}
    assert params["controller_group"] in groups and params["login_group"] in groups
    assert {w["instance_group_name"] for w in params["worker_groups"]} <= groups
    assert all(g["LifeCycleConfig"]["OnCreate"] == "on_create.sh" for g in cluster["InstanceGroups"])
    assert (HP / "lifecycle" / "on_create.sh").is_file()


@pytest.mark.parametrize("path", sorted((HP / "lifecycle").glob("*.sh")), ids=lambda p: p.name)
def test_lifecycle_scripts_parse(path):
    assert subprocess.run(["bash", "-n", str(path)], capture_output=True).returncode == 0
    assert path.stat().st_mode & 0o111, f"{path.name} is not executable"


def test_node_role_is_found_from_the_resource_config(tmp_path):
    import socket

    ip = socket.gethostbyname(socket.gethostname())
    params = json.loads(string.Template((HP / "provisioning_parameters.json").read_text()).substitute(EXAMPLE))
    (tmp_path / "pp.json").write_text(json.dumps(params))
    for group, role in (("login-group", "login"), ("gpu-workers", "worker"), ("controller-machine", "controller")):
        rc = {"InstanceGroups": [{"Name": "other", "Instances": [{"CustomerIpAddress": "192.0.2.1"}]},
                                 {"Name": group, "Instances": [{"CustomerIpAddress": ip}]}]}
        (tmp_path / "rc.json").write_text(json.dumps(rc))
        out = subprocess.run(["python3", str(HP / "lifecycle" / "node_role.py"), str(tmp_path / "rc.json"),
                              str(tmp_path / "pp.json")], capture_output=True, text=True, check=True).stdout
        assert f"NODE_ROLE={role}" in out
