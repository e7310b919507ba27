"""pytest plugin (``tests/conftest.py`` loads it): AWS call recording for the IAM check.

With ``REELFORGE_AWS_CALL_LOG=/path/calls.jsonl`` set for a pytest run:

* every process the tests start (``airflow dags test``, the local Airflow's scheduler, triggerer and
  workers, Celery workers, the SR worker when its environment reaches it) gets
  ``tests/support/aws_recorder`` on ``PYTHONPATH``; its ``sitecustomize`` records each AWS operation
  the process issues into that file (the pytest process itself, i.e. the tests' own setup calls, is not
  recorded);
* at the end of the session every recorded call is attributed to its policy (``tests/iam/calls.py``)
  and the run fails if one is not in the committed record ``include/iam/operations.json``: a DAG that
  starts issuing a new call cannot slip through. ``REELFORGE_AWS_CALL_CHECK=off`` records without
  checking (what ``python tests/iam/record_operations.py`` uses to regenerate the record);
  ``REELFORGE_IAM_RECORD`` points the check at another record (its own test uses that).
"""

from __future__ import annotations

import importlib.util
import os
import sys
from pathlib import Path

import pytest

RECORDER_DIR = Path(__file__).resolve().parents[1] / "support" / "aws_recorder"
LOG = os.environ.get("REELFORGE_AWS_CALL_LOG", "")

if LOG:
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(RECORDER_DIR), os.environ.get("PYTHONPATH", "")) if p
    )


def load_calls_module():
    """``tests/iam/calls.py`` by its path: a site-packages ``tests`` package (some wheels ship one) must not
    shadow this checkout's."""
    name = "reelforge_iam_calls"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).with_name("calls.py"))
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    if not LOG or os.environ.get("REELFORGE_AWS_CALL_CHECK", "").lower() == "off":
        return
    calls = load_calls_module()
    record = Path(os.environ.get("REELFORGE_IAM_RECORD", calls.RECORD))
    missing = calls.missing_from_record(calls.load_calls(Path(LOG)), calls.load_record(record))
    if not missing:
        return
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    shown = record.relative_to(calls.ROOT) if record.is_relative_to(calls.ROOT) else record
    lines = [f"AWS calls recorded in this run that {shown} does not list",
             "(add them to the policy and the record: python tests/iam/record_operations.py --log " + LOG + "):"]
    lines += [f"  {policy}: {action}  <- {example}" for policy, action, example in missing]
    if reporter is not None:
        reporter.write_sep("=", "IAM: unrecorded AWS calls", red=True)
        for line in lines:
            reporter.write_line(line)
    session.exitstatus = pytest.ExitCode.TESTS_FAILED
