"""Progress of a Slurm array as a user reads it in the task log: done of total, percent and an ETA.

Airflow 3.3.2's task SDK cannot set a task instance note or any other run-page field from a running
task or a trigger (the execution API has no such call), so progress goes into the task log. The
triggerer's lines appear there too (the UI shows the trigger's log under the task's try).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


def format_duration(seconds: float) -> str:
    """``3725`` → ``1h02m05s``; ``65`` → ``1m05s``; ``7`` → ``7s``."""
    total = max(int(round(seconds)), 0)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m{secs:02d}s"
    if minutes:
        return f"{minutes}m{secs:02d}s"
    return f"{secs}s"


@dataclass
class ArrayProgress:
    """Tracks ``done`` of ``total`` over time and words one line each time the picture changes.

    The ETA is the rate seen since the first observation (``done`` may start above 0 when a retry
    re-attaches to a half-finished array): ``remaining / ((done - done_at_start) / elapsed)``. It is
    ``unknown`` until at least one task finished while we watched.
    """

    total: int
    label: str = "tasks"
    clock: Callable[[], float] = time.monotonic
    _start: float | None = field(default=None, init=False)
    _done_at_start: int = field(default=0, init=False)
    _last: tuple[int, str] | None = field(default=None, init=False)

    def eta_seconds(self, done: int, now: float | None = None) -> float | None:
        """Seconds until every task is done at the rate seen so far; ``None`` when unknown."""
        if self._start is None:
            return None
        now = self.clock() if now is None else now
        finished_here = done - self._done_at_start
        elapsed = now - self._start
        if done >= self.total:
            return 0.0
        if finished_here <= 0 or elapsed <= 0:
            return None
        return (self.total - done) * elapsed / finished_here

    def line(self, done: int, counts: Mapping[str, int] | None = None) -> str:
        """``"3 of 10 tasks done (30%), ETA 1m40s; 2 RUNNING, 5 PENDING, 3 COMPLETED"``."""
        now = self.clock()
        if self._start is None:
            self._start, self._done_at_start = now, done
        percent = 100 * done // self.total if self.total else 100
        eta = self.eta_seconds(done, now)
        text = f"{done} of {self.total} {self.label} done ({percent}%)"
        if done < self.total:
            text += f", ETA {format_duration(eta)}" if eta is not None else ", ETA unknown"
        if counts:
            text += "; " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items()))
        return text

    def update(self, done: int, counts: Mapping[str, int] | None = None) -> str | None:
        """The progress line when ``done`` or the state counts changed since the last call, else ``None``."""
        summary = ", ".join(f"{n} {s}" for s, n in sorted((counts or {}).items()))
        text = self.line(done, counts)
        if self._last == (done, summary):
            return None
        self._last = (done, summary)
        return text
