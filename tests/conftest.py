"""Shared test setup: load the local stack's environment and locate shared data."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("REELFORGE_STATE_DIR", ROOT / ".local-stack"))
ENV_FILE = STATE / "env.sh"


def _load_stack_env() -> bool:
    """Export the variables of ``.local-stack/env.sh`` into this process (once, before Airflow imports)."""
    if not ENV_FILE.exists():
        return False
    out = subprocess.run(
        ["bash", "-c", f'set -a; source "{ENV_FILE}"; env -0'],
        capture_output=True,
        check=True,
        env={**os.environ, "REELFORGE_ROOT": str(ROOT)},
    ).stdout
    for item in out.split(b"\0"):
        if b"=" in item:
            key, _, value = item.decode().partition("=")
            if key.startswith(("AIRFLOW", "REELFORGE")) or key == "PATH":
                os.environ[key] = value
    return True


STACK_ENV = _load_stack_env()


def pytest_collection_modifyitems(config, items):
    if STACK_ENV:
        return
    skip = pytest.mark.skip(reason="local stack not set up: run `scripts/local-stack up` (make test does)")
    for item in items:
        if "stack" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout (real weights, sample clips, images)."""
    path = Path(os.environ.get("REELFORGE_SHARED_DATA", ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path}")
    return path
