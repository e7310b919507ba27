"""Per-frame presentation times and keyframes of the video stream, in display order.

Frame *n* of a video is the *n*-th smallest presentation timestamp. The cheap way reads packets
(no decoding); it is trusted only when the packet count equals the probed frame count. Otherwise
(e.g. packed or invisible frames) frames are decoded and their best-effort timestamps used.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from reelforge_sr.errors import PlanError
from reelforge_sr.ffmpeg_cli import FFPROBE, run


@dataclass
class FrameIndex:
    times: list[Fraction]  # seconds, sorted, one per frame
    keyframes: list[int]  # frame numbers of keyframes
    method: str  # "packets" | "frames"

    def __len__(self) -> int:
        return len(self.times)

    def seek_before(self, frame: int) -> Fraction | None:
        """A time strictly between frame-1 and frame (None for frame 0): seeking there yields ``frame`` first."""
        if frame <= 0:
            return None
        return (self.times[frame - 1] + self.times[frame]) / 2


def _rows(path: Path, stream: int, section: str, entries: str) -> list[dict[str, str]]:
    out = run([FFPROBE, "-v", "error", "-select_streams", str(stream), "-show_entries", f"{section}={entries}",
               "-of", "compact=p=0:nk=0", str(path)], what=f"ffprobe {section}s of {path.name}", timeout=None).stdout
    rows = []
    for line in out.decode().splitlines():
        if "=" in line:
            rows.append(dict(item.split("=", 1) for item in line.split("|") if "=" in item))
    return rows


def _time_base(path: Path, stream: int) -> Fraction:
    out = run([FFPROBE, "-v", "error", "-select_streams", str(stream), "-show_entries", "stream=time_base",
               "-of", "compact=p=0:nk=1", str(path)], what="ffprobe time_base").stdout.decode().split()
    # A rotated stream (display-matrix side data) makes compact output end the line with an empty
    # side-data field: "1/12288|". Keep the first field only (issue 10: rotated sources failed to plan).
    return Fraction(out[0].split("|", 1)[0]) if out else Fraction(1, 1000)


def _ts(value: str | None) -> int | None:
    return int(value) if value and value.lstrip("-").isdigit() else None


def from_packets(path: Path, stream: int) -> FrameIndex | None:
    tb = _time_base(path, stream)
    items: list[tuple[int, bool]] = []
    for row in _rows(path, stream, "packet", "pts,dts,flags"):
        flags = row.get("flags", "")
        if "D" in flags:  # discarded by the demuxer (edit list): never output by the decoder
            continue
        ts = _ts(row.get("pts"))
        if ts is None:
            ts = _ts(row.get("dts"))
        if ts is None:
            return None
        items.append((ts, "K" in flags))
    items.sort(key=lambda it: it[0])
    if len({ts for ts, _ in items}) != len(items):
        return None  # duplicate timestamps: cannot order frames by time
    return FrameIndex([ts * tb for ts, _ in items], [i for i, (_, k) in enumerate(items) if k], "packets")


def from_frames(path: Path, stream: int) -> FrameIndex:
    tb = _time_base(path, stream)
    times: list[Fraction] = []
    keys: list[int] = []
    for row in _rows(path, stream, "frame", "best_effort_timestamp,key_frame"):
        ts = _ts(row.get("best_effort_timestamp"))
        if ts is None:
            raise PlanError(f"{path}: frame {len(times)} has no timestamp; cannot cut frame-accurate segments")
        if row.get("key_frame") == "1":
            keys.append(len(times))
        times.append(ts * tb)
    if any(b <= a for a, b in zip(times, times[1:], strict=False)):
        raise PlanError(f"{path}: frame timestamps are not increasing; cannot cut frame-accurate segments")
    return FrameIndex(times, keys or [0], "frames")


def build(path: Path, stream: int, expected_frames: int) -> FrameIndex:
    """The frame index, cross-checked against the probed frame count."""
    index = from_packets(path, stream)
    if index is None or len(index) != expected_frames:
        index = from_frames(path, stream)
    if not index.times:
        raise PlanError(f"{path}: no frames found")
    return index
