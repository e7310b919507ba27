"""Run a batch script (optionally a job array) on the Slurm cluster and wait for it."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from functools import cached_property
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException

from reelforge.hooks.sbatch import slurm_filename_literal
from reelforge.hooks.slurm import SlurmHook
from reelforge.hooks.slurm_text import (
    TERMINAL_STATES,
    JobVanishedError,
    TaskState,
    compress_indices,
    expected_indices,
)
from reelforge.links import SLURM_LINKS
from reelforge.operators.slurm_state import (  # noqa: F401  (re-exported: the names callers import from here)
    PERMANENT_FAILURE_MARKER,
    SlurmJobFailedError,
    SlurmJobPermanentError,
    find_attempt,
    job_layout,
    load_state,
    log_path,
    poll_job,
    record_states,
    report,
    save_state,
    script_text,
    slurm_job_name,
)
from reelforge.operators.slurm_ui import log_job_detail, push_delivery, push_job
from reelforge.settings import AWS_CONN_ID, SLURM_CONN_ID
from reelforge.triggers.slurm import SlurmJobTrigger, tasks_from_event


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
    :param delivery_manifest: a JSON file the job writes to say what it delivered to S3 (the SR worker's
        ``delivery.json``: ``{"bucket", "prefix", "objects": [{"role", "bucket", "key"}]}``), relative to
        ``workdir``. Read after success for the task's S3 links (:mod:`reelforge.links`).
    :param aws_conn_id: the AWS connection whose region and endpoint those links use.

    Extra links: *Slurm job* (the task log, with a ``scontrol``/``sacct`` section once the job ended) and,
    with ``delivery_manifest``, the output prefix, the delivered video, the report and the previews.

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
        "delivery_manifest",
    )
    template_ext: Sequence[str] = (".sbatch", ".sh")
    template_fields_renderers = {"script": "bash", "env": "json", "extra_args": "json"}
    ui_color = "#dde8f4"
    operator_extra_links = SLURM_LINKS

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
        delivery_manifest: str | None = None,
        aws_conn_id: str | None = AWS_CONN_ID,
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
        self.delivery_manifest = delivery_manifest
        self.aws_conn_id = aws_conn_id
        self._job_id: str | None = None

    # -- helpers --------------------------------------------------------------------------------

    @cached_property
    def hook(self) -> SlurmHook:
        return SlurmHook(self.ssh_conn_id, accounting=self.accounting)

    def _run(self, context: Mapping[str, Any]) -> dict[str, Any]:
        """Names and paths of this task instance's job (the same for every try)."""
        return job_layout(context["ti"], self.workdir, self.array, self.array_throttle, self.job_name)

    log_path = staticmethod(log_path)

    def _load_state(self, hook: SlurmHook, run: Mapping[str, Any]) -> dict[str, Any]:
        return load_state(hook, run, self.log)

    _save_state = staticmethod(save_state)
    _attempt = staticmethod(find_attempt)
    _record = staticmethod(record_states)

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
            return self._delivered(context, hook, run, self._result(hook, run, state))
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
        return script_text(self.script, self.env, self.template_ext)

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
        push_job(context, run, job_id)
        if self.deferrable:
            if self.wait_before_defer > 0:
                deadline = time.monotonic() + self.wait_before_defer
                if (states := poll_job(hook, job_id, sub_array, 2.0, deadline, self.log)) is not None:
                    return self._finish(context, hook, run, job_id, states)
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
        states = poll_job(hook, job_id, sub_array, self.poll_interval, None, self.log)
        assert states is not None  # no deadline: polls until every task is terminal
        return self._finish(context, hook, run, job_id, states)

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        run = self._run(context)
        event = event or {}
        if event.get("status") != "done":
            raise AirflowException(f"Slurm job {event.get('job_id')} ({run['name']}): {event.get('message') or event}")
        hook = self.hook
        try:
            return self._finish(context, hook, run, str(event["job_id"]), tasks_from_event(event))
        finally:
            hook.close()

    def _finish(
        self, context: Any, hook: SlurmHook, run: dict[str, Any], job_id: str, states: Mapping[int, TaskState]
    ) -> dict[str, Any]:
        state = self._load_state(hook, run)
        attempt = self._attempt(state, job_id)
        if attempt is None:  # state file lost meanwhile: keep what we know
            sub = compress_indices(states) if run["array"] is not None and states else None
            attempt = {"job_id": job_id, "array": sub}
            state["attempts"].append(attempt)
        self._record(state, attempt, states)
        self._save_state(hook, run, state)
        log_job_detail(self.log, hook, job_id)
        return self._delivered(context, hook, run, self._result(hook, run, state))

    def _delivered(
        self, context: Any, hook: SlurmHook, run: Mapping[str, Any], result: dict[str, Any]
    ) -> dict[str, Any]:
        """After success: the ``delivery`` XCom from ``delivery_manifest`` (for the S3 links)."""
        if self.delivery_manifest:
            push_delivery(context, self.log, hook, run, str(self.delivery_manifest), self.aws_conn_id)
        return result

    def _result(self, hook: SlurmHook, run: Mapping[str, Any], state: Mapping[str, Any]) -> dict[str, Any]:
        return report(hook, run, state, self.log, tail_lines=self.log_tail_lines,
                      max_logged=self.max_logged_failures)

    def on_kill(self) -> None:
        """The task was killed while the worker waited: cancel the Slurm job."""
        if not self._job_id:
            return
        self.log.info("Cancelling Slurm job %s", self._job_id)
        with SlurmHook(self.ssh_conn_id, accounting=self.accounting) as hook:
            hook.cancel(self._job_id)
