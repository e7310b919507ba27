"""Shared test setup: load the local stack's environment (unless ``REELFORGE_STACK=off``) and locate shared data.

``REELFORGE_STACK=off`` is the unit tier (``make unit``): env.sh is not read, variables a sourced env.sh left
behind are dropped and Airflow gets a throwaway home, so a test that needs the stack fails instead of using it.
The skip policy (``tests/skip_policy.py``) makes skips fail the run under ``CI=true``.
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

pytest_plugins = ["tests.skip_policy", "tests.leftover_policy", "pytester", "tests.iam.recording"]

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("REELFORGE_STATE_DIR", ROOT / ".local-stack"))
ENV_FILE = STATE / "env.sh"
NO_STACK = os.environ.get("REELFORGE_STACK", "").strip().lower() == "off"
# Where the checkout and the shared data are: not the stack, the unit tier keeps them.
KEEP_WITHOUT_STACK = {"REELFORGE_ROOT", "REELFORGE_STACK", "REELFORGE_SHARED_DATA", "REELFORGE_MODEL_DIR",
                      "REELFORGE_SAMPLES_DIR"}


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


def _drop_stack_env() -> None:
    """Forget the stack's endpoints, connections and Airflow settings; Airflow gets an empty temp home."""
    for key in list(os.environ):
        if key.startswith(("AIRFLOW", "REELFORGE")) and key not in KEEP_WITHOUT_STACK:
            del os.environ[key]
    home = tempfile.mkdtemp(prefix="reelforge-unit-airflow-")
    atexit.register(shutil.rmtree, home, ignore_errors=True)
    os.environ["AIRFLOW_HOME"] = home


if NO_STACK:
    _drop_stack_env()
STACK_ENV = not NO_STACK and _load_stack_env()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    """A `stack` test without the stack's env skips, or fails under CI (never a silent pass there)."""
    if STACK_ENV or "stack" not in item.keywords:
        return
    why = ("REELFORGE_STACK=off (the unit tier)" if NO_STACK
           else f"local stack not set up ({ENV_FILE} missing): run `scripts/local-stack up` (make test does)")
    from tests.skip_policy import ci_enforced  # imported by pytest_plugins first, for assertion rewriting

    if ci_enforced():
        pytest.fail(f"CI: a `stack` test cannot run: {why}", pytrace=False)
    pytest.skip(why)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Modules that need the session's Airflow run after all others, the browser's last: the e2e Airflow
    starts once and is up only while tests use it (its scheduler and parser would slow the rest on a small
    machine), and the browser tests reuse it instead of starting their own. Order within a group is kept."""

    def group(module: str) -> int:
        uses_airflow = any("airflow" in getattr(i, "fixturenames", ()) for i in by_module[module])
        return 0 if not uses_airflow else 2 if "/browser/" in module else 1

    by_module: dict[str, list[pytest.Item]] = {}
    for item in items:
        by_module.setdefault(str(item.path), []).append(item)
    items[:] = sorted(items, key=lambda i: group(str(i.path)))


@pytest.fixture(autouse=True)
def _no_aws_endpoint_for_unit_tests(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """A unit test's boto3 clients talk to moto in this process: an endpoint left in the environment by a
    fixture of the stack tier would send them to the shared local endpoint, whose state outlives the test."""
    if "stack" not in request.keywords:
        for name in [k for k in os.environ if k.startswith("AWS_ENDPOINT_URL")]:
            monkeypatch.delenv(name)


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """``../shared/data`` beside the checkout (real weights, sample clips, images)."""
    path = Path(os.environ.get("REELFORGE_SHARED_DATA", ROOT.parent / "shared" / "data"))
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path}")
    return path
