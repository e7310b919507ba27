"""Run a batch script (optionally a job array) on the Slurm cluster and wait for it."""

from __future__ import annotations

import hashlib
import json
import posixpath
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from reelforge.hooks.slurm import (
    TERMINAL_STATES,
    JobVanishedError,
    SlurmError,
    SlurmHook,
    TaskState,
    compress_indices,
    expected_indices,
    inject_env,
    slurm_filename_literal,
    split_throttle,
)
from reelforge.settings import SLURM_CONN_ID
from reelforge.triggers.slurm import SlurmJobTrigger, tasks_from_event

STATE_VERSION = 1
_UNSAFE_NAME = re.compile(r"[^A-Za-z0-9_.-]+")


class SlurmJobFailedError(AirflowException):
    """Some array tasks (or the job) ended in a state other than COMPLETED."""


class SlurmJobPermanentError(SlurmJobFailedError, AirflowFailException):
    """Every failed task logged :data:`PERMANENT_FAILURE_MARKER`: fail without retries (issue 10)."""


#: A job script (e.g. ``reelforge-sr plan`` on an unusable source) prints a line starting with this
#: when retrying cannot help; the reason after it goes into the task's error (and so into SNS).
PERMANENT_FAILURE_MARKER = "reelforge: permanent failure: "


def _permanent_reason(log_text: str) -> str | None:
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


