"""Raw RGB frames through ffmpeg pipes: a decoder that yields exactly a frame range, and an encoder."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from reelforge_sr.errors import SegmentError
from reelforge_sr.ffmpeg_cli import FFMPEG, StderrTail, grow_pipe, popen

PIX_FMTS = {"rgb24": np.uint8, "rgb48le": np.dtype("<u2")}
#: The encoder runs at this lower CPU priority: on the cores the model uses, x264 then fills the model's idle
#: moments instead of preempting its threads (a preempted thread stalls the whole parallel region). The
#: encoder's work per frame is a few % of the model's, so it keeps up; the queue bounds the frames in flight.
ENCODER_NICE = 10


def frame_bytes(width: int, height: int, pix_fmt: str) -> int:
    return width * height * 3 * np.dtype(PIX_FMTS[pix_fmt]).itemsize


def decode_args(source: str, stream: int, seek: float | None, count: int, filters: str, pix_fmt: str,
                threads: int = 0) -> list[str]:
    """ffmpeg argv that writes exactly frames [a, a+count) as raw ``pix_fmt`` to stdout.

    ``seek`` lies half-way between frame a-1 and frame a (relative to the file's start), so ffmpeg's
    accurate seek drops everything before frame a; ``-frames:v`` stops after ``count`` frames.
    """
    args = [FFMPEG, "-nostdin", "-v", "error", "-threads", str(threads)]
    if seek is not None:
        args += ["-ss", f"{seek:.6f}"]
    return args + ["-i", source, "-map", f"0:{stream}", "-an", "-sn", "-dn", "-fps_mode", "passthrough",
                   "-vf", filters, "-frames:v", str(count), "-f", "rawvideo", "-pix_fmt", pix_fmt, "pipe:1"]


class FrameDecoder:
    """Read frames of one range from an ffmpeg child; raise if fewer arrive than planned."""

    def __init__(self, args: list[str], width: int, height: int, pix_fmt: str, count: int) -> None:
        self.width, self.height, self.pix_fmt, self.count = width, height, pix_fmt, count
        self.dtype = PIX_FMTS[pix_fmt]
        self.size = frame_bytes(width, height, pix_fmt)
        self.proc = popen(args, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          bufsize=0)
        grow_pipe(self.proc.stdout)
        self.errors = StderrTail(self.proc.stderr)
        self.read_frames = 0

    def read(self, n: int) -> np.ndarray | None:
        """Up to ``n`` frames ``[k, H, W, 3]``; None once all planned frames were read."""
        n = min(n, self.count - self.read_frames)
        if n <= 0:
            return None
        want = n * self.size
        buf = bytearray(want)
        view = memoryview(buf)
        got = 0
        while got < want:
            k = self.proc.stdout.readinto(view[got:])
            if not k:
                break
            got += k
        whole = got // self.size
        self.read_frames += whole
        if whole < n:
            self.proc.wait()
            raise SegmentError(f"decoder stopped after {self.read_frames} of {self.count} frames "
                               f"(exit {self.proc.returncode}): {self.errors.text()}")
        return np.frombuffer(buf, self.dtype).reshape(n, self.height, self.width, 3)

    def finish(self) -> None:
        """Check that ffmpeg ended cleanly and produced nothing beyond the range."""
        extra = self.proc.stdout.read(1)
        rc = self.proc.wait()
        if extra:
            raise SegmentError(f"decoder produced more than the planned {self.count} frames")
        if rc != 0:
            raise SegmentError(f"decoder exited {rc}: {self.errors.text()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


def encoder_args(plan: dict[str, Any], out: Path, width: int, height: int, pix_fmt: str, threads: int = 0) -> list[str]:
    """ffmpeg argv that encodes raw frames from stdin into ``out`` (Matroska) as the plan says."""
    enc = plan["encode"]
    codec = enc["codec"]
    args = [FFMPEG, "-nostdin", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", pix_fmt, "-s", f"{width}x{height}",
            "-framerate", plan["timing"]["fps"], "-i", "pipe:0", "-vf", enc["filters"], "-c:v", codec]
    if codec in ("libx264", "libx265"):
        args += ["-crf", str(enc["crf"]), "-preset", enc["preset"]]
        if codec == "libx265":
            args += ["-tag:v", "hvc1", "-x265-params", "log-level=error"]
        if threads:
            args += ["-threads", str(threads)]
    else:  # NVENC: constant-quality VBR
        args += ["-rc", "vbr", "-cq", str(enc["crf"]), "-b:v", "0", "-preset", enc["preset"]]
    return args + [*enc["tags"], "-f", "matroska", str(out)]


class FrameEncoder:
    """Feed frames to an ffmpeg child that encodes them (at CPU priority ``nice`` below ours)."""

    def __init__(self, args: list[str], *, nice: int | None = None) -> None:
        self.proc = popen(args, nice=ENCODER_NICE if nice is None else nice, stdin=subprocess.PIPE,
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        grow_pipe(self.proc.stdin)
        self.errors = StderrTail(self.proc.stderr)
        self.written = 0

    def write(self, frames: np.ndarray) -> None:
        try:
            self.proc.stdin.write(memoryview(np.ascontiguousarray(frames)).cast("B"))
        except (BrokenPipeError, OSError) as exc:
            self.proc.wait()
            raise SegmentError(f"encoder failed after {self.written} frames (exit {self.proc.returncode}): "
                               f"{self.errors.text()}") from exc
        self.written += len(frames)

    def close(self) -> None:
        try:
            self.proc.stdin.close()
        except BrokenPipeError:
            pass
        rc = self.proc.wait()
        if rc != 0:
            raise SegmentError(f"encoder exited {rc} after {self.written} frames: {self.errors.text()}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
