"""Every output frame at its source frame's presentation time, and the check that it is.

Segments are encoded on a constant-rate grid (frame *k* at *k*/fps). Before muxing, each frame's
timestamp is moved from the grid to its source time, so a variable-frame-rate source stays
variable-rate (no retiming: a part at 30 fps is not played at the average rate).

The move is one ``setts`` bitstream filter (stream copy, no re-encode). Its expression cannot read a
table, so the source times are fitted by straight runs (``frame_runs``): every frame within a small
tolerance of its run's line. A constant-rate source is one run; a film that switches rate has one run
per stretch; rounded (millisecond) timestamps of a constant rate stay one run. The expression picks
the run by a balanced ``if`` tree on the frame number (depth log2(runs)).

``av_offsets`` measures the result on the muxed file: each output frame against its source frame,
relative to the audio, whose timestamps are copied from the source.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

#: ffmpeg takes the filter as one argument, and Linux caps one argument at 128 KiB.
MAX_FILTER_CHARS = 120_000


def track_timescale(fps: Fraction) -> tuple[int, int]:
    """MP4 timescale T (a multiple of the rate's numerator, ≥ 10000) and ticks per grid frame."""
    k = max(1, math.ceil(10000 / fps.numerator))
    return fps.numerator * k, fps.denominator * k


@dataclass(frozen=True)
class Run:
    """Frames ``first``… sit at ``start + (k - first) * step`` ticks (relative to the first frame)."""

    first: int
    start: int
    step: Fraction

    def to_list(self) -> list:
        return [self.first, self.start, str(self.step)]

    @classmethod
    def from_list(cls, row: list) -> Run:
        return cls(int(row[0]), int(row[1]), Fraction(row[2]))


def _fit(ticks: list[int], tolerance: int) -> list[Run]:
    """Greedy straight runs: extend while some slope keeps every frame of the run within ``tolerance``."""
    runs: list[Run] = []
    a = 0
    n = len(ticks)
    while a < n:
        lo, hi = Fraction(-(10**18)), Fraction(10**18)
        b = a + 1
        while b < n:
            d = b - a
            new_lo = max(lo, Fraction(ticks[b] - ticks[a] - tolerance, d))
            new_hi = min(hi, Fraction(ticks[b] - ticks[a] + tolerance, d))
            if new_lo > new_hi:
                break
            lo, hi = new_lo, new_hi
            b += 1
        if b == a + 1:
            step = Fraction(ticks[a + 1] - ticks[a]) if a + 1 < n else Fraction(0)
        else:
            step = _simple_between(lo, hi)
        runs.append(Run(a, ticks[a], step))
        a = b
    return runs


def _simple_between(lo: Fraction, hi: Fraction) -> Fraction:
    """The middle of ``[lo, hi]`` (least worst error), as a short rational (the expression stays short)."""
    mid = (lo + hi) / 2
    candidate = mid.limit_denominator(10_000)
    return candidate if lo <= candidate <= hi else mid


def frame_runs(times: list[Fraction], fps: Fraction) -> list[Run]:
    """Runs that place every frame within 1/20 of a frame of its source time.

    Only where the filter would not fit in one argument (timestamps that jitter frame to frame, over
    thousands of frames) is the tolerance widened, up to one frame: the A/V check still holds.
    """
    if not times:
        return []
    timescale, frame_ticks = track_timescale(fps)
    ticks = [round((t - times[0]) * timescale) for t in times]
    tolerance = max(1, frame_ticks // 20)
    while True:
        runs = _fit(ticks, tolerance)
        if len(setts_filter(runs, frame_ticks)) <= MAX_FILTER_CHARS or tolerance >= frame_ticks:
            return runs
        tolerance = min(frame_ticks, tolerance * 2)


def _value(run: Run) -> str:
    step = f"{run.step.numerator}/{run.step.denominator}" if run.step.denominator != 1 else str(run.step.numerator)
    return f"{run.start}+(ld(0)-{run.first})*{step}"


def _tree(runs: list[Run]) -> str:
    """The run of frame ``ld(0)`` by a balanced ``if`` tree (frames before the first run extend it)."""
    if len(runs) == 1:
        return _value(runs[0])
    mid = len(runs) // 2
    return f"if(lt(ld(0),{runs[mid].first}),{_tree(runs[:mid])},{_tree(runs[mid:])})"


def setts_filter(runs: list[Run], frame_ticks: int) -> str:
    """The ``-bsf:v`` value that moves grid timestamps (``k * frame_ticks``) onto the runs."""
    tree = _tree(runs)

    def expr(var: str) -> str:
        return f"st(0,round({var}/{frame_ticks}));round({tree})"

    return f"setts=pts='{expr('PTS')}':dts='{expr('DTS')}'"


def seconds_of(runs: list[Run], frame: int, timescale: int) -> float:
    """Where ``frame`` lands (seconds after the first frame)."""
    run = next(r for r in reversed(runs) if r.first <= frame) if frame >= runs[0].first else runs[0]
    return float(round(run.start + (frame - run.first) * run.step) / timescale)


@dataclass(frozen=True)
class Offsets:
    frames: int
    worst_frame_s: float  # output frame time vs source frame time (both from their file's start)
    worst_av_s: float  # the same, less the audio's own shift: what a viewer sees as lip sync
    worst_frame: int

    def to_dict(self) -> dict:
        return {"frames_checked": self.frames, "worst_frame_offset_s": round(self.worst_frame_s, 6),
                "worst_av_offset_s": round(self.worst_av_s, 6), "worst_at_frame": self.worst_frame}


def av_offsets(source_times: list[Fraction], source_start: float, source_audio_start: float | None,
               output_times: list[Fraction], output_start: float, output_audio_start: float | None) -> Offsets:
    """Frame-by-frame timing of the output against the source (times in display order)."""
    n = min(len(source_times), len(output_times))
    audio_shift = 0.0
    if source_audio_start is not None and output_audio_start is not None:
        audio_shift = (output_audio_start - output_start) - (source_audio_start - source_start)
    worst, worst_av, at = 0.0, 0.0, 0
    for k in range(n):
        shift = float(output_times[k]) - output_start - (float(source_times[k]) - source_start)
        if abs(shift - audio_shift) > abs(worst_av) or k == 0:
            worst_av, at = shift - audio_shift, k
        if abs(shift) > abs(worst):
            worst = shift
    return Offsets(n, worst, worst_av, at)


def within_one_frame(offsets: Offsets, fps: Fraction) -> bool:
    return math.isfinite(offsets.worst_av_s) and abs(offsets.worst_av_s) <= float(1 / fps) + 1e-6
