"""Slurm over SSH: submit, watch and cancel batch jobs on a cluster's head (login) node.

:class:`SlurmHook` wraps the ssh provider's :class:`~airflow.providers.ssh.hooks.ssh.SSHHook`: one
paramiko connection per hook, reused for every command and for SFTP. Two rules hold everywhere:

* **No remote shell injection.** Every remote command is an argv list joined with
  :func:`shlex.quote` (:func:`join_command`); no caller-supplied string ever reaches the remote shell
  unquoted. Files are written and read over SFTP, which involves no shell at all.
* **Host keys are verified.** The connection must pin the head node's key (``host_key`` extra),
  name a ``known_hosts`` file, or the key must be in the worker's ``~/.ssh/known_hosts``.
  ``no_host_key_check`` / ``allow_host_key_change`` are refused, and unknown keys are rejected
  (paramiko's ``RejectPolicy``), never auto-added.

Job states come from ``sacct -P -n`` (text: ``sacct --json`` in Slurm 22.05 reports exit code 0 for
failed tasks) when accounting is available, else from ``squeue -t all`` plus ``scontrol -o show job``,
which keep finished jobs only ``MinJobAge`` seconds. ``accounting="auto"`` (default) detects which.
The parsers are pure functions of the captured text (unit-tested on their own).
"""

from __future__ import annotations

import asyncio
import errno
import json
import posixpath
import re
import select
import shlex
import stat
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from airflow.providers.ssh.hooks.ssh import SSHHook
from airflow.sdk import BaseHook
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

_ENV_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
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


def build_sbatch_argv(
    script_path: str,
    *,
    sbatch: str = "sbatch",
    job_name: str | None = None,
    array: str | None = None,
    throttle: int | None = None,
    partition: str | None = None,
    time_limit: str | int | None = None,
    gres: str | None = None,
    cpus_per_task: int | str | None = None,
    mem: str | None = None,
    dependency: str | None = None,
    chdir: str | None = None,
    output: str | None = None,
    error: str | None = None,
    extra_args: Sequence[str] = (),
    script_args: Sequence[str] = (),
) -> list[str]:
    """The ``sbatch --parsable ...`` argv (still unquoted: :func:`join_command` quotes it)."""
    argv = [sbatch, "--parsable"]
    if job_name:
        argv.append(f"--job-name={job_name}")
    if array:
        body, inline_throttle = split_throttle(str(array))
        expand_array(body)  # validate
        limit = throttle if throttle else inline_throttle
        argv.append(f"--array={body}%{int(limit)}" if limit else f"--array={body}")
    if partition:
        argv.append(f"--partition={partition}")
    if time_limit not in (None, ""):
        argv.append(f"--time={time_limit}")
    if gres:
        argv.append(f"--gres={gres}")
    if cpus_per_task not in (None, ""):
        argv.append(f"--cpus-per-task={int(cpus_per_task)}")
    if mem:
        argv.append(f"--mem={mem}")
    if dependency:
        argv.append(f"--dependency={dependency}")
    if chdir:
        argv.append(f"--chdir={chdir}")
    if output:
        argv.append(f"--output={output}")
    if error:
        argv.append(f"--error={error}")
    for arg in extra_args or ():
        arg = str(arg)
        if not arg.startswith("-"):
            raise ValueError(f"extra sbatch argument {arg!r} is not an option (must start with '-')")
        argv.append(arg)
    argv.append(script_path)
    argv.extend(str(a) for a in script_args or ())
    return argv


def slurm_filename_literal(path: str) -> str:
    """Escape ``%`` so Slurm's ``--output`` pattern expansion leaves a literal path alone."""
    return path.replace("%", "%%")


def env_exports(env: Mapping[str, Any]) -> str:
    """``export K='value'`` lines (shlex-quoted values; keys must be shell identifiers)."""
    lines = []
    for key, value in env.items():
        if not _ENV_KEY.match(str(key)):
            raise ValueError(f"environment variable name {key!r} is not a shell identifier")
        text = "" if value is None else str(value)
        if "\0" in text:
            raise ValueError(f"environment variable {key} contains a NUL byte")
        lines.append(f"export {key}={shlex.quote(text)}\n")
    return "".join(lines)


