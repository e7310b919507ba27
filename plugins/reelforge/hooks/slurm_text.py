"""Pure Slurm text: job ids, array specs, job states and their parsers, the ``sbatch`` argv and the
environment block of a batch script. No I/O: every function here is tested on captured text alone.

Job states come from ``sacct -P -n`` (text: ``sacct --json`` in Slurm 22.05 reports exit code 0 for
failed tasks) when accounting is available, else from ``squeue -t all`` plus ``scontrol -o show job``,
which keep finished jobs only ``MinJobAge`` seconds.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from airflow.sdk.exceptions import AirflowException

#: States after which a Slurm job (array task) will not run again by itself.
TERMINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "TIMEOUT",
        "CANCELLED",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
        "REVOKED",
        "SPECIAL_EXIT",
    }
)
ACCOUNTING_MODES = ("auto", "sacct", "squeue")

_JOB_ID = re.compile(r"^\d+$")
_ARRAY_ITEM = re.compile(r"^(\d+)(?:-(\d+)(?::(\d+))?)?$")
# A job id in sacct/squeue output: 12, 12_3, 12_[3-5,7%2] (a pending, not yet split array range).
_JOBID_TOKEN = re.compile(r"^(\d+)(?:_(\d+|\[[0-9,\-:%]+\]))?$")
_MAX_ARRAY_TASKS = 1_000_000


class SlurmError(AirflowException):
    """Something went wrong talking to Slurm."""


class SlurmCommandError(SlurmError):
    """A remote command exited non-zero."""

    def __init__(self, argv: Sequence[str], rc: int, stdout: str, stderr: str) -> None:
        self.argv = list(argv)
        self.rc = rc
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(f"`{join_command(argv)}` exited {rc}: {(stderr or stdout).strip()[:2000]}")


class JobVanishedError(SlurmError):
    """The controller no longer knows the job and accounting has no record of it."""


class HostKeyPolicyError(SlurmError):
    """The connection does not verify the head node's host key, or the key is unknown."""


# ----------------------------------------------------------------------------- pure helpers


def join_command(argv: Iterable[Any]) -> str:
    """One remote command line: every element shell-quoted (the only way commands are built)."""
    return " ".join(shlex.quote(str(a)) for a in argv)


def check_job_id(job_id: str | int) -> str:
    """A Slurm job id is digits only (never a user string that could become an option)."""
    text = str(job_id).strip()
    if not _JOB_ID.match(text):
        raise ValueError(f"not a Slurm job id: {job_id!r}")
    return text


def split_throttle(spec: str) -> tuple[str, int | None]:
    """``'0-9%2'`` → ``('0-9', 2)``."""
    spec = str(spec).strip()
    if "%" in spec:
        body, _, limit = spec.partition("%")
        if not limit.isdigit() or int(limit) < 1:
            raise ValueError(f"bad array throttle in {spec!r}")
        return body, int(limit)
    return spec, None


def expand_array(spec: str) -> list[int]:
    """Indices of a Slurm ``--array`` spec (``0-9``, ``1,3,5-7``, ``0-15:4``, ``0-9%2``), sorted."""
    body, _ = split_throttle(spec)
    out: set[int] = set()
    if not body:
        raise ValueError("empty array spec")
    for item in body.split(","):
        m = _ARRAY_ITEM.match(item.strip())
        if not m:
            raise ValueError(f"bad array spec {spec!r}")
        start = int(m.group(1))
        end = int(m.group(2)) if m.group(2) is not None else start
        step = int(m.group(3)) if m.group(3) is not None else 1
        if end < start or step < 1:
            raise ValueError(f"bad array range {item!r} in {spec!r}")
        if (end - start) // step + 1 + len(out) > _MAX_ARRAY_TASKS:
            raise ValueError(f"array spec {spec!r} is too large")
        out.update(range(start, end + 1, step))
    return sorted(out)


def compress_indices(indices: Iterable[int]) -> str:
    """``[0, 1, 2, 5, 7, 8]`` → ``'0-2,5,7-8'`` (a valid ``--array`` spec)."""
    values = sorted(set(int(i) for i in indices))
    if not values:
        raise ValueError("no indices")
    parts: list[str] = []
    start = prev = values[0]
    for v in values[1:]:
        if v == prev + 1:
            prev = v
            continue
        parts.append(f"{start}-{prev}" if prev > start else str(start))
        start = prev = v
    parts.append(f"{start}-{prev}" if prev > start else str(start))
    return ",".join(parts)


def expected_indices(array: str | None) -> list[int]:
    """The task indices a submission covers; a plain (non-array) job is index 0."""
    return expand_array(array) if array else [0]


def normalize_state(raw: str) -> str:
    """``'CANCELLED by 1001'`` → ``'CANCELLED'``; ``'FAILED+'`` → ``'FAILED'``."""
    words = raw.strip().split()
    return words[0].rstrip("+").upper() if words else "UNKNOWN"


def _reason(raw: str | None) -> str | None:
    text = (raw or "").strip()
    return None if text in ("", "None", "(null)") else text


