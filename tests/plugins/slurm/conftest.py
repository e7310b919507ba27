"""Fixtures for the Slurm tests: the real local cluster, switched between accounting on and off."""

from __future__ import annotations

import os

import pytest

from tests.plugins.slurm.slurm_helpers import (
    CONN_ID,
    SESSION,
    Cluster,
    current_accounting,
    fake_ti,
    script,
    switch_accounting,
)


@pytest.fixture(scope="session")
def _restore_accounting():
    """Put accounting back the way the session found it."""
    original = current_accounting()
    yield original
    if current_accounting() != original:
        switch_accounting(original)
    from reelforge.hooks.slurm import SlurmHook

    work_root = os.environ.get("AIRFLOW_VAR_REELFORGE_CLUSTER_WORK_ROOT", "/srv/reelforge")
    with SlurmHook(CONN_ID) as hook:
        hook.run_command(["rm", "-rf", "--", f"{work_root}/pytest-slurm/{SESSION}"], check=False)


# The mode the stack is in now runs last, so the rest of the session finds it as it was.
MODES = ["off", "on"] if current_accounting() == "on" else ["on", "off"]


@pytest.fixture(scope="session", params=MODES)
def accounting(request, _restore_accounting) -> str:
    """Each cluster test runs once with Slurm accounting (sacct) and once without (squeue/scontrol)."""
    if current_accounting() != request.param:
        switch_accounting(request.param)
    return request.param


@pytest.fixture(scope="session")
def cluster(accounting: str):
    """The cluster in one accounting mode; starts the slow TIMEOUT job first so it overlaps the rest."""
    from airflow.sdk.exceptions import TaskDeferred

    from reelforge.hooks.slurm import SlurmHook
    from reelforge.operators.slurm import SlurmJobOperator

    work_root = os.environ.get("AIRFLOW_VAR_REELFORGE_CLUSTER_WORK_ROOT", "/srv/reelforge")
    hook = SlurmHook(CONN_ID)
    assert hook.uses_sacct() is (accounting == "on")
    c = Cluster(mode=accounting, hook=hook, base=f"{work_root}/pytest-slurm/{SESSION}/{accounting}")
    hook.mkdir_p(c.base)

    # --time=1 is Slurm's minimum and its limit check is periodic: TIMEOUT arrives after ~60-90 s.
    wd = c.workdir("timeout")
    op = SlurmJobOperator(
        task_id="timeout",
        ssh_conn_id=CONN_ID,
        script=script("wait_release.sbatch"),
        workdir=wd,
        env={"WORKDIR": wd, "MAX_SECONDS": "400"},
        time_limit=1,
        poll_interval=2,
    )
    context = {"ti": fake_ti("timeout", c.run_id("timeout"))}
    with pytest.raises(TaskDeferred) as deferred:
        op.execute(context)
    c.started["timeout"] = (op, context, deferred.value)
    yield c
    hook.close()
