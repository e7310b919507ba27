"""Slurm over SSH: submit, watch and cancel batch jobs on a cluster's head (login) node.

:class:`SlurmHook` runs Slurm's commands and reads and writes files over one SSH connection
(:class:`~reelforge.hooks.verified_ssh.VerifiedSSHHook`, which always verifies the head node's host
key), reused for every command and for SFTP. **No remote shell injection:** every remote command is an
argv list joined with :func:`shlex.quote` (``slurm_text.join_command``); no caller-supplied string
reaches the remote shell unquoted, and files go over SFTP, which involves no shell at all. What the
commands print is parsed by the pure functions of :mod:`reelforge.hooks.slurm_text`.
``accounting="auto"`` (default) uses ``sacct`` when accounting storage is on, else ``squeue`` and
``scontrol`` (which keep finished jobs only ``MinJobAge`` seconds).
"""

from __future__ import annotations

import asyncio
import posixpath
import select
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from airflow.sdk import BaseHook

from reelforge.hooks.remote_files import RemoteFiles
from reelforge.hooks.sbatch import SbatchOptions, env_assignments
from reelforge.hooks.slurm_text import (
    ACCOUNTING_MODES,
    JobVanishedError,
    SlurmCommandError,
    SlurmError,
    TaskState,
    check_job_id,
    join_command,
    parse_sacct,
    parse_scontrol,
    parse_squeue,
    parse_squeue_jobs,
)
from reelforge.hooks.verified_ssh import VerifiedSSHHook


@dataclass(frozen=True)
class CommandResult:
    argv: list[str]
    rc: int
    stdout: str
    stderr: str


# ----------------------------------------------------------------------------- the hook


class SlurmHook(RemoteFiles, BaseHook):
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
    def ssh_hook(self) -> VerifiedSSHHook:
        """The ssh provider's hook, verifying the host key (``verified_ssh``)."""
        return VerifiedSSHHook(
            self.ssh_conn_id,
            known_hosts=self._extra.get("known_hosts"),
            proxy_command=self.host_proxy_cmd,
            conn_timeout=self.conn_timeout,  # None: the `conn_timeout` extra, else 10 s
            cmd_timeout=self.cmd_timeout,
            connect_attempts=self.conn_retry_attempts,
        )

    def get_conn(self) -> Any:
        """The (reused) paramiko client."""
        return self.ssh_hook.get_conn()

    def close(self) -> None:
        """Close SFTP and the SSH connection (and a ProxyCommand process)."""
        if self._sftp is not None:
            try:
                self._sftp.close()
            except Exception:  # noqa: S110 - best-effort teardown
                pass
            self._sftp = None
        if "ssh_hook" in self.__dict__:
            self.ssh_hook.close()

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

    def submit(self, script_path: str, *, env: Mapping[str, Any] | None = None, script_args: Sequence[str] = (),
               **options: Any) -> str:
        """``sbatch --parsable`` a script already on the cluster; returns the job id.

        ``options`` are :class:`~reelforge.hooks.sbatch.SbatchOptions` fields. ``env`` is passed as
        ``env K=V sbatch ...`` (each assignment one quoted word) and so reaches the job through sbatch's
        default ``--export=ALL``; commas or newlines in values are safe.
        (:class:`~reelforge.operators.slurm.SlurmJobOperator` writes ``export`` lines into the
        script instead, which also works where a site sets ``SBATCH_EXPORT=NONE``.)
        """
        argv = SbatchOptions(**options).argv(script_path, sbatch=self._slurm("sbatch")[0], script_args=script_args)
        if env:
            argv = ["env", *env_assignments(env), *argv]
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
        return parse_squeue_jobs(result.stdout)

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
