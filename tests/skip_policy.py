"""Pytest plugin: under ``CI=true`` a skipped test fails the run unless the allow list names it.

The allow list (``tests/allowed_skips.toml``, or ``--skip-allow-list PATH``) maps a node id or an
fnmatch glob over node ids to the reason the skip is acceptable. Skips from marks, from the test body
and from fixtures all count; xfail does not, nor do deselected tests (``-m "not stack"``). At the end
of the session the plugin prints the skips it saw, allowed ones with their reason, and fails the run
(exit status 1) if any skip is not allowed and CI is on. Without CI a skip stays a skip.
"""

from __future__ import annotations

import fnmatch
import os
import tomllib
from pathlib import Path

import pytest

DEFAULT_ALLOW_LIST = Path(__file__).with_name("allowed_skips.toml")


def ci_enforced() -> bool:
    """True when the environment says this is CI (``CI=true``, ``1`` or ``yes``)."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def load_allow_list(path: Path) -> dict[str, str]:
    """``{node id or glob: reason}`` from the ``[skips]`` table; every entry needs a non-empty reason."""
    if not path.is_file():
        return {}
    with path.open("rb") as f:
        table = tomllib.load(f).get("skips", {})
    for pattern, reason in table.items():
        if not isinstance(reason, str) or not reason.strip():
            raise pytest.UsageError(f"{path}: allowed skip {pattern!r} needs a reason (a non-empty string)")
    return dict(table)


def allowed_reason(nodeid: str, allowed: dict[str, str]) -> str | None:
    """The allow-list reason for ``nodeid`` (exact node id first, then glob patterns), else None."""
    if nodeid in allowed:
        return allowed[nodeid]
    return next((reason for pattern, reason in allowed.items() if fnmatch.fnmatchcase(nodeid, pattern)), None)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--skip-allow-list", type=Path, default=None,
                     help=f"TOML file of allowed skips (default: tests/{DEFAULT_ALLOW_LIST.name})")


def pytest_configure(config: pytest.Config) -> None:
    given = config.getoption("--skip-allow-list")
    if given is not None and not given.is_file():
        raise pytest.UsageError(f"--skip-allow-list: {given} not found")
    config.pluginmanager.register(SkipPolicy(load_allow_list(given or DEFAULT_ALLOW_LIST), ci_enforced()),
                                  "reelforge-skip-policy")


class SkipPolicy:
    """Collects the session's skips, reports them and turns unallowed ones into a failed run."""

    def __init__(self, allowed: dict[str, str], enforced: bool) -> None:
        self.allowed = allowed
        self.enforced = enforced
        self.skips: list[tuple[str, str]] = []  # (node id, the skip's own reason)

    def unallowed(self) -> list[tuple[str, str]]:
        return [(nodeid, said) for nodeid, said in self.skips if allowed_reason(nodeid, self.allowed) is None]

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        if report.skipped and not hasattr(report, "wasxfail"):
            longrepr = report.longrepr
            said = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
            self.skips.append((report.nodeid, said.removeprefix("Skipped: ")))

    def pytest_sessionfinish(self, session: pytest.Session) -> None:
        if self.enforced and self.unallowed() and session.exitstatus == pytest.ExitCode.OK:
            session.exitstatus = pytest.ExitCode.TESTS_FAILED

    def pytest_terminal_summary(self, terminalreporter: pytest.TerminalReporter) -> None:
        tr, bad = terminalreporter, self.unallowed()
        mode = "CI: a skip not in the allow list fails the run" if self.enforced else "not CI: skips are only reported"
        tr.section(f"skip policy ({mode})")
        tr.write_line(f"allow list: {len(self.allowed)} entr{'y' if len(self.allowed) == 1 else 'ies'}")
        for pattern, reason in self.allowed.items():
            tr.write_line(f"  {pattern}: {reason}")
        for nodeid, said in self.skips:
            reason = allowed_reason(nodeid, self.allowed)
            if reason is not None:
                tr.write_line(f"ALLOWED SKIP {nodeid}: {reason} (skipped: {said})")
        for nodeid, said in bad:
            tr.write_line(f"{'UNALLOWED' if self.enforced else 'unlisted'} SKIP {nodeid}: {said}", red=self.enforced)
        if not self.skips:
            tr.write_line("no test skipped")
        elif bad and self.enforced:
            tr.write_line(f"skip policy FAILED: {len(bad)} skipped test(s) not in the allow list "
                          "(fix the cause, or add the node id with a reason)", red=True, bold=True)