class SlurmJobOperator(BaseOperator):
    """Submit a batch script to Slurm over SSH, wait (deferred) and fail with the failed tasks' logs.

    The script (a ``.sbatch``/``.sh`` file found through the DAG's ``template_searchpath``, or inline
    text starting with ``#!``) is rendered with Jinja, ``env`` is written into it as ``export
    K='value'`` lines right after the ``#SBATCH`` header, and the result is uploaded by SFTP to
    ``<workdir>/.slurm/<job name>.sbatch`` and submitted with ``sbatch --parsable``; task logs go to
    ``<workdir>/logs/<job name>_<job id>_<index>.out``. Every value reaches the cluster quoted.

    **Retries.** The job name is derived from dag_id/run_id/task_id/map_index (see
    :func:`slurm_job_name`) and every submission is recorded in ``<workdir>/.slurm/<job name>.json``
    (written over SFTP, so it works without Slurm accounting). A new try first looks for a job of
    that name still pending/running and re-attaches to it instead of submitting twice; otherwise it
    settles the earlier jobs' final states and resubmits only the indices that did not complete.
    If every index already completed (e.g. the worker died after the job finished), it returns
    without submitting.

    :param script: template file name (``slurm/sr/01-plan.sbatch``) or the script text.
    :param workdir: absolute job directory on shared storage (``--chdir``; logs and state live here).
    :param ssh_conn_id: SSH connection to the head node.
    :param script_args: arguments after the script path.
    :param env: variables exported to the script (values may contain anything but NUL).
    :param array: ``--array`` spec (``0-9``, ``1,3,5-7``); ``None`` for a plain job.
    :param array_throttle: at most this many array tasks at once (``%N``).
    :param job_name: readable prefix of the Slurm job name (default: the task id).
    :param partition: ``--partition``.
    :param time_limit: ``--time`` (minutes as an int, or Slurm's ``[D-]HH:MM:SS`` forms).
    :param gres: ``--gres`` (e.g. ``gpu:1``).
    :param cpus_per_task: ``--cpus-per-task``.
    :param mem: ``--mem`` (e.g. ``4G``).
    :param dependency: ``--dependency`` (e.g. ``afterok:123``).
    :param extra_args: more sbatch options (each must start with ``-``), e.g. ``["--nice=100"]``.
    :param accounting: ``auto``/``sacct``/``squeue``: where job states come from.
    :param poll_interval: seconds between state polls (triggerer or in-process).
    :param first_poll_delay: seconds the trigger waits before its first poll (see
        :class:`~reelforge.triggers.slurm.SlurmJobTrigger`: a job that ends at once must not resume the
        task before Airflow has recorded the deferral).
    :param wait_before_defer: seconds to watch the job from the task (every 2 s) before deferring: a
        short job (plan, assemble) then ends the task without the triggerer's round trip and
        ``first_poll_delay``; a longer one defers as usual. 0 defers at once.
    :param log_tail_lines: lines of each failed task's log copied into the Airflow log.
    :param max_logged_failures: failed tasks whose log tails are copied (the rest are only listed).
    :param deferrable: wait in the triggerer (default) instead of polling in the worker.

    Returns (XCom) ``{"job_id", "job_ids", "job_name", "array", "workdir", "log_dir", "tasks"}``
    where ``tasks`` maps each index (as a string; a plain job is ``"0"``) to
    ``{"state", "exit_code", "signal", "reason", "job_id"}``.
    """

    template_fields: Sequence[str] = (
        "script",
        "script_args",
        "env",
        "workdir",
        "array",
        "array_throttle",
        "job_name",
        "partition",
        "time_limit",
        "gres",
        "cpus_per_task",
        "mem",
        "dependency",
        "extra_args",
    )
    template_ext: Sequence[str] = (".sbatch", ".sh")
    template_fields_renderers = {"script": "bash", "env": "json", "extra_args": "json"}
    ui_color = "#dde8f4"

    def __init__(
        self,
        *,
        script: str,
        workdir: str,
        ssh_conn_id: str = SLURM_CONN_ID,
        script_args: Sequence[str] | None = None,
        env: Mapping[str, Any] | None = None,
        array: str | None = None,
        array_throttle: int | None = None,
        job_name: str | None = None,
        partition: str | None = None,
        time_limit: str | int | None = None,
        gres: str | None = None,
        cpus_per_task: int | None = None,
        mem: str | None = None,
        dependency: str | None = None,
        extra_args: Sequence[str] | None = None,
        accounting: str = "auto",
        poll_interval: float = 15.0,
        first_poll_delay: float = 10.0,
        wait_before_defer: float = 0.0,
        log_tail_lines: int = 40,
        max_logged_failures: int = 5,
        deferrable: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.script = script
        self.workdir = workdir
        self.ssh_conn_id = ssh_conn_id
        self.script_args = script_args
        self.env = env
        self.array = array
        self.array_throttle = array_throttle
        self.job_name = job_name
        self.partition = partition
        self.time_limit = time_limit
        self.gres = gres
        self.cpus_per_task = cpus_per_task
        self.mem = mem
        self.dependency = dependency
        self.extra_args = extra_args
        self.accounting = accounting
        self.poll_interval = poll_interval
        self.first_poll_delay = first_poll_delay
        self.wait_before_defer = wait_before_defer
        self.log_tail_lines = log_tail_lines
        self.max_logged_failures = max_logged_failures
        self.deferrable = deferrable
        self._job_id: str | None = None

    # -- helpers --------------------------------------------------------------------------------

    @cached_property
    def hook(self) -> SlurmHook:
        return SlurmHook(self.ssh_conn_id, accounting=self.accounting)

    def _run(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """Names and paths of this task instance's job (the same for every try)."""
        ti = context["ti"]
        workdir = str(self.workdir or "").rstrip("/")
        if not workdir.startswith("/"):
            raise ValueError(f"workdir must be an absolute path on the cluster, not {self.workdir!r}")
        if "\\" in workdir:  # a backslash turns off Slurm's %x/%A/%a expansion in --output
            raise ValueError(f"workdir must not contain a backslash: {self.workdir!r}")
        name = slurm_job_name(
            ti.dag_id, ti.run_id, ti.task_id, getattr(ti, "map_index", -1), str(self.job_name or "") or None
        )
        body, inline_throttle = split_throttle(str(self.array)) if self.array not in (None, "") else (None, None)
        throttle = self.array_throttle if self.array_throttle not in (None, "", 0) else inline_throttle
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

    @staticmethod
    def log_path(run: Mapping[str, Any], job_id: str, index: int) -> str:
        if run["array"] is None:
            return posixpath.join(run["log_dir"], f"{run['name']}_{job_id}.out")
        return posixpath.join(run["log_dir"], f"{run['name']}_{job_id}_{index}.out")

    def _load_state(self, hook: SlurmHook, run: Mapping[str, Any]) -> dict[str, Any]:
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
            self.log.warning("Ignoring unreadable job state file %s", run["state_path"])
            return fresh
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            return fresh
        if state.get("array") != run["array"]:
            self.log.warning(
                "The array changed since the earlier tries (%s → %s): starting over", state.get("array"), run["array"]
            )
            return fresh
        return state

    @staticmethod
    def _save_state(hook: SlurmHook, run: Mapping[str, Any], state: dict[str, Any]) -> None:
        hook.put_text(run["state_path"], json.dumps(state, indent=1, sort_keys=True) + "\n", mode=0o600)

    @staticmethod
    def _attempt(state: dict[str, Any], job_id: str) -> dict[str, Any] | None:
        return next((a for a in state["attempts"] if a["job_id"] == job_id), None)

    @staticmethod
    def _record(state: dict[str, Any], attempt: dict[str, Any], states: Mapping[int, TaskState]) -> None:
        for i in expected_indices(attempt.get("array")):
            s = states.get(i)
            if s is not None and s.terminal:
                state["tasks"][str(i)] = {**s.to_dict(), "job_id": attempt["job_id"]}
        attempt["finished"] = True

    # -- execution ------------------------------------------------------------------------------

    def execute(self, context: Any) -> dict[str, Any]:
        run = self._run(context)
        hook = self.hook
        try:
            return self._start(context, hook, run)
        finally:
            hook.close()

    def _start(self, context: Any, hook: SlurmHook, run: dict[str, Any]) -> dict[str, Any]:
        state = self._load_state(hook, run)
        changed = False

        # 1. Jobs of this name the controller still knows (also those submitted just before a crash
        #    that kept the state file from being written). One still pending/running: re-attach.
        found = hook.find_jobs(run["name"])
        for job_id in sorted(found, key=int):
            if self._attempt(state, job_id) is None:
                sub = compress_indices(found[job_id]) if run["array"] is not None else None
                state["attempts"].append({"job_id": job_id, "array": sub, "discovered": True})
                changed = True
        active = [j for j in found if any(s not in TERMINAL_STATES for s in found[j].values())]
        if active:
            job_id = max(active, key=int)
            if changed:
                self._save_state(hook, run, state)
            attempt = self._attempt(state, job_id)
            self.log.info(
                "Re-attaching to Slurm job %s (%s, array %s), submitted by an earlier try and still "
                "active: not submitting again",
                job_id,
                run["name"],
                attempt.get("array"),
            )
            self._job_id = job_id
            return self._wait(context, hook, run, job_id, attempt.get("array"))

        # 2. Settle earlier jobs whose outcome was never recorded (the worker died while waiting).
        for attempt in state["attempts"]:
            if attempt.get("finished"):
                continue
            try:
                states = hook.job_states(attempt["job_id"], attempt.get("array"))
            except JobVanishedError as err:
                self.log.warning("Outcome of earlier job %s unknown (%s): its tasks run again", attempt["job_id"], err)
                attempt["finished"] = True
                changed = True
                continue
            wanted = expected_indices(attempt.get("array"))
            if all(i in states and states[i].terminal for i in wanted):
                self._record(state, attempt, states)
                changed = True
            else:  # accounting still says running while the controller is done: wait for it
                if changed:
                    self._save_state(hook, run, state)
                self.log.info("Earlier Slurm job %s has not finished yet: waiting for it", attempt["job_id"])
                self._job_id = attempt["job_id"]
                return self._wait(context, hook, run, attempt["job_id"], attempt.get("array"))
        if changed:
            self._save_state(hook, run, state)

        # 3. Submit what did not complete.
        completed = {int(i) for i, t in state["tasks"].items() if t.get("state") == "COMPLETED"}
        todo = [i for i in run["indices"] if i not in completed]
        if not todo:
            self.log.info(
                "All %d tasks already COMPLETED by earlier job(s) %s: not submitting again",
                len(run["indices"]),
                ", ".join(a["job_id"] for a in state["attempts"]),
            )
            return self._result(hook, run, state)
        sub_array = compress_indices(todo) if run["array"] is not None else None
        if completed:
            self.log.info(
                "Try %d: %d of %d tasks already COMPLETED; resubmitting only indices %s",
                run["try_number"],
                len(run["indices"]) - len(todo),
                len(run["indices"]),
                sub_array,
            )
        job_id = self._submit(hook, run, sub_array)
        state["attempts"].append(
            {
                "job_id": job_id,
                "array": sub_array,
                "try_number": run["try_number"],
                "submitted_at": datetime.now(UTC).isoformat(timespec="seconds"),
            }
        )
        self._save_state(hook, run, state)
        self._job_id = job_id
        return self._wait(context, hook, run, job_id, sub_array)

    def _script_text(self) -> str:
        script = str(self.script or "")
        if not script.startswith("#!"):
            if "\n" not in script and script.endswith(tuple(self.template_ext)):
                raise AirflowException(
                    f"script {script!r} was not found as a template: put it under the DAG's "
                    "template_searchpath (the repo's include/ dir) or pass the script text"
                )
            raise AirflowException("the batch script must start with a '#!' line")
        return inject_env(script, self.env)

    def _submit(self, hook: SlurmHook, run: Mapping[str, Any], sub_array: str | None) -> str:
        script = self._script_text()
        hook.mkdir_p(run["slurm_dir"], 0o700)
        hook.mkdir_p(run["log_dir"])
        hook.put_text(run["script_path"], script, mode=0o700)
        pattern = "%x_%A_%a.out" if sub_array is not None else "%x_%j.out"
        job_id = hook.submit(
            run["script_path"],
            job_name=run["name"],
            array=sub_array,
            throttle=run["throttle"],
            partition=self.partition or None,
            time_limit=self.time_limit,
            gres=self.gres or None,
            cpus_per_task=self.cpus_per_task,
            mem=self.mem or None,
            dependency=self.dependency or None,
            chdir=run["workdir"],
            output=f"{slurm_filename_literal(run['log_dir'])}/{pattern}",
            extra_args=[str(a) for a in self.extra_args or ()],
            script_args=[str(a) for a in self.script_args or ()],
        )
        self.log.info(
            "Submitted Slurm job %s (%s) array=%s throttle=%s partition=%s; logs in %s",
            job_id,
            run["name"],
            sub_array,
            run["throttle"],
            self.partition,
            run["log_dir"],
        )
        return job_id

    def _wait(
        self, context: Any, hook: SlurmHook, run: dict[str, Any], job_id: str, sub_array: str | None
    ) -> dict[str, Any]:
        if self.deferrable:
            if self.wait_before_defer > 0:
                deadline = time.monotonic() + self.wait_before_defer
                if (states := self._poll(hook, job_id, sub_array, 2.0, deadline)) is not None:
                    return self._finish(hook, run, job_id, states)
            self.defer(
                trigger=SlurmJobTrigger(
                    ssh_conn_id=self.ssh_conn_id,
                    job_id=job_id,
                    array=sub_array,
                    job_name=run["name"],
                    poll_interval=self.poll_interval,
                    accounting=self.accounting,
                    first_poll_delay=self.first_poll_delay,
                ),
                method_name="execute_complete",
            )
        states = self._poll(hook, job_id, sub_array, self.poll_interval, None)
        assert states is not None  # no deadline: polls until every task is terminal
        return self._finish(hook, run, job_id, states)

    def _poll(
        self, hook: SlurmHook, job_id: str, sub_array: str | None, interval: float, deadline: float | None
    ) -> dict[int, TaskState] | None:
        """Poll from the task until every task of the job is terminal (its states) or ``deadline`` (None)."""
        expected = expected_indices(sub_array)
        last = None
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
                self.log.warning("Polling Slurm job %s failed (%s); retrying", job_id, err)
                hook.close()
                time.sleep(interval)
                continue
            done = sum(1 for i in expected if i in states and states[i].terminal)
            counts = Counter(states[i].state if i in states else "UNKNOWN" for i in expected)
            summary = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
            if last != summary:
                self.log.info("Slurm job %s: %d of %d tasks done (%s)", job_id, done, len(expected), summary)
                last = summary
            if done == len(expected):
                return states
            if deadline is not None and time.monotonic() + interval > deadline:
                return None
            time.sleep(interval)

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        run = self._run(context)
        event = event or {}
        if event.get("status") != "done":
            raise AirflowException(f"Slurm job {event.get('job_id')} ({run['name']}): {event.get('message') or event}")
        hook = self.hook
        try:
            return self._finish(hook, run, str(event["job_id"]), tasks_from_event(event))
        finally:
            hook.close()

    def _finish(
        self, hook: SlurmHook, run: dict[str, Any], job_id: str, states: Mapping[int, TaskState]
    ) -> dict[str, Any]:
        state = self._load_state(hook, run)
        attempt = self._attempt(state, job_id)
        if attempt is None:  # state file lost meanwhile: keep what we know
            sub = compress_indices(states) if run["array"] is not None and states else None
            attempt = {"job_id": job_id, "array": sub}
            state["attempts"].append(attempt)
        self._record(state, attempt, states)
        self._save_state(hook, run, state)
        return self._result(hook, run, state)

    def _result(self, hook: SlurmHook, run: Mapping[str, Any], state: Mapping[str, Any]) -> dict[str, Any]:
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
            self.log.info("Slurm job %s: all %d tasks COMPLETED", run["name"], len(run["indices"]))
            return result
        lines = []
        for i in failed:
            t = tasks[str(i)]
            lines.append(f"index {i}: {TaskState.from_dict(t).describe()} (job {t.get('job_id')})")
        permanent: dict[int, str] = {}
        for i in failed[: self.max_logged_failures]:
            t = tasks[str(i)]
            if not t.get("job_id"):
                continue
            path = self.log_path(run, t["job_id"], i)
            try:
                text = hook.tail(path, self.log_tail_lines)
            except Exception as err:
                text = f"(log not readable: {err})"
            if reason := _permanent_reason(text):
                permanent[i] = reason
                lines[failed.index(i)] += f": {reason}"
            self.log.error(
                "Slurm task %s failed: %s; last %d lines of %s:\n%s",
                i,
                TaskState.from_dict(t).describe(),
                self.log_tail_lines,
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

    def on_kill(self) -> None:
        """The task was killed while the worker waited: cancel the Slurm job."""
        if not self._job_id:
            return
        self.log.info("Cancelling Slurm job %s", self._job_id)
        with SlurmHook(self.ssh_conn_id, accounting=self.accounting) as hook:
            hook.cancel(self._job_id)