def parse_exit_code(raw: str | None) -> tuple[int | None, int | None]:
    """Slurm's ``'3:0'`` (exit code : signal) → ``(3, 0)``; anything else → ``(None, None)``."""
    if not raw:
        return None, None
    code, _, sig = raw.strip().partition(":")
    try:
        return int(code), (int(sig) if sig else None)
    except ValueError:
        return None, None


@dataclass(frozen=True)
class TaskState:
    """The state of one array task (or of a plain job, reported as index 0)."""

    state: str
    exit_code: int | None = None
    signal: int | None = None
    reason: str | None = None

    @property
    def terminal(self) -> bool:
        return self.state in TERMINAL_STATES

    @property
    def ok(self) -> bool:
        return self.state == "COMPLETED"

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "exit_code": self.exit_code, "signal": self.signal, "reason": self.reason}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TaskState:
        return cls(
            state=str(data.get("state") or "UNKNOWN"),
            exit_code=data.get("exit_code"),
            signal=data.get("signal"),
            reason=data.get("reason"),
        )

    def describe(self) -> str:
        text = self.state
        if self.exit_code is not None:
            text += f" exit={self.exit_code}"
        if self.signal:
            text += f" signal={self.signal}"
        if self.reason:
            text += f" reason={self.reason}"
        return text


def _indices_of(token: str, job_id: str, is_array: bool) -> list[int] | None:
    """Which indices of ``job_id`` a job-id token names; ``None`` if it is not about them.

    For an array job only ``J_i`` / ``J_[range]`` count: right after the last task ends, sacct can
    still show a bare ``J`` row, which says nothing about the individual tasks.
    """
    m = _JOBID_TOKEN.match(token.strip())
    if not m or m.group(1) != job_id:
        return None
    suffix = m.group(2)
    if not is_array:
        return [0] if suffix is None else None
    if suffix is None:
        return None
    if suffix.startswith("["):
        try:
            return expand_array(suffix[1:-1])
        except ValueError:
            return None
    return [int(suffix)]


def parse_sacct(text: str, job_id: str | int, is_array: bool) -> dict[int, TaskState]:
    """Parse ``sacct -n -P -X --format=JobID,State,ExitCode,Reason`` output for one job."""
    job_id = check_job_id(job_id)
    states: dict[int, TaskState] = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 3:
            continue
        indices = _indices_of(fields[0], job_id, is_array)
        if indices is None:
            continue
        code, sig = parse_exit_code(fields[2])
        state = normalize_state(fields[1])
        # sacct's Reason of a finished task is its last *pending* reason (e.g. JobArrayTaskLimit): noise.
        reason = _reason(fields[3]) if len(fields) > 3 and state not in TERMINAL_STATES else None
        task = TaskState(state, code, sig, reason)
        for i in indices:
            states[i] = task
    return states


def parse_squeue(text: str, job_id: str | int, is_array: bool) -> dict[int, TaskState]:
    """Parse ``squeue -h -r -t all -j J -o '%i|%T|%r'`` output (no exit codes in squeue)."""
    job_id = check_job_id(job_id)
    states: dict[int, TaskState] = {}
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < 2:
            continue
        indices = _indices_of(fields[0], job_id, is_array)
        if indices is None:
            continue
        reason = _reason(fields[2]) if len(fields) > 2 else None
        for i in indices:
            states[i] = TaskState(normalize_state(fields[1]), None, None, reason)
    return states


_SCONTROL_FIELD = re.compile(r"(?:^|\s)(JobId|ArrayJobId|ArrayTaskId|JobState|Reason|ExitCode)=(\S*)")


def parse_scontrol(text: str, job_id: str | int, is_array: bool) -> dict[int, TaskState]:
    """Parse ``scontrol -o show job J`` (one record per array task; pending ranges are skipped).

    Records are split at ``JobId=`` at a line start and only the first occurrence of each field is
    used, so values that come later on the line (paths with spaces or newlines) cannot confuse it.
    """
    job_id = check_job_id(job_id)
    states: dict[int, TaskState] = {}
    for record in re.split(r"(?m)^(?=JobId=)", text):
        fields: dict[str, str] = {}
        for m in _SCONTROL_FIELD.finditer(record):
            fields.setdefault(m.group(1), m.group(2))
        if "JobId" not in fields or "JobState" not in fields:
            continue
        if is_array:
            task_id = fields.get("ArrayTaskId", "")
            if fields.get("ArrayJobId") != job_id or not task_id.isdigit():
                continue
            index = int(task_id)
        else:
            if fields["JobId"] != job_id or "ArrayTaskId" in fields:
                continue
            index = 0
        code, sig = parse_exit_code(fields.get("ExitCode"))
        states[index] = TaskState(normalize_state(fields["JobState"]), code, sig, _reason(fields.get("Reason")))
    return states


def parse_squeue_jobs(text: str) -> dict[str, dict[int, str]]:
    """``squeue -h -r -o '%F|%i|%T'`` → ``{job_id: {index: state}}``."""
    jobs: dict[str, dict[int, str]] = {}
    for line in text.splitlines():
        fields = line.strip().split("|")
        if len(fields) < 3 or not fields[0].isdigit():
            continue
        for i in _indices_of(fields[1], fields[0], "_" in fields[1]) or []:
            jobs.setdefault(fields[0], {})[i] = normalize_state(fields[2])
    return jobs
