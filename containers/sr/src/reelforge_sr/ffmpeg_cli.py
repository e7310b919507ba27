"""Thin helpers to run ffmpeg/ffprobe and keep their error output."""

from __future__ import annotations

import ctypes
import fcntl
import functools
import json
import os
import re
import signal
import subprocess
from collections import deque
from pathlib import Path
from threading import Thread
from typing import IO, Any

from reelforge_sr.errors import ReelForgeError

FFMPEG = "ffmpeg"
FFPROBE = "ffprobe"
MIN_VERSION = (5, 1)


def _die_with_parent() -> None:
    """Run in the child before exec: get SIGKILL when the worker dies, so no orphan keeps writing."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except OSError:
        pass


def run(args: list[str], *, what: str, timeout: float | None = None,
        capture: bool = True) -> subprocess.CompletedProcess:
    """Run a command; raise :class:`ReelForgeError` with its stderr tail when it fails."""
    try:
        proc = subprocess.run(args, capture_output=capture, timeout=timeout, check=False, preexec_fn=_die_with_parent)
    except FileNotFoundError as exc:
        raise ReelForgeError(f"{args[0]} is not installed or not on PATH") from exc
    except subprocess.TimeoutExpired as exc:
        raise ReelForgeError(f"{what}: {args[0]} timed out after {timeout}s") from exc
    if proc.returncode != 0:
        raise ReelForgeError(f"{what}: {args[0]} exited {proc.returncode}: {tail(proc.stderr)}")
    return proc


def tail(data: bytes | str | None, lines: int = 6) -> str:
    """The last lines of a tool's error output, on one line."""
    if not data:
        return "(no output)"
    text = data.decode(errors="replace") if isinstance(data, bytes) else data
    return " | ".join(ln.strip() for ln in text.strip().splitlines()[-lines:])


def ffprobe_json(path: Path, *args: str) -> dict[str, Any]:
    proc = run([FFPROBE, "-v", "error", "-of", "json", *args, str(path)], what=f"ffprobe {path.name}")
    return json.loads(proc.stdout or b"{}")


@functools.cache
def version() -> tuple[int, int]:
    out = run([FFMPEG, "-hide_banner", "-version"], what="ffmpeg -version").stdout.decode()
    m = re.search(r"version\s+n?(\d+)\.(\d+)", out)
    return (int(m.group(1)), int(m.group(2))) if m else (99, 0)  # git builds: assume new


def require_version() -> None:
    if version() < MIN_VERSION:
        raise ReelForgeError(f"ffmpeg {version()[0]}.{version()[1]} is too old: reelforge-sr needs ≥ 5.1 (-fps_mode)")


@functools.cache
def encoders() -> frozenset[str]:
    out = run([FFMPEG, "-hide_banner", "-encoders"], what="ffmpeg -encoders").stdout.decode()
    return frozenset(m.group(1) for m in re.finditer(r"^\s*[VAS][\w.]{5}\s+(\S+)", out, re.M))


class StderrTail:
    """Drain a pipe in a thread (so the child never blocks on it) and keep its last lines."""

    def __init__(self, stream: IO[bytes], lines: int = 20) -> None:
        self.lines: deque[str] = deque(maxlen=lines)
        self._thread = Thread(target=self._drain, args=(stream,), daemon=True)
        self._thread.start()

    def _drain(self, stream: IO[bytes]) -> None:
        for raw in iter(stream.readline, b""):
            self.lines.append(raw.decode(errors="replace").rstrip())
        stream.close()

    def text(self) -> str:
        self._thread.join(timeout=5)
        return " | ".join(self.lines) or "(no output)"


#: Pipe capacity asked for (Linux caps it at /proc/sys/fs/pipe-max-size, 1 MiB by default): a 720p RGB frame is
#: 2.7 MB, so the default 64 KiB pipe costs ~40 wake-ups of writer and reader per frame.
PIPE_BYTES = 1 << 20
F_SETPIPE_SZ = 1031


def grow_pipe(stream: IO[bytes] | None, size: int = PIPE_BYTES) -> int:
    """Enlarge a pipe's buffer where the kernel allows; return its capacity (0 when unknown)."""
    if stream is None:
        return 0
    try:
        size = min(size, int(Path("/proc/sys/fs/pipe-max-size").read_text()))
    except (OSError, ValueError):
        pass
    try:
        return fcntl.fcntl(stream.fileno(), F_SETPIPE_SZ, size)
    except OSError:
        try:
            return fcntl.fcntl(stream.fileno(), F_SETPIPE_SZ + 1)  # F_GETPIPE_SZ
        except OSError:
            return 0


def popen(args: list[str], *, nice: int = 0, **kwargs: Any) -> subprocess.Popen:
    """Start a child that dies with this process; ``nice`` > 0 lowers its CPU priority (all its threads)."""

    def prepare() -> None:
        _die_with_parent()
        if nice:
            try:
                os.nice(nice)
            except OSError:
                pass

    try:
        return subprocess.Popen(args, preexec_fn=prepare, **kwargs)
    except FileNotFoundError as exc:
        raise ReelForgeError(f"{args[0]} is not installed or not on PATH") from exc
