"""The local stack is up and reachable through the same Airflow connections the DAGs use."""

from __future__ import annotations

import re
import subprocess
import time
import uuid
from pathlib import Path

import pytest

pytestmark = pytest.mark.stack
ROOT = Path(__file__).resolve().parent.parent


def test_sbatch_over_ssh_through_the_airflow_connection():
    from airflow.providers.ssh.hooks.ssh import SSHHook

    hook = SSHHook(ssh_conn_id="slurm_ssh")
    assert hook.no_host_key_check is False and hook.host_key is not None
    with hook.get_conn() as client:
        _, stdout, stderr = client.exec_command("sbatch --parsable --wrap 'hostname'")
        out = stdout.read().decode().strip()
        assert stdout.channel.recv_exit_status() == 0, stderr.read().decode()
    assert re.fullmatch(r"\d+(;\S+)?", out), out


def test_s3_put_get_through_the_airflow_connection():
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    hook = S3Hook(aws_conn_id="aws_default")
    key = f"tests/stack/{uuid.uuid4().hex}.txt"
    hook.load_string("hello reelforge", key=key, bucket_name="reelforge-artifacts")
    assert hook.read_key(key, bucket_name="reelforge-artifacts") == "hello reelforge"


def test_up_is_idempotent_and_status_shows_the_cluster():
    start = time.monotonic()
    up = subprocess.run(["bash", str(ROOT / "scripts/local-stack"), "up"], capture_output=True, text=True)
    assert up.returncode == 0, up.stderr
    assert "creating" not in up.stderr and "installing" not in up.stderr, up.stderr
    status = subprocess.run(["bash", str(ROOT / "scripts/local-stack"), "status"], capture_output=True, text=True)
    assert status.returncode == 0, status.stdout
    # every node up and taking jobs: idle, or still running a job an earlier test left (mix, alloc, comp)
    usable = {line.split()[0] for line in status.stdout.splitlines()
              if re.search(r"\bn\d\s+cpu\*?\s+(idle|mix|alloc|comp)\b", line)}
    assert usable == {"n1", "n2", "n3"}, status.stdout
    assert "sshd: running" in status.stdout and "moto (local AWS endpoint): running" in status.stdout
    print(f"second `up` took {time.monotonic() - start:.1f}s")
