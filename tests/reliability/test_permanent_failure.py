"""The Slurm operator fails at once (no retries) only when every failed task says retrying cannot help."""

from __future__ import annotations

import os
import uuid

import pytest

from reelforge.operators.slurm import PERMANENT_FAILURE_MARKER, SlurmJobFailedError, SlurmJobOperator
from reelforge_sr.cli import PERMANENT_FAILURE_MARKER as WORKER_MARKER
from tests.plugins.slurm.slurm_helpers import CONN_ID, drive, fake_ti

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
