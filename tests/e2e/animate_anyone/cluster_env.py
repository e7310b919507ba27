"""The AnimateAnyone side of the local cluster: a venv the Slurm jobs run with, and an MLflow server.

* ``/opt/reelforge/animate-anyone-venv`` (readable by the cluster user): torch CPU + mlflow from
  ``containers/animate_anyone/requirements-cluster.txt`` and the ``reelforge-animate-anyone``
  package (glue + smoke payload), reinstalled whenever its sources change. What the container image
  is on HyperPod.
* ``/opt/Moore-AnimateAnyone`` (``REELFORGE_AA_CODE_DIR``; the image's path and the default of
  ``reelforge_animate_anyone_code_dir``): the pinned snapshot from ``../shared/upstream/``, patched by
  ``patches/patch_moore.py`` as the image build does. The ``moore-cpu`` payload runs it.
* An MLflow tracking server on 127.0.0.1:5055 (SQLite store under the stack's state dir), the local
  stand-in for SageMaker managed MLflow. Reused when already running.

Run as a script (``python tests/e2e/animate_anyone/cluster_env.py``) to set both up by hand.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
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
CODE_DIR = Path(os.environ.get("REELFORGE_AA_CODE_DIR", "/opt/Moore-AnimateAnyone"))
UPSTREAM = Path(os.environ.get("REELFORGE_UPSTREAM_DIR", ROOT.parent / "shared" / "upstream"))
MOORE_TARBALL = UPSTREAM / "Moore-AnimateAnyone-980bf97.tar.gz"  # the commit the Dockerfile pins
PYTHON = "/usr/bin/python3"  # the cluster user cannot read a pyenv Python under /root


def _tree_hash(*paths: Path) -> str:
    digest = hashlib.sha256()
    for base in paths:
        files = [base] if base.is_file() else sorted(p for p in base.rglob("*") if p.is_file())
        for path in files:
            if "egg-info" in path.parts or "__pycache__" in path.parts or path.parent.name == "build":
                continue
            digest.update(str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path.name).encode())
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


def ensure_moore() -> Path:
    """Unpack and patch the pinned Moore-AnimateAnyone snapshot at :data:`CODE_DIR` (redone when either changes)."""
    if not MOORE_TARBALL.is_file():
        raise FileNotFoundError(f"pinned Moore-AnimateAnyone snapshot not found: {MOORE_TARBALL}")
    want = _tree_hash(MOORE_TARBALL, PKG / "patches" / "patch_moore.py")
    stamp = CODE_DIR / ".reelforge-stamp"
    CODE_DIR.parent.mkdir(parents=True, exist_ok=True)
    with open(CODE_DIR.parent / ".moore-animate-anyone.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.is_file() and stamp.read_text() == want:
            return CODE_DIR
        staging = CODE_DIR.with_name(CODE_DIR.name + f".staging-{os.getpid()}")
        subprocess.run(["rm", "-rf", str(staging)], check=True)
        staging.mkdir()
        subprocess.run(["tar", "-xzf", str(MOORE_TARBALL), "--strip-components=1", "-C", str(staging)], check=True)
        subprocess.run([PYTHON, str(PKG / "patches" / "patch_moore.py"), str(staging)], check=True,
                       stdout=subprocess.DEVNULL)
        (staging / ".reelforge-stamp").write_text(want)
        subprocess.run(["chmod", "-R", "a+rX", str(staging)], check=True)
        subprocess.run(["rm", "-rf", str(CODE_DIR)], check=True)
        staging.rename(CODE_DIR)
    return CODE_DIR


def make_clips(data: Path, count: int, frames: int = 8) -> Path:
    """``count`` video/pose clip pairs (same frame count, as Moore's datasets assert) and our manifest.

    Widths are multiples of 16: decord 0.6.0 returns 4 channels for a 72-pixel-wide clip.
    """
    data.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(count):
        entry = {}
        for field, source in (("video_path", "testsrc"), ("kps_path", "testsrc2")):
            path = data / f"{i:03d}{'_kps' if field == 'kps_path' else ''}.mp4"
            subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                            f"{source}=size=96x128:rate=8", "-frames:v", str(frames), "-pix_fmt", "yuv420p",
                            "-c:v", "libx264", str(path)], check=True)
            entry[field] = str(path)
        entries.append(entry)
    manifest = data / "manifest.json"
    manifest.write_text(json.dumps(entries))
    subprocess.run(["chmod", "-R", "a+rX", str(data)], check=True)  # the cluster user reads them
    return manifest


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
    print(ensure_moore())
    if "--server" in sys.argv:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # stop the server on TERM too
        signal.signal(signal.SIGINT, lambda *_: sys.exit(0))
        with mlflow_server() as url:
            print(f"MLflow on {url}; Ctrl-C to stop")
            signal.pause()
