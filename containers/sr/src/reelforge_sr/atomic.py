"""Write files so that readers only ever see complete ones: temp name, fsync, rename, fsync dir."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path
from typing import Any


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_file(path: Path) -> None:
    """Flush a closed file's data to disk."""
    with open(path, "rb+") as fh:
        os.fsync(fh.fileno())


def temp_name(final: Path) -> Path:
    """A per-process temp name beside ``final`` (``<name>.<host>.<pid>.tmp``)."""
    return final.with_name(f"{final.name}.{socket.gethostname()}.{os.getpid()}.tmp")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def publish(tmp: Path, final: Path) -> None:
    """fsync ``tmp`` and rename it onto ``final`` atomically."""
    fsync_file(tmp)
    os.replace(tmp, final)
    fsync_dir(final.parent)


def write_bytes(path: Path, data: bytes) -> None:
    """Atomically replace ``path`` with ``data``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(path)
    try:
        tmp.write_bytes(data)
        publish(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_json(path: Path, obj: Any) -> None:
    """Atomically replace ``path`` with pretty JSON."""
    write_bytes(path, (json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n").encode())


def read_json(path: Path) -> Any:
    """Parse a JSON file."""
    return json.loads(path.read_text())


def remove_stale_temps(final: Path, *, idle_s: float = 600.0) -> list[Path]:
    """Delete ``<final>.*.tmp`` left by dead runs: from this host when their process is gone, from other hosts
    (shared storage) when untouched for ``idle_s``. A temp another live worker is writing is left alone."""
    removed = []
    host = socket.gethostname()
    for tmp in final.parent.glob(f"{final.name}.*.tmp"):
        owner, _, pid = tmp.name[len(final.name) + 1:-len(".tmp")].rpartition(".")
        try:
            idle = time.time() - tmp.stat().st_mtime
        except FileNotFoundError:
            continue
        if owner == host and pid.isdigit():
            stale = not _pid_alive(int(pid)) or int(pid) == os.getpid()
        else:
            stale = idle > idle_s
        if stale:
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed
