"""The suite leaves nothing in the checkout: files a test run creates outside ``tmp_path`` and the ignored
state directories (``.local-stack/``, ``out/``) are a leak (e.g. MLflow's ``./mlruns``), reported at the end
and, under CI, a failed run. Only new untracked, non-ignored files count: a developer's own work is left alone.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from tests.skip_policy import ci_enforced

ROOT = Path(__file__).resolve().parent.parent


def untracked() -> set[str] | None:
    """Untracked files git does not ignore, or None outside a git checkout."""
    out = subprocess.run(["git", "ls-files", "--others", "--exclude-standard"], cwd=ROOT, capture_output=True,
                         text=True)
    return set(out.stdout.splitlines()) if out.returncode == 0 else None


class LeftoverPolicy:
    def __init__(self) -> None:
        self.before = untracked()
        self.new: list[str] = []

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        after = untracked()
        if self.before is None or after is None:
            return
        self.new = sorted(after - self.before)
        if self.new and ci_enforced() and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        if self.new:
            terminalreporter.section("files the run left in the checkout")
            for path in self.new[:50]:
                terminalreporter.write_line(f"LEFT {path}", red=ci_enforced())


def pytest_configure(config: pytest.Config) -> None:
    config.pluginmanager.register(LeftoverPolicy(), "reelforge-leftover-policy")
