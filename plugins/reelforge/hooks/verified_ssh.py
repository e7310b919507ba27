"""The ssh provider's hook, hardened: the head node's host key is always verified.

:class:`VerifiedSSHHook` refuses a connection that turns verification off (``no_host_key_check`` /
``allow_host_key_change``), takes the key from the ``host_key`` extra or a ``known_hosts`` file
(``[host]:port`` entries included), so paramiko's ``RejectPolicy`` never meets an unknown key, expands
OpenSSH-style ``%h``/``%p``/``%r`` in a ProxyCommand (an SSM tunnel to a HyperPod head node), and
reconnects after network errors, never after a host-key or authentication failure.
"""

from __future__ import annotations

import os
import re
import shlex
import time
from typing import Any

from airflow.providers.ssh.hooks.ssh import SSHHook

from reelforge.hooks.slurm_text import HostKeyPolicyError


def expand_proxy_command(cmd: str, host: str, port: int, user: str | None) -> str:
    """OpenSSH-style ``%h``/``%p``/``%r``/``%%`` in a ProxyCommand (values quoted)."""
    values = {"h": shlex.quote(host), "p": str(port), "r": shlex.quote(user or ""), "%": "%"}
    return re.sub(r"%([hpr%])", lambda m: values[m.group(1)], cmd)


def known_host_key(path: str, host: str, port: int) -> Any:
    """The host's key from a known_hosts file (ed25519, then ECDSA, then whatever is recorded)."""
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


class VerifiedSSHHook(SSHHook):
    """:class:`SSHHook` that verifies the host key, expands its ProxyCommand and reconnects on network errors.

    :param known_hosts: a known_hosts file to take the key from when the connection pins none.
    :param proxy_command: a ProxyCommand with ``%h``/``%p``/``%r`` (overrides the connection's).
    :param connect_attempts: connection attempts on network errors (2 s, 4 s, ... apart).
    """

    def __init__(self, ssh_conn_id: str, *, known_hosts: str | None = None, proxy_command: str | None = None,
                 conn_timeout: int | None = None, cmd_timeout: float | None = None, connect_attempts: int = 3) -> None:
        # one connect per attempt below: the provider's own retries would retry key and auth failures too
        super().__init__(ssh_conn_id=ssh_conn_id, conn_timeout=conn_timeout, cmd_timeout=cmd_timeout,
                         conn_retry_attempts=1)
        if self.no_host_key_check or self.allow_host_key_change:
            raise HostKeyPolicyError(
                f"connection {ssh_conn_id!r} disables host key verification "
                "(no_host_key_check/allow_host_key_change); set `host_key` or `known_hosts` instead"
            )
        if self.host_key is None and known_hosts:
            self.host_key = known_host_key(str(known_hosts), self.remote_host, self.port)
        if proxy_command:
            self.host_proxy_cmd = expand_proxy_command(proxy_command, self.remote_host, self.port, self.username)
        self.connect_attempts = max(1, connect_attempts)

    def get_conn(self) -> Any:
        """The (reused) paramiko client; reconnects on network errors, never on key/auth errors."""
        delay = 2.0
        for attempt in range(1, self.connect_attempts + 1):
            client = self.client
            transport = client.get_transport() if client is not None else None
            if client is not None and not (transport and transport.is_active()):
                self.drop_proxy()  # a dead connection's ProxyCommand process is dead too
            try:
                return super().get_conn()
            except (OSError, EOFError) as err:
                self.drop_proxy()
                if attempt == self.connect_attempts:
                    raise
                self.log.warning("SSH connect to %s failed (%s); retrying", self.ssh_conn_id, err)
                time.sleep(delay)
                delay *= 2
        raise AssertionError("unreachable")

    def drop_proxy(self) -> None:
        """Forget the cached ProxyCommand so the next connect starts a fresh one."""
        proxy = self.__dict__.pop("host_proxy", None)
        if proxy is not None:
            try:
                proxy.close()
            except Exception:  # noqa: S110 - best-effort teardown
                pass

    def close(self) -> None:
        """Close the SSH connection (and a ProxyCommand process)."""
        if self.client is not None:
            try:
                self.client.close()
            except Exception:  # noqa: S110 - best-effort teardown
                pass
            self.client = None
        self.drop_proxy()
