"""Held-frame reuse: a decoded frame showing the same picture as the last model input reuses that output.

Animation is drawn on twos and threes (one drawing held for 2–3 frames); the copies differ only by codec
noise. ``same_picture`` compares a decoded frame (the model's input) with the *last frame the model was
run on* (not merely the previous frame: small differences cannot pile up along a slow pan or fade), in
8-bit levels over the R, G and B planes. All four bounds must hold:

* frame PSNR of the difference ≥ ``psnr_db`` (50 dB: RMS ≤ 0.81 levels) — the super-resolution model
  amplifies input differences (measured: 1–7 dB lower PSNR at its output), so 50 dB keeps a reused
  output well within 45 dB of a fresh one;
* every ``block``×``block`` block's RMS difference ≤ ``block_rms`` (4 levels) — a small local change (a mouth,
  a blink) that the frame-wide PSNR averages away on a large frame breaks it;
* every block's mean difference ≤ ``block_mean`` (2.5 levels) — codec noise averages out in a block, a local
  brightness change does not;
* each plane's frame-wide mean difference ≤ ``dc`` (0.5 levels) — fades and flashes shift it; codec noise
  does not. A cut changes everything and fails all four.

Calibration (the ``tests/containers/sr/test_held_frames.py`` clip: sintel at 64×36, drawings held for 2/3
frames, ``noise=alls=2`` then x264 CRF 18): held copies are 45.8 dB to identical (most ≥ 50 dB), block RMS
≤ 3.9, block mean ≤ 1.8, plane mean ≤ 0.16; different drawings ≤ 34.3 dB. A 45.8 dB pair gave 43.4 dB
after the anime model (x2), hence 50 dB: through the pipeline (x2, lossless output) the clip then takes 23
model calls for 50 frames, every frame ≥ 52.4 dB PSNR-Y from full processing. Slow live-action motion at
64×36 after x264 (tears_of_steel) comes within 48.0–48.5 dB between different frames: rejected. The
live-action samples at native size, decoded as the worker does (``test_held_live_action.py``): different
frames stay ≤ 35.7 dB apart (tears_of_steel; pixabay_bee ≤ 30.0, pixabay_butterfly ≤ 28.1); the only closer
pairs are frames the stock encoder repeated, frame 1 of 0 in both Pixabay clips (a 339-byte P frame and a
71-byte B frame after 57 / 33 kB I frames; the next frame is 23 / 18 dB away). The bee's (62.1 dB, block RMS
2.2, block mean 1.9, plane mean 0.01; 1.6 % of pixels off by ≤ 5 levels) is reused, correctly; the
butterfly's (69.9 dB) is not: a few residual pixels (up to 25 levels) put one block at RMS 4.7.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Bound:
    """How close a frame must be to the last model input to reuse its output (8-bit levels)."""

    psnr_db: float = 50.0
    block: int = 8
    block_rms: float = 4.0
    block_mean: float = 2.5
    dc: float = 0.5

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Bound:
        return cls(**{k: type(getattr(cls(), k))(v) for k, v in data.items()})


def _block_sums(plane: np.ndarray, block: int) -> np.ndarray:
    h, w = plane.shape
    rows = np.add.reduceat(plane, np.arange(0, h, block), axis=0)
    return np.add.reduceat(rows, np.arange(0, w, block), axis=1)


def _delta(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = a.astype(np.float32) - b.astype(np.float32)
    if a.dtype == np.uint16:
        d /= 257.0
    return d


def _psnr_db(d: np.ndarray) -> float:
    flat = d.reshape(-1)
    mse = float(np.dot(flat, flat)) / max(flat.size, 1)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _local(d: np.ndarray, block: int) -> dict[str, float]:
    """Worst block RMS, worst block mean and worst plane mean (channel sums by hand: ``mean(axis=2)`` over
    3 values per pixel is several times slower)."""
    r, g, b = d[..., 0], d[..., 1], d[..., 2]
    counts = _block_sums(np.ones(r.shape, np.float32), block) * 3
    return {
        "block_rms": float(np.sqrt((_block_sums(r * r + g * g + b * b, block) / counts).max())),
        "block_mean": float(np.abs(_block_sums(r + g + b, block) / counts).max()),
        "dc": float(np.abs(d.reshape(-1, 3).mean(axis=0)).max()),
    }


def difference(a: np.ndarray, b: np.ndarray, block: int = 8) -> dict[str, float]:
    """PSNR, worst block RMS, worst block mean and worst plane mean of ``a - b`` (``[H, W, 3]``, 8-bit levels)."""
    d = _delta(a, b)
    return {"psnr_db": _psnr_db(d), **_local(d, block)}


def same_picture(a: np.ndarray, b: np.ndarray, bound: Bound) -> bool:
    """True when ``a`` may reuse the upscaled output of ``b`` (see the module doc)."""
    if a.shape != b.shape:
        return False
    if np.array_equal(a, b):
        return True
    d = _delta(a, b)
    if _psnr_db(d) < bound.psnr_db:  # most different pictures stop here, before the block sums
        return False
    m = _local(d, bound.block)
    return m["block_rms"] <= bound.block_rms and m["block_mean"] <= bound.block_mean and m["dc"] <= bound.dc


def plan_reuse(frames: np.ndarray, shown: np.ndarray, anchor: np.ndarray | None,
               bound: Bound | None) -> tuple[list[int], list[int]]:
    """Which frames go through the model, and for each shown frame which output it shows.

    ``shown[i] > 0`` for frames that appear in the output. Returns ``(calls, sources)``: ``calls`` indexes
    ``frames`` (model inputs, in order); ``sources`` has one entry per shown frame: ``k ≥ 0`` is the k-th
    model output, ``-1`` the output of ``anchor`` (the last model input before this batch).
    """
    calls: list[int] = []
    sources: list[int] = []
    for i in np.flatnonzero(shown > 0):
        ref = frames[calls[-1]] if calls else anchor
        if bound is not None and ref is not None and same_picture(frames[i], ref, bound):
            sources.append(len(calls) - 1)
        else:
            calls.append(int(i))
            sources.append(len(calls) - 1)
    return calls, sources