def inject_env(script: str, env: Mapping[str, Any] | None) -> str:
    """Insert ``export`` lines right after the script's ``#!`` / ``#SBATCH`` header block.

    sbatch reads ``#SBATCH`` directives only up to the first line that is neither blank nor a
    comment, so the exports go exactly there: the directives stay effective and the values are
    set before any command runs. This avoids ``sbatch --export=K=V``, which splits on commas.
    """
    if not script.startswith("#!"):
        raise ValueError("a batch script must start with a '#!' line")
    if not env:
        return script
    lines = script.splitlines(keepends=True)
    if not lines[-1].endswith("\n"):
        lines[-1] += "\n"
    i = 1
    while i < len(lines) and (not lines[i].strip() or lines[i].lstrip().startswith("#")):
        i += 1
    block = "# --- environment set by ReelForge's SlurmJobOperator ---\n" + env_exports(env) + "# ---\n"
    return "".join(lines[:i]) + block + "".join(lines[i:])


@dataclass(frozen=True)
class CommandResult:
    argv: list[str]
    rc: int
    stdout: str
    stderr: str


# ----------------------------------------------------------------------------- the hook


class SlurmHook(BaseHook):
    """Talk to a Slurm cluster through its head node over SSH (commands + SFTP).

    :param ssh_conn_id: an ``ssh`` connection to the head node (see ``SLURM.md``). Extras besides
        the ssh provider's: ``known_hosts`` (path of a known_hosts file to verify against),
        ``proxy_command`` (e.g. an SSM tunnel; ``%h``/``%p``/``%r`` are substituted),
        ``slurm_bin_dir`` (where sbatch & co. live if not on the non-login ``PATH``) and
        ``slurm_accounting`` (``auto``/``sacct``/``squeue``).
    :param accounting: ``auto`` (default: ``sacct`` if accounting storage is enabled, else
        ``squeue``/``scontrol``), ``sacct`` (require it) or ``squeue`` (never use sacct).
    :param cmd_timeout: seconds one remote command may take (else the ``cmd_timeout`` extra, else 120).
    :param conn_timeout: SSH connect timeout (else the ``conn_timeout`` extra, else 10).
    """

    conn_name_attr = "ssh_conn_id"
    default_conn_name = "slurm_ssh"
    conn_type = "ssh"
    hook_name = "Slurm over SSH"

    def __init__(
        self,
        ssh_conn_id: str = default_conn_name,
        *,
        accounting: str | None = None,
        slurm_bin_dir: str | None = None,
        host_proxy_cmd: str | None = None,
        cmd_timeout: float | None = None,
        conn_timeout: int | None = None,
        conn_retry_attempts: int = 3,
    ) -> None:
        super().__init__()
        self.ssh_conn_id = ssh_conn_id
        self._extra: dict[str, Any] = dict(self.get_connection(ssh_conn_id).extra_dejson or {})
        mode = (accounting or self._extra.get("slurm_accounting") or "auto").lower()
        if mode not in ACCOUNTING_MODES:
            raise ValueError(f"accounting must be one of {ACCOUNTING_MODES}, not {mode!r}")
        self.accounting = mode
        self.slurm_bin_dir = slurm_bin_dir or self._extra.get("slurm_bin_dir") or ""
        self.host_proxy_cmd = host_proxy_cmd or self._extra.get("proxy_command") or None
        self.cmd_timeout = float(cmd_timeout or self._extra.get("cmd_timeout") or 120)
        self.conn_timeout = conn_timeout
        self.conn_retry_attempts = max(1, conn_retry_attempts)
        self._has_sacct: bool | None = None
        self._sftp: Any = None
        self._sftp_transport: Any = None

    # -- connection ---------------------------------------------------------------------------

    @cached_property
    def ssh_hook(self) -> SSHHook:
        """The ssh provider's hook, checked for a host-key policy that actually verifies."""
        hook = SSHHook(
            ssh_conn_id=self.ssh_conn_id,
            conn_timeout=self.conn_timeout,  # None: the `conn_timeout` extra, else 10 s
            cmd_timeout=self.cmd_timeout,
            conn_retry_attempts=1,  # retried below, but never on a host-key or auth failure
        )
        if hook.no_host_key_check or hook.allow_host_key_change:
            raise HostKeyPolicyError(
                f"connection {self.ssh_conn_id!r} disables host key verification "
                "(no_host_key_check/allow_host_key_change); set `host_key` or `known_hosts` instead"
            )
        if hook.host_key is None and self._extra.get("known_hosts"):
            hook.host_key = self._known_host_key(str(self._extra["known_hosts"]), hook.remote_host, hook.port)
        if self.host_proxy_cmd:
            hook.host_proxy_cmd = self._expand_proxy_command(
                self.host_proxy_cmd, hook.remote_host, hook.port, hook.username
            )
        return hook

    @staticmethod
    def _expand_proxy_command(cmd: str, host: str, port: int, user: str | None) -> str:
        """OpenSSH-style ``%h``/``%p``/``%r``/``%%`` in a ProxyCommand (values quoted)."""
        values = {"h": shlex.quote(host), "p": str(port), "r": shlex.quote(user or ""), "%": "%"}
        return re.sub(r"%([hpr%])", lambda m: values[m.group(1)], cmd)

    @staticmethod
    def _known_host_key(path: str, host: str, port: int) -> Any:
        import os

        import paramiko

        path = os.path.expanduser(path)
        if not os.path.isfile(path):
            raise HostKeyPolicyError(f"known_hosts file {path} does not exist")
        keys = paramiko.HostKeys(path)
        name = host if port == 22 else f"[{host}]:{port}"
        found = keys.lookup(name)
        if not found:
            raise HostKeyPolicyError(f"host {name} is not in {path}: record its key first (ssh-keyscan)")
        for kind in ("ssh-ed25519", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521"):
            if kind in found:
                return found[kind]
        return next(iter(found.values()))

    def get_conn(self) -> Any:
        """The (reused) paramiko client; reconnects on network errors, never on key/auth errors."""
        hook = self.ssh_hook
        delay = 2.0
        for attempt in range(1, self.conn_retry_attempts + 1):
            client = hook.client
            transport = client.get_transport() if client is not None else None
            if client is not None and not (transport and transport.is_active()):
                self._drop_proxy(hook)  # a dead connection's ProxyCommand process is dead too
            try:
                return hook.get_conn()
            except (OSError, EOFError) as err:
                self._drop_proxy(hook)
                if attempt == self.conn_retry_attempts:
                    raise
                self.log.warning("SSH connect to %s failed (%s); retrying", self.ssh_conn_id, err)
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    @staticmethod
    def _drop_proxy(hook: SSHHook) -> None:
        """Forget SSHHook's cached ProxyCommand so the next connect starts a fresh one."""
        proxy = hook.__dict__.pop("host_proxy", None)
        if proxy is not None:
            try:
                proxy.close()
            except Exception:  # noqa: S110 - best-effort teardown
                pass

    def close(self) -> None:
        """Close SFTP and the SSH connection (and a ProxyCommand process)."""
        if self._sftp is not None:
            try:
                self._sftp.close()
            except Exception:  # noqa: S110 - best-effort teardown
                pass
            self._sftp = None
        hook = self.__dict__.get("ssh_hook")
        if hook is not None and hook.client is not None:
            try:
                hook.client.close()
            except Exception:  # noqa: S110 - best-effort teardown
                pass
            hook.client = None
        if hook is not None:
            self._drop_proxy(hook)

    def __enter__(self) -> SlurmHook:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def test_connection(self) -> tuple[bool, str]:
        try:
            out = self.run_command(self._slurm("sinfo", "--version")).stdout.strip()
            return True, f"connected; {out}"
        except Exception as err:
            return False, str(err)

    # -- commands -----------------------------------------------------------------------------

    def _slurm(self, command: str, *args: Any) -> list[str]:
        exe = posixpath.join(self.slurm_bin_dir, command) if self.slurm_bin_dir else command
        return [exe, *(str(a) for a in args)]

    def run_command(self, argv: Sequence[Any], *, check: bool = True, timeout: float | None = None) -> CommandResult:
        """Run one command on the head node; ``argv`` is quoted element by element."""
        argv = [str(a) for a in argv]
        command = join_command(argv)
        limit = timeout or self.cmd_timeout
        transport = self.get_conn().get_transport()
        chan = transport.open_session(timeout=self.ssh_hook.conn_timeout or 30)
        out, err = bytearray(), bytearray()
        try:
            chan.exec_command(command)
            deadline = time.monotonic() + limit
            while True:
                select.select([chan], [], [], 0.05)
                while chan.recv_ready():
                    out.extend(chan.recv(65536))
                while chan.recv_stderr_ready():
                    err.extend(chan.recv_stderr(65536))
                if (
                    chan.exit_status_ready()
                    and chan.eof_received
                    and not (chan.recv_ready() or chan.recv_stderr_ready())
                ):
                    break
                if time.monotonic() > deadline:
                    raise TimeoutError(f"`{command[:200]}` did not finish within {limit} s")
            rc = chan.recv_exit_status()
        finally:
            chan.close()
        result = CommandResult(argv, rc, out.decode("utf-8", "replace"), err.decode("utf-8", "replace"))
        if check and rc != 0:
            raise SlurmCommandError(argv, rc, result.stdout, result.stderr)
        return result

    # -- Slurm --------------------------------------------------------------------------------

    def submit(
        self,
        script_path: str,
        *,
        job_name: str | None = None,
        array: str | None = None,
        throttle: int | None = None,
        partition: str | None = None,
        time_limit: str | int | None = None,
        gres: str | None = None,
        cpus_per_task: int | str | None = None,
        mem: str | None = None,
        dependency: str | None = None,
        chdir: str | None = None,
        output: str | None = None,
        error: str | None = None,
        env: Mapping[str, Any] | None = None,
        extra_args: Sequence[str] = (),
        script_args: Sequence[str] = (),
    ) -> str:
        """``sbatch --parsable`` a script already on the cluster; returns the job id.

        ``env`` is passed as ``env K=V sbatch ...`` (each assignment one quoted word) and so reaches
        the job through sbatch's default ``--export=ALL``; commas or newlines in values are safe.
        (:class:`~reelforge.operators.slurm.SlurmJobOperator` writes ``export`` lines into the
        script instead, which also works where a site sets ``SBATCH_EXPORT=NONE``.)
        """
        argv = build_sbatch_argv(
            script_path,
            sbatch=self._slurm("sbatch")[0],
            job_name=job_name,
            array=array,
            throttle=throttle,
            partition=partition,
            time_limit=time_limit,
            gres=gres,
            cpus_per_task=cpus_per_task,
            mem=mem,
            dependency=dependency,
            chdir=chdir,
            output=output,
            error=error,
            extra_args=extra_args,
            script_args=script_args,
        )
        if env:
            assignments = []
            for key, value in env.items():
                if not _ENV_KEY.match(str(key)):
                    raise ValueError(f"environment variable name {key!r} is not a shell identifier")
                assignments.append(f"{key}={'' if value is None else value}")
            argv = ["env", *assignments, *argv]
        result = self.run_command(argv)
        job_id = result.stdout.strip().splitlines()[-1].split(";")[0].strip() if result.stdout.strip() else ""
        try:
            return check_job_id(job_id)
        except ValueError:
            raise SlurmError(f"sbatch printed no job id: {result.stdout!r} {result.stderr!r}") from None

    def find_jobs(self, job_name: str) -> dict[str, dict[int, str]]:
        """This user's jobs named ``job_name`` still known to the controller: ``{job_id: {index: state}}``.

        Used to re-attach: a job that is still pending/running shows up here whatever accounting says.
        """
        if not job_name or "," in job_name or "\n" in job_name:
            raise ValueError(f"job name {job_name!r} cannot be searched for (empty, comma or newline)")
        result = self.run_command(
            self._slurm("squeue", "--me", "-h", "-r", "-t", "all", f"--name={job_name}", "-o", "%F|%i|%T")
        )
        jobs: dict[str, dict[int, str]] = {}
        for line in result.stdout.splitlines():
            fields = line.strip().split("|")
            if len(fields) < 3 or not fields[0].isdigit():
                continue
            is_array = "_" in fields[1]
            for i in _indices_of(fields[1], fields[0], is_array) or []:
                jobs.setdefault(fields[0], {})[i] = normalize_state(fields[2])
        return jobs

    def uses_sacct(self) -> bool:
        """Whether job states come from accounting (detected on first use in ``auto`` mode)."""
        if self.accounting == "squeue":
            return False
        if self._has_sacct is None:
            self._sacct_text("0")
        return bool(self._has_sacct)

    def _sacct_text(self, job_id: str) -> str | None:
        if self.accounting == "squeue" or (self.accounting == "auto" and self._has_sacct is False):
            return None
        result = self.run_command(
            self._slurm("sacct", "-n", "-P", "-X", "-j", job_id, "--format=JobID,State,ExitCode,Reason"),
            check=False,
        )
        if result.rc == 0:
            self._has_sacct = True
            return result.stdout
        if "accounting storage is disabled" in result.stderr.lower():
            if self.accounting == "sacct":
                raise SlurmError("accounting='sacct' but Slurm accounting storage is disabled on this cluster")
            if self._has_sacct is not False:
                self.log.info(
                    "Slurm accounting is disabled: using squeue/scontrol (finished jobs stay visible "
                    "for MinJobAge seconds only)"
                )
            self._has_sacct = False
            return None
        if self.accounting == "sacct":
            raise SlurmCommandError(result.argv, result.rc, result.stdout, result.stderr)
        self.log.warning("sacct failed (%s); using squeue/scontrol for now", result.stderr.strip()[:300])
        return None

    def job_states(self, job_id: str | int, array: str | None = None) -> dict[int, TaskState]:
        """Per-index state of a job (``array``: the spec it was submitted with; ``None`` = plain job).

        With accounting, indices that sacct does not list yet are simply missing (sacct lags squeue
        by seconds for arrays): callers wait until every expected index is terminal. A job sacct
        does not know at all (just submitted) is looked up in the controller instead.

        :raises JobVanishedError: neither accounting nor the controller knows the job.
        """
        job_id = check_job_id(job_id)
        is_array = bool(array)
        text = self._sacct_text(job_id)
        if text is not None:
            states = parse_sacct(text, job_id, is_array)
            if states:
                return states
        return self._live_states(job_id, is_array)

    def _live_states(self, job_id: str, is_array: bool) -> dict[int, TaskState]:
        result = self.run_command(
            self._slurm("squeue", "-h", "-r", "-t", "all", "-j", job_id, "-o", "%i|%T|%r"), check=False
        )
        vanished = JobVanishedError(
            f"Slurm job {job_id} is unknown to the controller and to accounting: it ended more than "
            "MinJobAge seconds ago (slurm.conf, default 300) while nobody was watching, or it was "
            "purged. Its final state cannot be read; enable accounting (slurmdbd) for durable states."
        )
        if result.rc != 0:
            if "invalid job id" in result.stderr.lower():
                raise vanished
            raise SlurmCommandError(result.argv, result.rc, result.stdout, result.stderr)
        states = parse_squeue(result.stdout, job_id, is_array)
        if not states:
            raise vanished
        if any(s.terminal for s in states.values()):
            detail = self.run_command(self._slurm("scontrol", "-o", "show", "job", job_id), check=False)
            if detail.rc == 0:
                codes = parse_scontrol(detail.stdout, job_id, is_array)
                for i, s in states.items():
                    c = codes.get(i)
                    if s.terminal and c is not None:
                        states[i] = TaskState(s.state, c.exit_code, c.signal, s.reason or c.reason)
        return states

    def cancel(self, job_id: str | int) -> None:
        """``scancel`` a job (all its array tasks)."""
        self.run_command(self._slurm("scancel", check_job_id(job_id)))

    # -- files (SFTP: no shell involved) ------------------------------------------------------

    @property
    def sftp(self) -> Any:
        client = self.get_conn()
        transport = client.get_transport()
        if self._sftp is None or self._sftp_transport is not transport or self._sftp.sock.closed:
            self._sftp = client.open_sftp()
            self._sftp_transport = transport
        return self._sftp

    def exists(self, path: str) -> bool:
        try:
            self.sftp.stat(path)
        except FileNotFoundError:
            return False
        return True

    def mkdir_p(self, path: str, mode: int = 0o755) -> None:
        """Create ``path`` (with ``mode``) and missing parents (0755); existing ones are left alone."""
        sftp = self.sftp
        parts = [p for p in path.split("/") if p not in ("", ".")]
        current = "/" if path.startswith("/") else ""
        for n, part in enumerate(parts, start=1):
            current = posixpath.join(current, part) if current else part
            try:
                if not stat.S_ISDIR(sftp.stat(current).st_mode):
                    raise NotADirectoryError(errno.ENOTDIR, f"{current} exists and is not a directory")
                continue
            except FileNotFoundError:
                pass
            try:
                sftp.mkdir(current, mode if n == len(parts) else 0o755)
            except OSError:
                if not stat.S_ISDIR(sftp.stat(current).st_mode):
                    raise

    def put_text(self, path: str, text: str, mode: int = 0o644) -> None:
        """Write a file atomically (temp file + rename), creating parent directories."""
        self._put(path, text.encode("utf-8"), mode)

    def put_file(self, local_path: str, remote_path: str, mode: int | None = None) -> None:
        """Upload a local file atomically."""
        import os

        parent = posixpath.dirname(remote_path)
        if parent:
            self.mkdir_p(parent)
        tmp = self._tmp_name(remote_path)
        self.sftp.put(local_path, tmp)
        self.sftp.chmod(tmp, mode if mode is not None else stat.S_IMODE(os.stat(local_path).st_mode))
        self._rename(tmp, remote_path)

    def _put(self, path: str, data: bytes, mode: int) -> None:
        parent = posixpath.dirname(path)
        if parent:
            self.mkdir_p(parent)
        tmp = self._tmp_name(path)
        with self.sftp.open(tmp, "wb") as fh:
            fh.write(data)
        self.sftp.chmod(tmp, mode)
        self._rename(tmp, path)

    @staticmethod
    def _tmp_name(path: str) -> str:
        return posixpath.join(posixpath.dirname(path), f".{posixpath.basename(path)}.tmp-{uuid.uuid4().hex[:8]}")

    def _rename(self, tmp: str, path: str) -> None:
        try:
            self.sftp.posix_rename(tmp, path)
        except OSError:
            try:
                self.sftp.remove(path)
            except FileNotFoundError:
                pass
            self.sftp.rename(tmp, path)

    def read_text(self, path: str, max_bytes: int | None = None) -> str:
        """A remote text file (e.g. ``plan.json`` or a log), at most ``max_bytes`` of it."""
        with self.sftp.open(path, "rb") as fh:
            data = fh.read(max_bytes) if max_bytes else fh.read()
        return data.decode("utf-8", "replace")

    def read_json(self, path: str) -> Any:
        return json.loads(self.read_text(path))

    def remove(self, path: str) -> None:
        try:
            self.sftp.remove(path)
        except FileNotFoundError:
            pass

    def tail(self, path: str, n: int = 50) -> str:
        """The last ``n`` lines of a remote file (``tail -n N -- path``, arguments quoted)."""
        return self.run_command(["tail", "-n", int(n), "--", path]).stdout


class SlurmAsyncHook:
    """The trigger's async twin of :class:`SlurmHook`: the sync hook run in a worker thread.

    Why a thread rather than asyncssh: the trigger then uses exactly the same command building,
    quoting, parsers and host-key policy as the worker (paramiko with a pinned ``host_key`` or a
    ``known_hosts`` file, ProxyCommand for SSM tunnels). The provider's asyncssh hook builds its
    known_hosts entry without the ``[host]:port`` form and has no ProxyCommand, so a second
    implementation would drift. A poll is one ~0.1 s command every few seconds: one thread at a time
    per trigger costs the triggerer nothing measurable, and the event loop never blocks. Calls are
    serialized (one connection, used by one thread at a time).
    """

    def __init__(self, ssh_conn_id: str, **hook_kwargs: Any) -> None:
        self.ssh_conn_id = ssh_conn_id
        self.hook_kwargs = hook_kwargs
        self._hook: SlurmHook | None = None
        self._lock = asyncio.Lock()

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        async with self._lock:
            if self._hook is None:
                self._hook = await asyncio.to_thread(SlurmHook, self.ssh_conn_id, **self.hook_kwargs)
            return await asyncio.to_thread(getattr(self._hook, method), *args, **kwargs)

    async def job_states(self, job_id: str | int, array: str | None = None) -> dict[int, TaskState]:
        return await self._call("job_states", job_id, array)

    async def cancel(self, job_id: str | int) -> None:
        await self._call("cancel", job_id)

    async def tail(self, path: str, n: int = 50) -> str:
        return await self._call("tail", path, n)

    async def reset(self) -> None:
        """Drop the connection (the next call reconnects)."""
        await self.close()

    async def close(self) -> None:
        async with self._lock:
            if self._hook is not None:
                hook, self._hook = self._hook, None
                await asyncio.to_thread(hook.close)
