"""The session check of a recorded run (``tests/iam/recording.py``): a call the record lacks fails the run."""

from __future__ import annotations

import json

import pytest

from tests.iam.calls import RECORD, ROOT

CALL = {"service": "sagemaker", "client": "sagemaker", "operation": "ListTrainingJobs", "params": {},
        "dag_id": "stylegan2_training", "task_id": "train", "caller": "ReattachingTrainingOperator",
        "trigger": None, "presign": False, "process": "airflow dags test stylegan2_training", "pid": 1}


@pytest.fixture
def recorded_session(pytester, monkeypatch, tmp_path):
    log = tmp_path / "calls.jsonl"
    log.write_text(json.dumps(CALL) + "\n")
    monkeypatch.setenv("REELFORGE_AWS_CALL_LOG", str(log))
    monkeypatch.delenv("REELFORGE_AWS_CALL_CHECK", raising=False)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    pytester.makepyfile("def test_nothing_aws():\n    pass\n")
    # the plugin by its path (a site-packages ``tests`` package may shadow this checkout's in a bare subprocess)
    pytester.makeconftest(f"""
import importlib.util
spec = importlib.util.spec_from_file_location("reelforge_iam_recording", {str(ROOT / "tests/iam/recording.py")!r})
plugin = importlib.util.module_from_spec(spec)
spec.loader.exec_module(plugin)
pytest_sessionfinish = plugin.pytest_sessionfinish
""")

    def run(record):
        monkeypatch.setenv("REELFORGE_IAM_RECORD", str(record))
        return pytester.runpytest_subprocess("-p", "no:cacheprovider")

    return run


def test_a_call_missing_from_the_record_fails_the_run(recorded_session, tmp_path):
    record = json.loads(RECORD.read_text())
    record["policies"]["stylegan2-airflow-policy.json"]["recorded"].pop("sagemaker:ListTrainingJobs", None)
    copy = tmp_path / "operations.json"
    copy.write_text(json.dumps(record))
    result = recorded_session(copy)
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    result.stdout.fnmatch_lines(["*unrecorded AWS calls*",
                                 "*stylegan2-airflow-policy.json: sagemaker:ListTrainingJobs*"])


def test_calls_the_record_lists_pass(recorded_session):
    result = recorded_session(RECORD)
    assert result.ret == pytest.ExitCode.OK, result.stdout.str()
