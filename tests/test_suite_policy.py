"""The suite's own rules: under CI a skip fails the run unless allowed, and `stack` tests never pass silently."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.skip_policy import DEFAULT_ALLOW_LIST, allowed_reason, load_allow_list

ROOT = Path(__file__).resolve().parent.parent

SKIPPING_TESTS = """
import pytest

@pytest.fixture
def missing_data():
    pytest.skip("data not found")

def test_passes():
    pass

def test_skips_in_body():
    pytest.skip("no tool")

@pytest.mark.skipif(True, reason="marked off")
def test_skipped_by_mark():
    pass

def test_skips_in_fixture(missing_data):
    pass

@pytest.mark.xfail(reason="known bug")
def test_xfails():
    assert False
"""


@pytest.fixture
def suite(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> Callable[..., pytest.RunResult]:
    """``suite(ci, allow=TOML text)`` runs SKIPPING_TESTS with the skip policy plugin and that allow list."""
    pytester.makepyfile(test_tiny=SKIPPING_TESTS)

    def run(ci: bool, allow: str = "[skips]\n") -> pytest.RunResult:
        if ci:
            monkeypatch.setenv("CI", "true")
        else:
            monkeypatch.delenv("CI", raising=False)
        allow_list = pytester.makefile(".toml", allowed=allow)
        return pytester.runpytest("-p", "tests.skip_policy", "--skip-allow-list", str(allow_list), "-p",
                                  "no:cacheprovider")

    return run


def test_without_ci_a_skip_is_only_a_skip(suite):
    result = suite(ci=False)
    result.assert_outcomes(passed=1, skipped=3, xfailed=1)
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines(["*skip policy (not CI*",
                                 "unlisted SKIP test_tiny.py::test_skips_in_fixture: data not found"])


def test_under_ci_an_unlisted_skip_fails_the_run_even_from_a_fixture(suite):
    result = suite(ci=True, allow='[skips]\n"test_tiny.py::test_skips_in_body" = "the tool is optional"\n'
                                  '"test_tiny.py::test_skipped_by_*" = "marked off on purpose"\n')
    result.assert_outcomes(passed=1, skipped=3, xfailed=1)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["UNALLOWED SKIP test_tiny.py::test_skips_in_fixture: data not found",
                                 "skip policy FAILED: 1 skipped test(s) not in the allow list*"])
    assert "xfail" not in "".join(line for line in result.outlines if "SKIP" in line)


def test_under_ci_listed_skips_pass_and_print_their_reason(suite):
    result = suite(ci=True, allow='[skips]\n"test_tiny.py::test_skips_in_body" = "the tool is optional"\n'
                                  '"test_tiny.py::test_skip?_in_fixture" = "data only on big machines"\n'
                                  '"test_tiny.py::test_skipped_by_mark" = "marked off on purpose"\n')
    assert result.ret == pytest.ExitCode.OK
    result.stdout.fnmatch_lines_random([
        "ALLOWED SKIP test_tiny.py::test_skips_in_body: the tool is optional (skipped: no tool)",
        "ALLOWED SKIP test_tiny.py::test_skips_in_fixture: data only on big machines (skipped: data not found)",
        "ALLOWED SKIP test_tiny.py::test_skipped_by_mark: marked off on purpose (skipped: marked off)",
    ])


def test_an_allow_list_entry_without_a_reason_is_an_error(suite):
    result = suite(ci=True, allow='[skips]\n"test_tiny.py::test_skips_in_body" = ""\n')
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(["*allowed skip 'test_tiny.py::test_skips_in_body' needs a reason*"])


def test_exact_node_ids_match_before_globs():
    allowed = {"t.py::test_a[x-1]": "exact", "t.py::test_b*": "glob"}
    assert allowed_reason("t.py::test_a[x-1]", allowed) == "exact"  # [x-1] would be a character class as a glob
    assert allowed_reason("t.py::test_b[2]", allowed) == "glob"
    assert allowed_reason("t.py::test_c", allowed) is None


def test_the_project_allow_list_loads_and_gives_every_entry_a_reason():
    assert all(reason.strip() for reason in load_allow_list(DEFAULT_ALLOW_LIST).values())


def _run_stack_test(ci: bool) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "CI"} | {"REELFORGE_STACK": "off"}
    if ci:
        env["CI"] = "true"
    return subprocess.run([sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q",
                           "tests/test_local_stack.py::test_sbatch_over_ssh_through_the_airflow_connection"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_a_stack_test_without_the_stack_skips_but_fails_under_ci():
    local = _run_stack_test(ci=False)
    assert local.returncode == 0 and "1 skipped" in local.stdout, local.stdout[-2000:]
    ci = _run_stack_test(ci=True)
    assert ci.returncode == 1 and "1 error" in ci.stdout, ci.stdout[-2000:]
    assert "CI: a `stack` test cannot run: REELFORGE_STACK=off" in ci.stdout
