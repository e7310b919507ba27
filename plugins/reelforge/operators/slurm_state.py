"""Bookkeeping of :class:`~reelforge.operators.slurm.SlurmJobOperator`: job names, the state file, polling
from the task, the outcome.

Every submission of a task instance's job is recorded in ``<workdir>/.slurm/<job name>.json`` (over SFTP),
so that a retry re-attaches to a running job or resubmits only the indices that did not complete.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

from airflow.sdk.exceptions import AirflowException, AirflowFailException

from reelforge.hooks.sbatch import inject_env
from reelforge.hooks.slurm_text import JobVanishedError, SlurmError, TaskState, expected_indices, split_throttle
from reelforge.progress import ArrayProgress

STATE_VERSION = 1
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


class SlurmJobFailedError(AirflowException):
    """Some array tasks (or the job) ended in a state other than COMPLETED."""


class SlurmJobPermanentError(SlurmJobFailedError, AirflowFailException):
    """Every failed task logged :data:`PERMANENT_FAILURE_MARKER`: fail without retries (issue 10)."""


#: A job script (e.g. ``reelforge-sr plan`` on an unusable source) prints a line starting with this
#: when retrying cannot help; the reason after it goes into the task's error (and so into SNS).
PERMANENT_FAILURE_MARKER = "reelforge: permanent failure: "


def permanent_reason(log_text: str) -> str | None:
    lines = [ln.strip() for ln in log_text.splitlines() if ln.strip().startswith(PERMANENT_FAILURE_MARKER)]
    return lines[-1][len(PERMANENT_FAILURE_MARKER):] if lines else None


def slurm_job_name(dag_id: str, run_id: str, task_id: str, map_index: int = -1, prefix: str | None = None) -> str:
    """Deterministic, Slurm-safe job name for one task instance: ``<prefix>-<10 hex>``.

    The hash covers dag_id, run_id, task_id and map_index, so every try of the same task instance
    gets the same name (that is how a retry finds its job) and no two task instances share one.
    ``prefix`` (the operator's ``job_name``, else the task id) is only for people reading squeue;
    characters outside ``[A-Za-z0-9_.-]`` become ``_``.
    """
    digest = hashlib.sha256(f"{dag_id}\0{run_id}\0{task_id}\0{map_index}".encode()).hexdigest()[:10]
    base = _UNSAFE_NAME.sub("_", prefix or task_id).strip("._-")[:48] or "job"
    return f"{base}-{digest}"


def log_path(run: Mapping[str, Any], job_id: str, index: int) -> str:
    """Where Slurm writes one task's output (``--output`` of the submission)."""
    if run["array"] is None:
        return posixpath.join(run["log_dir"], f"{run['name']}_{job_id}.out")
    return posixpath.join(run["log_dir"], f"{run['name']}_{job_id}_{index}.out")


def load_state(hook: Any, run: Mapping[str, Any], log: Any) -> dict[str, Any]:
    """The task's state file (``<workdir>/.slurm/<job name>.json``), or a fresh one."""
    fresh = {
        "version": STATE_VERSION,
        "job_name": run["name"],
        "array": run["array"],
        "attempts": [],
        "tasks": {},
    }
    try:
        state = hook.read_json(run["state_path"])
    except FileNotFoundError:
        return fresh
    except ValueError:
        log.warning("Ignoring unreadable job state file %s", run["state_path"])
        return fresh
    if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
        return fresh
    if state.get("array") != run["array"]:
        log.warning(
            "The array changed since the earlier tries (%s → %s): starting over", state.get("array"), run["array"]
        )
        return fresh
    return state

def save_state(hook: Any, run: Mapping[str, Any], state: dict[str, Any]) -> None:
    hook.put_text(run["state_path"], json.dumps(state, indent=1, sort_keys=True) + "\n", mode=0o600)

def find_attempt(state: dict[str, Any], job_id: str) -> dict[str, Any] | None:
    return next((a for a in state["attempts"] if a["job_id"] == job_id), None)

def record_states(state: dict[str, Any], attempt: dict[str, Any], states: Mapping[int, TaskState]) -> None:
    for i in expected_indices(attempt.get("array")):
        s = states.get(i)
        if s is not None and s.terminal:
            state["tasks"][str(i)] = {**s.to_dict(), "job_id": attempt["job_id"]}
    attempt["finished"] = True


def report(hook: Any, run: Mapping[str, Any], state: Mapping[str, Any], log: Any, *, tail_lines: int,
           max_logged: int) -> dict[str, Any]:
    """The operator's result when every task COMPLETED; else the failed tasks' log tails and the error."""
    unknown = {"state": "UNKNOWN", "exit_code": None, "signal": None, "reason": None, "job_id": None}
    tasks = {str(i): state["tasks"].get(str(i), unknown) for i in run["indices"]}
    failed = [i for i in run["indices"] if tasks[str(i)]["state"] != "COMPLETED"]
    result = {
        "job_id": state["attempts"][-1]["job_id"] if state["attempts"] else None,
        "job_ids": [a["job_id"] for a in state["attempts"]],
        "job_name": run["name"],
        "array": run["array"],
        "workdir": run["workdir"],
        "log_dir": run["log_dir"],
        "tasks": tasks,
    }
    if not failed:
        log.info("Slurm job %s: all %d tasks COMPLETED", run["name"], len(run["indices"]))
        return result
    lines = []
    for i in failed:
        t = tasks[str(i)]
        lines.append(f"index {i}: {TaskState.from_dict(t).describe()} (job {t.get('job_id')})")
    permanent: dict[int, str] = {}
    for i in failed[: max_logged]:
        t = tasks[str(i)]
        if not t.get("job_id"):
            continue
        path = log_path(run, t["job_id"], i)
        try:
            text = hook.tail(path, tail_lines)
        except Exception as err:
            text = f"(log not readable: {err})"
        if reason := permanent_reason(text):
            permanent[i] = reason
            lines[failed.index(i)] += f": {reason}"
        log.error(
            "Slurm task %s failed: %s; last %d lines of %s:\n%s",
            i,
            TaskState.from_dict(t).describe(),
            tail_lines,
            path,
            text.rstrip(),
        )
    shown = "; ".join(lines[:20]) + (f"; … {len(lines) - 20} more" if len(lines) > 20 else "")
    if len(permanent) == len(failed):
        raise SlurmJobPermanentError(
            f"Slurm job {run['name']}: {len(failed)} of {len(run['indices'])} tasks failed permanently "
            f"(not retried): {shown}"
        )
    raise SlurmJobFailedError(
        f"Slurm job {run['name']}: {len(failed)} of {len(run['indices'])} tasks failed: {shown}. "
        "A retry resubmits only these indices."
    )


def poll_job(
    hook: Any, job_id: str, sub_array: str | None, interval: float, deadline: float | None, log: Any
) -> dict[int, TaskState] | None:
    """Poll from the task until every task of the job is terminal (its states) or ``deadline`` (None)."""
    expected = expected_indices(sub_array)
    progress = ArrayProgress(len(expected))
    errors = 0
    while True:
        try:
            states = hook.job_states(job_id, sub_array)
            errors = 0
        except JobVanishedError:
            raise
        except (SlurmError, OSError, EOFError) as err:
            errors += 1
            if errors >= 10:
                raise
            log.warning("Polling Slurm job %s failed (%s); retrying", job_id, err)
            hook.close()
            time.sleep(interval)
            continue
        done = sum(1 for i in expected if i in states and states[i].terminal)
        counts = Counter(states[i].state if i in states else "UNKNOWN" for i in expected)
        if (line := progress.update(done, counts)) is not None:
            log.info("Slurm job %s: %s", job_id, line)
        if done == len(expected):
            return states
        if deadline is not None and time.monotonic() + interval > deadline:
            return None
        time.sleep(interval)


def job_layout(ti: Any, workdir_arg: Any, array: Any, array_throttle: Any, job_name: Any) -> dict[str, Any]:
    """Names and paths of a task instance's job (the same for every try)."""
    workdir = str(workdir_arg or "").rstrip("/")
    if not workdir.startswith("/"):
        raise ValueError(f"workdir must be an absolute path on the cluster, not {workdir_arg!r}")
    if "\\" in workdir:  # a backslash turns off Slurm's %x/%A/%a expansion in --output
        raise ValueError(f"workdir must not contain a backslash: {workdir_arg!r}")
    name = slurm_job_name(
        ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", -1), str(job_name or "") or None
    )
    body, inline_throttle = split_throttle(str(array)) if array not in (None, "") else (None, None)
    throttle = array_throttle if array_throttle not in (None, "", 0) else inline_throttle
    slurm_dir = posixpath.join(workdir, ".slurm")
    return {
        "name": name,
        "workdir": workdir,
        "array": body,
        "throttle": int(throttle) if throttle else None,
        "indices": expected_indices(body),
        "try_number": int(getattr(ti, "try_number", 1) or 1),
        "slurm_dir": slurm_dir,
        "script_path": posixpath.join(slurm_dir, f"{name}.sbatch"),
        "state_path": posixpath.join(slurm_dir, f"{name}.json"),
        "log_dir": posixpath.join(workdir, "logs"),
    }


def script_text(script_arg: Any, env: Mapping[str, Any] | None, template_ext: Sequence[str]) -> str:
    """The rendered batch script with ``env`` exported after its ``#SBATCH`` header."""
    script = str(script_arg or "")
    if not script.startswith("#!"):
        if "\n" not in script and script.endswith(tuple(template_ext)):
            raise AirflowException(
                f"script {script!r} was not found as a template: put it under the DAG's "
                "template_searchpath (the repo's include/ dir) or pass the script text"
            )
        raise AirflowException("the batch script must start with a '#!' line")
    return inject_env(script, env)
