"""The Slurm operator fails at once (no retries) only when every failed task says retrying cannot help."""

from __future__ import annotations

import os
import subprocess
import time
import uuid

import pytest

from reelforge.operators.slurm import PERMANENT_FAILURE_MARKER, SlurmJobFailedError, SlurmJobOperator, slurm_job_name
from reelforge_sr.cli import PERMANENT_FAILURE_MARKER as WORKER_MARKER
from tests.e2e.test_sr_dag import DAG_ID, INGEST, local_settings, sr_dag  # noqa: F401
from tests.media_utils import make_clip
from tests.plugins.slurm.slurm_helpers import CONN_ID, drive, fake_ti
from tests.reliability.e2e_helpers import claiming_run, delete_versions, slurm_job_names, task_log

pytestmark = [pytest.mark.stack]
SCRIPT = """#!/bin/bash
#SBATCH --time=2
[[ "${SLURM_ARRAY_TASK_ID:-0}" == 1 && "$MODE" == mixed ]] && exit 1
echo "reelforge-sr plan: error: /w/source.mp4: not a media file or corrupt" >&2
[[ "$MODE" != plain ]] && echo "reelforge: permanent failure: /w/source.mp4: not a media file or corrupt" >&2
exit 1
"""


@pytest.fixture(scope="module")
def base():
    from reelforge.hooks.slurm import SlurmHook

    root = os.environ.get("AIRFLOW_VAR_REELFORGE_CLUSTER_WORK_ROOT", "/srv/reelforge")
    path = f"{root}/pytest-reliability/{uuid.uuid4().hex[:8]}"
    yield path
    with SlurmHook(CONN_ID) as hook:
        hook.run_command(["rm", "-rf", "--", path], check=False)


@pytest.mark.parametrize(("mode", "array", "permanent"),
                         [("marker", None, True), ("plain", None, False), ("mixed", "0-1", False)])
def test_only_a_permanent_failure_of_every_task_skips_retries(base, mode, array, permanent):
    from airflow.sdk.exceptions import AirflowFailException

    assert WORKER_MARKER == PERMANENT_FAILURE_MARKER  # the worker and the operator speak the same line
    op = SlurmJobOperator(task_id=f"perm-{mode}", ssh_conn_id=CONN_ID, script=SCRIPT, workdir=f"{base}/{mode}",
                          env={"MODE": mode}, array=array, poll_interval=1, first_poll_delay=0)
    with pytest.raises(SlurmJobFailedError) as err:
        drive(op, fake_ti(f"perm-{mode}", f"manual__reliability-{uuid.uuid4().hex[:6]}"))
    assert isinstance(err.value, AirflowFailException) is permanent
    if mode != "plain":
        assert "index 0: FAILED exit=1" in str(err.value)
        assert "not a media file or corrupt" in str(err.value)
    assert ("not retried" in str(err.value)) is permanent


# ------------------------------------------------------------------ through the DAG (issue 21)

def _partition(name: str, state: str) -> None:
    subprocess.run(["scontrol", "update", f"PartitionName={name}", f"State={state}"], check=True)


def _wait_for_job(name: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while name not in slurm_job_names():
        if time.monotonic() > deadline:
            raise AssertionError(f"no Slurm job {name} after {timeout:.0f}s: {slurm_job_names()}")
        time.sleep(1)


@pytest.mark.slow
def test_a_permanent_worker_failure_runs_one_job_and_sns_carries_its_reason(sr_dag, aws, sns_inbox,  # noqa: F811
                                                                            shared_data, tmp_path):
    """The upload passes prepare, then its version is deleted before the plan job fetches it.

    Only the worker can see this (prepare checked the version that existed); the worker says the object
    is gone, a permanent failure: one plan job, no retry, and the worker's own sentence in the SNS
    message and the task log. (Before issue 21 the worker's storage errors were all transient: the task
    was retried, four plan jobs in all, and the message said only "1 of 1 tasks failed".)
    The plan job is held in a partition set DOWN while the version is deleted, so nothing races.
    """
    prefix = f"sr/incoming/reliability/gone-{uuid.uuid4().hex[:6]}/"
    key = f"{prefix}clip.mp4"
    clip = make_clip(shared_data / "video" / "moviepy_doc_example2_bbb.mp4", tmp_path / "clip.mp4",
                     width=32, height=18, seconds=0.5, tone=500)
    known = {r["dag_run_id"] for r in sr_dag.runs(DAG_ID)}
    cpu_partition = local_settings().cpu_partition  # where plan jobs run
    _partition(cpu_partition, "DOWN")
    try:
        put = aws.s3.put_object(Bucket=INGEST, Key=key, Body=clip.read_bytes())
        run_id = claiming_run(sr_dag, key, known)  # a duplicate delivery's run, if any, skips at the claim
        plan_job = slurm_job_name(DAG_ID, run_id, "plan_segments")
        _wait_for_job(plan_job)  # submitted after prepare passed, pending in the DOWN partition
        assert sr_dag.task_states(DAG_ID, run_id)["prepare"] == "success"
        aws.s3.delete_object(Bucket=INGEST, Key=key, VersionId=put["VersionId"])
    finally:
        _partition(cpu_partition, "UP")
        delete_versions(aws.s3, prefix)

    assert sr_dag.wait_for_run(DAG_ID, run_id, timeout=240) == "failed", sr_dag.task_states(DAG_ID, run_id)
    states = sr_dag.task_states(DAG_ID, run_id)
    assert states["plan_segments"] == "failed" and states["upscale_segments"] == "upstream_failed", states
    assert slurm_job_names().count(plan_job) == 1, "a permanent failure must not be retried"
    worker_sentence = f"s3://{INGEST}/{key} not found"
    assert worker_sentence in task_log(run_id, "plan_segments")
    (failure,) = [m for m in sns_inbox() if m.get("event") == "sr_failed" and m.get("run_id") == run_id]
    assert failure["task_id"] == "plan_segments" and failure["try_number"] == 1, failure
    assert worker_sentence in failure["reason"], failure["reason"]
