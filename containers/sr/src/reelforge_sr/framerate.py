"""Constant frame rate on request: whole source frames dropped or repeated, never retimed.

By default every output frame keeps its source frame's time (``timeline``): a variable-rate source stays
variable-rate. Where a user asks for a constant rate R (an editing system or a broadcast chain that needs
one), output frame *j* is due at ``t0 + j/R`` and shows the source frame on screen at that instant (the
last one whose time is ≤ ``t0 + j/R``), as a player would show it. A source frame that no instant lands on
is dropped (the model never sees it); one that several land on is upscaled once and written again.
Each source frame's count of output frames (``repeats``) is stored run-length encoded in the plan.
"""

from __future__ import annotations

from fractions import Fraction

from reelforge_sr.errors import PlanError

#: what ``--frame-rate`` takes besides a rate: keep the source's times, or the source's own nominal rate
MODES = ("source", "constant")
MAX_RATE = Fraction(240)


def parse(value: str) -> str | Fraction:
    """``source``, ``constant``, or a rate such as ``25``, ``29.97`` or ``30000/1001``."""
    if value in MODES:
        return value
    try:
        rate = Fraction(value).limit_denominator(1001) if "." in value else Fraction(value)
    except (ValueError, ZeroDivisionError) as exc:
        raise PlanError(f"--frame-rate must be source, constant or a rate like 25 or 30000/1001, not {value!r}") \
            from exc
    if not 0 < rate <= MAX_RATE:
        raise PlanError(f"--frame-rate {value} is outside (0, {MAX_RATE}] frames per second")
    return rate


def repeats(times: list[Fraction], end: Fraction, rate: Fraction) -> list[int]:
    """How many output frames each source frame fills on the grid ``times[0] + j/rate`` up to ``end``."""
    if not times:
        return []
    slots = max(1, round((end - times[0]) * rate))
    counts = [0] * len(times)
    k = 0
    for j in range(slots):
        due = times[0] + Fraction(j) / rate
        while k + 1 < len(times) and times[k + 1] <= due:
            k += 1
        counts[k] += 1
    return counts


def encode(values: list[int]) -> list[list[int]]:
    """Run-length encoding: ``[[value, count], ...]``."""
    rows: list[list[int]] = []
    for v in values:
        if rows and rows[-1][0] == v:
            rows[-1][1] += 1
        else:
            rows.append([v, 1])
    return rows


def decode(rows: list[list[int]]) -> list[int]:
    return [v for v, n in rows for _ in range(n)]


def plan_repeats(plan: dict) -> list[int] | None:
    """Each source frame's output count, or ``None`` when the plan keeps the source's times (``ivtc``: 0 for the
    frames inverse telecine drops, 1 for the others)."""
    frame_map = plan.get("frame_map") or {}
    if frame_map.get("mode") not in ("constant", "ivtc"):
        return None
    return decode(frame_map["repeats"])


def output_sources(plan: dict) -> list[int]:
    """For every output frame, the source frame it shows."""
    counts = plan_repeats(plan)
    if counts is None:
        return list(range(plan["total_frames"]))
    return [k for k, n in enumerate(counts) for _ in range(n)]


def output_frames(plan: dict) -> int:
    """Frames in the output (the planned source frames, unless a constant rate drops or repeats some)."""
    return int(plan.get("output_frames") or plan["total_frames"])
