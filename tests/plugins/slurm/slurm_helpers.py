"""Helpers shared by the Slurm tests (drive an operator like worker + triggerer, switch accounting)."""

from __future__ import annotations

import asyncio
import importlib
import os
import subprocess
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[3]
STATE = Path(os.environ.get("REELFORGE_STATE_DIR", ROOT / ".local-stack"))
EXAMPLES = ROOT / "include" / "slurm" / "examples"
CONN_ID = "slurm_ssh"
SESSION = uuid.uuid4().hex[:8]


def current_accounting() -> str:
    path = STATE / "slurm-accounting"
    if path.exists():
        return path.read_text().strip() or "off"
    return os.environ.get("REELFORGE_SLURM_ACCOUNTING", "off")


def switch_accounting(mode: str) -> None:
    """`scripts/local-stack accounting on|off` (restarts slurmctld, ~4 s)."""
    subprocess.run(
        ["bash", str(ROOT / "scripts" / "local-stack"), "accounting", mode],
        check=True,
        capture_output=True,
        timeout=180,
    )
    os.environ["REELFORGE_SLURM_ACCOUNTING"] = mode


def script(name: str) -> str:
    """An example batch script's text (tests pass it inline; DAGs name the template file)."""
    return (EXAMPLES / name).read_text()


def fake_ti(task_id: str, run_id: str, try_number: int = 1) -> SimpleNamespace:
    """A task instance for driving an operator outside Airflow; what it pushes lands in ``.xcoms``."""
    xcoms: dict[str, Any] = {}
    return SimpleNamespace(dag_id="pytest_slurm", run_id=run_id, task_id=task_id, map_index=-1, try_number=try_number,
                           xcoms=xcoms, xcom_push=lambda key, value: xcoms.__setitem__(key, value))


async def first_event(trigger: Any, timeout: float) -> Any:
    agen = trigger.run()
    try:
        return await asyncio.wait_for(agen.__anext__(), timeout)
    finally:
        await agen.aclose()


def run_trigger(trigger: Any, timeout: float = 300) -> Any:
    """Rebuild the trigger from its serialized form (as the triggerer does) and get its event."""
    path, kwargs = trigger.serialize()
    module, _, name = path.rpartition(".")
    rebuilt = getattr(importlib.import_module(module), name)(**kwargs)
    return asyncio.run(first_event(rebuilt, timeout))


def resume(op: Any, context: dict, deferred: Any, timeout: float = 300) -> Any:
    """What the task runner does after the trigger fired."""
    event = run_trigger(deferred.trigger, timeout)
    return getattr(op, deferred.method_name)(context, **(deferred.kwargs or {}), event=event.payload)


def drive(op: Any, ti: Any, timeout: float = 300) -> Any:
    """Run an operator like a worker + triggerer would: execute, trigger, execute_complete."""
    from airflow.sdk.exceptions import TaskDeferred

    context = {"ti": ti}
    try:
        return op.execute(context)
    except TaskDeferred as deferred:
        return resume(op, context, deferred, timeout)


@dataclass
class Cluster:
    mode: str
    hook: Any
    base: str
    started: dict[str, Any] = field(default_factory=dict)

    def workdir(self, name: str) -> str:
        return f"{self.base}/{name}"

    def run_id(self, name: str) -> str:
        return f"manual__pytest-{SESSION}-{self.mode}-{name}"
