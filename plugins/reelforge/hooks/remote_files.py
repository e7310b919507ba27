"""Files on the cluster's shared storage over SFTP (no remote shell involved): written atomically.

A mixin for a hook that provides ``sftp`` (a paramiko ``SFTPClient``): :class:`~reelforge.hooks.slurm.SlurmHook`.
"""

from __future__ import annotations

import errno
import json
import os
import posixpath
import stat
import uuid
from typing import Any


class RemoteFiles:
    """Create directories, write (temp name + rename), read and remove remote files."""

    sftp: Any

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
