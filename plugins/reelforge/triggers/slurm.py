"""Wait in the triggerer for a Slurm job (every task of an array) to reach a terminal state."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from reelforge.hooks.slurm import SlurmAsyncHook
from reelforge.hooks.slurm_text import JobVanishedError, SlurmError, TaskState, check_job_id, expected_indices
from reelforge.progress import ArrayProgress

#: Errors worth another poll (network blips, a restarting slurmctld); anything else fails at once.
_TRANSIENT = (SlurmError, OSError, EOFError, TimeoutError)


class SlurmJobTrigger(BaseTrigger):
    """Poll a Slurm job until every expected array task is terminal, then fire once.

    The event payload (JSON-safe)::

        {"status": "done", "job_id": "123", "array": "0-9" | None,
         "tasks": {"0": {"state": "COMPLETED", "exit_code": 0, "signal": 0, "reason": None}, ...}}
        {"status": "error", "job_id": "123", "array": ..., "message": "..."}

    ``done`` means every task ended (successfully or not); the operator decides. ``error`` means the
    state could not be determined: the job vanished from the controller with no accounting record
    (older than ``MinJobAge``), or too many consecutive polls failed.

    With accounting, sacct lags squeue by seconds for arrays and can list a bare ``J`` row or a
    pending ``J_[2-5]`` range after tasks have ended: the trigger waits until all N ``J_i`` rows are
    terminal.

    :param ssh_conn_id: the head node's SSH connection.
    :param job_id: the Slurm job id.
    :param array: the ``--array`` spec the job was submitted with (``None`` for a plain job).
    :param job_name: for log messages only.
    :param poll_interval: seconds between polls.
    :param accounting: ``auto``/``sacct``/``squeue`` (see :class:`~reelforge.hooks.slurm.SlurmHook`).
    :param max_poll_errors: consecutive failed polls tolerated before an ``error`` event.
    :param first_poll_delay: seconds before the first poll. Airflow 3.3 can resume a deferred task
        before its executor has reported the deferring attempt's exit; the scheduler then takes that
        report for a task that died and fails the resumed attempt into a retry. The deferring
        process's supervisor notices the exit within ``[workers] min_heartbeat_interval`` (5 s), so a
        job that ends within seconds must not fire the trigger sooner than that.
    """

    def __init__(
        self,
        *,
        ssh_conn_id: str,
        job_id: str,
        array: str | None = None,
        job_name: str | None = None,
        poll_interval: float = 15.0,
        accounting: str = "auto",
        max_poll_errors: int = 10,
        first_poll_delay: float = 10.0,
    ) -> None:
        super().__init__()
        self.ssh_conn_id = ssh_conn_id
        self.job_id = check_job_id(job_id)
        self.array = array or None
        self.job_name = job_name
        self.poll_interval = float(poll_interval)
        self.accounting = accounting
        self.max_poll_errors = int(max_poll_errors)
        self.first_poll_delay = float(first_poll_delay)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "reelforge.triggers.slurm.SlurmJobTrigger",
            {
                "ssh_conn_id": self.ssh_conn_id,
                "job_id": self.job_id,
                "array": self.array,
                "job_name": self.job_name,
                "poll_interval": self.poll_interval,
                "accounting": self.accounting,
                "max_poll_errors": self.max_poll_errors,
                "first_poll_delay": self.first_poll_delay,
            },
        )

    def _hook(self) -> SlurmAsyncHook:
        return SlurmAsyncHook(self.ssh_conn_id, accounting=self.accounting)

    def _event(self, status: str, **payload: Any) -> TriggerEvent:
        return TriggerEvent({"status": status, "job_id": self.job_id, "array": self.array, **payload})

    async def run(self) -> AsyncIterator[TriggerEvent]:
        expected = expected_indices(self.array)
        total = len(expected)
        label = f"Slurm job {self.job_id}" + (f" ({self.job_name})" if self.job_name else "")
        hook = self._hook()
        errors = 0
        progress = ArrayProgress(total)
        await asyncio.sleep(self.first_poll_delay)
        try:
            while True:
                try:
                    states = await hook.job_states(self.job_id, self.array)
                    errors = 0
                except JobVanishedError as err:
                    self.log.error("%s: %s", label, err)
                    yield self._event("error", message=str(err))
                    return
                except _TRANSIENT as err:
                    errors += 1
                    self.log.warning("%s: poll %d failed: %s", label, errors, err)
                    if errors >= self.max_poll_errors:
                        yield self._event(
                            "error", message=f"{label}: {errors} consecutive polls failed; last error: {err}"
                        )
                        return
                    await hook.reset()
                    await asyncio.sleep(self.poll_interval)
                    continue
                done = [i for i in expected if i in states and states[i].terminal]
                counts = Counter(states[i].state if i in states else "UNKNOWN" for i in expected)
                if (line := progress.update(len(done), counts)) is not None:
                    self.log.info("%s: %s", label, line)
                if len(done) == total:
                    yield self._event("done", tasks={str(i): states[i].to_dict() for i in expected})
                    return
                await asyncio.sleep(self.poll_interval)
        finally:
            await hook.close()

    async def on_kill(self) -> None:
        """The user marked the deferred task failed/success or cleared it: cancel the Slurm job."""
        hook = self._hook()
        try:
            self.log.info("Cancelling Slurm job %s", self.job_id)
            await hook.cancel(self.job_id)
        finally:
            await hook.close()


def tasks_from_event(event: dict[str, Any]) -> dict[int, TaskState]:
    """The per-index states of a ``done`` event."""
    return {int(k): TaskState.from_dict(v) for k, v in (event.get("tasks") or {}).items()}
