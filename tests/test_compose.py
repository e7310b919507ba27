"""docker-compose.yaml and containers/slurm: the local Docker stack is complete, wired and valid.

Structural checks on the compose file (no Docker engine needed), the Slurm entrypoint's config and
key generation run in temp dirs, and `docker-compose config -q` (CI installs Debian's docker-compose).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "docker-compose.yaml"
SLURM_DIR = ROOT / "containers" / "slurm"
ENTRYPOINT = SLURM_DIR / "reelforge-slurm.sh"

AIRFLOW_LONG_RUNNING = {"airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer",
                        "airflow-worker"}
ONE_SHOT = {"airflow-init", "slurm-keys"}


@pytest.fixture(scope="module")
def services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def _command(service: dict) -> list[str]:
    cmd = service.get("command", [])
    return cmd.split() if isinstance(cmd, str) else list(cmd)


def _compute_services(services: dict) -> dict:
    return {name: s for name, s in services.items() if _command(s)[:1] == ["compute"]}


def _render(tmp_path: Path, env: dict[str, str]) -> str:
    subprocess.run(["bash", str(ENTRYPOINT), "render-config", str(tmp_path / "etc")], check=True,
                   env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True)
    return (tmp_path / "etc" / "slurm.conf").read_text()


def test_docker_compose_config_is_valid():
    exe = shutil.which("docker-compose")
    assert exe, "docker-compose is not installed (scripts/local-stack installs Debian's package)"
    env = {"PATH": "/usr/bin:/bin", "AIRFLOW_JWT_SECRET": "test-only"}
    result = subprocess.run([exe, "-f", str(COMPOSE), "config", "-q"], capture_output=True, text=True, env=env)
    assert result.returncode == 0, result.stderr


def test_official_airflow_layout_moto_and_slurm_services_exist(services):
    expected = AIRFLOW_LONG_RUNNING | {"airflow-init", "postgres", "redis", "moto", "slurm-keys", "slurm-head"}
    assert expected <= set(services), expected - set(services)
    assert services["airflow-worker"]["command"] == "celery worker"
    assert services["airflow-init"]["command"][-1].startswith("airflow db migrate")
    assert _command(services["slurm-head"]) == ["head"] and _command(services["slurm-keys"]) == ["keys"]
    assert _compute_services(services), "no Slurm compute node service"


def test_every_long_running_service_has_a_healthcheck(services):
    for name, service in services.items():
        if name in ONE_SHOT:
            continue
        test = service.get("healthcheck", {}).get("test")
        assert test and test != ["NONE"], f"{name} has no healthcheck"


def test_airflow_services_wait_for_a_healthy_slurm_head_and_the_keys(services):
    for name in AIRFLOW_LONG_RUNNING:
        deps = services[name]["depends_on"]
        assert deps["slurm-head"]["condition"] == "service_healthy", name
        assert deps["airflow-init"]["condition"] == "service_completed_successfully", name
    assert services["slurm-head"]["depends_on"]["slurm-keys"]["condition"] == "service_completed_successfully"
    for name, node in _compute_services(services).items():
        assert node["depends_on"]["slurm-head"]["condition"] == "service_healthy", name


def test_keys_live_in_named_volumes_shared_by_the_right_services(services):
    declared = set(yaml.safe_load(COMPOSE.read_text())["volumes"])

    def mounts(name: str) -> dict[str, str]:
        out = {}
        for spec in services[name].get("volumes", []):
            source, target = spec.split(":")[:2]
            assert source in declared, f"{name}: {source} is not a named volume"
            out[target] = source
        return out

    keys = mounts("slurm-keys")
    head = mounts("slurm-head")
    assert keys["/etc/reelforge/munge"] == head["/etc/reelforge/munge"]
    assert keys["/etc/reelforge/ssh"] == head["/etc/reelforge/ssh"]
    for name in _compute_services(services):
        node = mounts(name)
        assert node["/etc/reelforge/munge"] == head["/etc/reelforge/munge"]
        assert node["/shared"] == head["/shared"], "compute nodes and head must share /shared"
        assert "/etc/reelforge/ssh" not in node, "compute nodes need no SSH key material"
    for name in AIRFLOW_LONG_RUNNING:
        assert mounts(name)["/opt/airflow/slurm-ssh"] == keys["/etc/reelforge/client"], name
        assert "/etc/reelforge/munge" not in mounts(name).values()


def test_slurm_ssh_connection_defaults_to_the_head_with_a_pinned_host_key(services):
    value = services["airflow-scheduler"]["environment"]["AIRFLOW_CONN_SLURM_SSH"]
    match = re.fullmatch(r"\$\{AIRFLOW_CONN_SLURM_SSH:-(.+)\}", value)
    assert match, value
    default = match.group(1)
    assert default.startswith("ssh://reelforge@slurm-head:22?")
    assert "key_file=/opt/airflow/slurm-ssh/id_ed25519" in default
    assert "known_hosts=/opt/airflow/slurm-ssh/known_hosts" in default
    assert "no_host_key_check=false" in default


BYPASS = re.compile(r"StrictHostKeyChecking\s*=?\s*(no|off|accept-new)|UserKnownHostsFile\s*=?\s*/dev/null"
                    r"|no_host_key_check[\"']?\s*[:=]\s*[\"']?true|allow_host_key_change[\"']?\s*[:=]\s*[\"']?true"
                    r"|AutoAddPolicy|WarningPolicy", re.I)


@pytest.mark.parametrize("path", [COMPOSE, *sorted(p for p in SLURM_DIR.rglob("*") if p.is_file())],
                         ids=lambda p: str(p.relative_to(ROOT)))
def test_no_host_key_bypass(path):
    text = path.read_text()
    assert not BYPASS.search(text), f"{path}: host key verification bypassed"
    assert not re.search(r"BEGIN [A-Z ]*PRIVATE KEY", text), f"{path}: private key in the repo"


def test_rendered_slurm_conf_matches_the_compose_nodes_and_the_sbatch_partitions(services, tmp_path):
    compute = _compute_services(services)
    envs = [s["environment"] for s in [services["slurm-head"], *compute.values()]]
    assert all(env == envs[0] for env in envs), "head and nodes must render the same slurm.conf"
    env = {k: str(v) for k, v in envs[0].items()}
    conf = _render(tmp_path, env)

    nodes = re.findall(r"^NodeName=(\S+) ", conf, re.M)
    assert sorted(nodes) == sorted(compute), "NodeName lines must be exactly the compute services"
    for name, node in compute.items():
        assert node["hostname"] == name, f"{name}: slurmd finds its NodeName by hostname"
    assert re.search(rf"^SlurmctldHost={services['slurm-head']['hostname']}$", conf, re.M)

    partitions = dict(re.findall(r"^PartitionName=(\S+) Nodes=(\S+)", conf, re.M))
    settings = (ROOT / "plugins" / "reelforge" / "settings.py").read_text()
    wanted = set(re.findall(r'setting\("reelforge_sr_(?:cpu|gpu)_partition", "(\w+)"\)', settings))
    for sbatch in (ROOT / "include" / "slurm" / "sr").glob("*.sbatch"):
        wanted |= {p.lower() for p in re.findall(r"\((CPU|GPU) partition\)", sbatch.read_text())}
    assert wanted == {"cpu", "gpu"}
    assert wanted <= set(partitions), f"missing partitions {wanted - set(partitions)}"
    assert all(v == "ALL" for v in partitions.values())


def test_render_config_follows_the_environment_and_rejects_bad_names(tmp_path):
    conf = _render(tmp_path, {"REELFORGE_SLURM_NODES": "a1 b2", "REELFORGE_SLURM_CPUS_PER_NODE": "8"})
    assert re.findall(r"^NodeName=(\S+) CPUs=(\d+)", conf, re.M) == [("a1", "8"), ("b2", "8")]
    for bad in ({"REELFORGE_SLURM_NODES": "n1;rm -rf /"}, {"REELFORGE_SLURM_NODES": " "},
                {"REELFORGE_SLURM_CPUS_PER_NODE": "two"}):
        result = subprocess.run(["bash", str(ENTRYPOINT), "render-config", str(tmp_path / "bad")],
                                env={"PATH": "/usr/bin:/bin", **bad}, capture_output=True, text=True)
        assert result.returncode != 0, bad
        assert not (tmp_path / "bad" / "slurm.conf").exists()


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="needs ssh-keygen")
def test_keys_mode_creates_keys_once_and_pins_the_host_key(tmp_path):
    dirs = {"REELFORGE_MUNGE_KEY_DIR": tmp_path / "munge", "REELFORGE_HEAD_SSH_DIR": tmp_path / "ssh",
            "REELFORGE_CLIENT_SSH_DIR": tmp_path / "client"}
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "AIRFLOW_UID": str(os.getuid()), "AIRFLOW_GID": str(os.getgid()),
           **{k: str(v) for k, v in dirs.items()}}

    def run() -> dict[str, bytes]:
        subprocess.run(["bash", str(ENTRYPOINT), "keys"], env=env, check=True, capture_output=True)
        return {str(p.relative_to(tmp_path)): p.read_bytes() for p in sorted(tmp_path.rglob("*")) if p.is_file()}

    first = run()
    munge, ssh, client = (dirs[k] for k in dirs)
    assert len((munge / "munge.key").read_bytes()) >= 32
    host_pub = (ssh / "ssh_host_ed25519_key.pub").read_text().split()[:2]
    assert (client / "known_hosts").read_text() == f"slurm-head {host_pub[0]} {host_pub[1]}\n"
    assert (ssh / "authorized_keys").read_text() == (client / "id_ed25519.pub").read_text()
    for key in (munge / "munge.key", ssh / "ssh_host_ed25519_key", client / "id_ed25519"):
        assert stat.S_IMODE(key.stat().st_mode) & 0o077 == 0, f"{key} is readable by others"
    assert run() == first, "a second start must keep every key (the host key is pinned)"


def test_shell_scripts_parse():
    scripts = [p for p in SLURM_DIR.rglob("*") if p.is_file() and p.read_text().startswith("#!/usr/bin/env bash")]
    assert ENTRYPOINT in scripts
    for script in scripts:
        assert "set -euo pipefail" in script.read_text(), script
        result = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
        assert result.returncode == 0, f"{script}: {result.stderr}"


def test_slurm_images_run_daemons_as_root_only_via_compose_and_bake_in_no_keys(services):
    for dockerfile in SLURM_DIR.glob("Dockerfile*"):
        text = dockerfile.read_text()
        assert "/etc/ssh/ssh_host_*" in text or "openssh-server" not in text, f"{dockerfile}: package host keys kept"
        assert "munge.key" in text, f"{dockerfile}: the package's munge key must be removed"
    for name in ["slurm-head", *_compute_services(services)]:
        assert services[name]["user"] == "0:0", name
    for name in AIRFLOW_LONG_RUNNING:
        assert not str(services[name]["user"]).startswith("0:"), f"{name} runs as root"
