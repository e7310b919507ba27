"""The AnimateAnyone side of the local cluster: a venv the Slurm jobs run with, and an MLflow server.

* ``/opt/reelforge/animate-anyone-venv`` (readable by the cluster user): torch CPU + mlflow from
  ``containers/animate_anyone/requirements-cluster.txt`` and the ``reelforge-animate-anyone``
  package (glue + smoke payload), reinstalled whenever its sources change. What the container image
  is on HyperPod.
* An MLflow tracking server on 127.0.0.1:5055 (SQLite store under the stack's state dir), the local
  stand-in for SageMaker managed MLflow. Reused when already running.

Run as a script (``python tests/e2e/animate_anyone/cluster_env.py``) to set both up by hand.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[3]
PKG = ROOT / "containers" / "animate_anyone"
VENV = Path(os.environ.get("REELFORGE_AA_VENV", "/opt/reelforge/animate-anyone-venv"))
STATE = Path(os.environ.get("REELFORGE_STATE_DIR", ROOT / ".local-stack"))
MLFLOW_PORT = 5055
MLFLOW_URL = f"http://127.0.0.1:{MLFLOW_PORT}"
PYTHON = "/usr/bin/python3"  # the cluster user cannot read a pyenv Python under /root


def _tree_hash(*paths: Path) -> str:
    digest = hashlib.sha256()
    for base in paths:
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for path in files:
            if "egg-info" in path.parts or "__pycache__" in path.parts or path.parent.name == "build":
                continue
            digest.update(str(path.relative_to(ROOT)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def _run(argv: list[str], log: Path) -> None:
    with log.open("ab") as fh:
        subprocess.run(argv, check=True, stdout=fh, stderr=subprocess.STDOUT)


def ensure_venv() -> Path:
    """Create/refresh the cluster venv (idempotent; first time ~1.5 min: torch + mlflow)."""
    VENV.parent.mkdir(parents=True, exist_ok=True)
    logs = STATE / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / "pip-animate-anyone-venv.log"
    requirements = PKG / "requirements-cluster.txt"
    with open(VENV.parent / ".animate-anyone-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (VENV / "bin" / "python").exists():
            _run([PYTHON, "-m", "venv", str(VENV)], log)
        want = _tree_hash(requirements)
        stamp = VENV / ".requirements-stamp"
        if not stamp.exists() or stamp.read_text() != want:
            _run([str(VENV / "bin" / "pip"), "install", "-q", "-r", str(requirements)], log)
            stamp.write_text(want)
        want = _tree_hash(PKG / "pyproject.toml", PKG / "src", PKG / "configs", PKG / "smoke")
        stamp = VENV / ".package-stamp"
        if not stamp.exists() or stamp.read_text() != want:
            build = STATE / "aa-build"
            subprocess.run(["rm", "-rf", str(build)], check=True)
            subprocess.run(["cp", "-r", str(PKG), str(build)], check=True)
            _run([str(VENV / "bin" / "pip"), "install", "-q", "--no-deps", "--force-reinstall", str(build)], log)
            stamp.write_text(want)
        subprocess.run(["chmod", "-R", "a+rX", str(VENV)], check=True)
    return VENV


def mlflow_healthy(url: str = MLFLOW_URL) -> bool:
    try:
        return requests.get(f"{url}/health", timeout=2).status_code == 200
    except requests.RequestException:
        return False


@contextmanager
def mlflow_server(timeout: float = 120) -> Iterator[str]:
    """A running MLflow server: the one already on the port, else one started (and stopped) here."""
    if mlflow_healthy():
        yield MLFLOW_URL
        return
    home = STATE / "mlflow"
    (home / "artifacts").mkdir(parents=True, exist_ok=True)
    log = (STATE / "logs" / "mlflow-server.log").open("ab")
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    proc = subprocess.Popen(
        [str(VENV / "bin" / "mlflow"), "server", "--host", "127.0.0.1", "--port", str(MLFLOW_PORT),
         "--workers", "1", "--backend-store-uri", f"sqlite:///{home / 'mlflow.db'}",
         "--artifacts-destination", str(home / "artifacts")],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
    )
    try:
        deadline = time.monotonic() + timeout
        while not mlflow_healthy():
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {proc.returncode}; see {log.name}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server not healthy after {timeout:.0f}s; see {log.name}")
            time.sleep(0.5)
        yield MLFLOW_URL
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        log.close()


if __name__ == "__main__":
    print(ensure_venv())
    if "--server" in sys.argv:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the server on TERM too
        signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
        with mlflow_server() as url:
            print(f"MLflow on {url}; Ctrl-C to stop")
            signal.pause()
