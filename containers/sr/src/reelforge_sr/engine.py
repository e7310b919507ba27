"""Batched, tiled super-resolution of RGB frames with torch.

* Frames arrive as ``uint8``/``uint16`` arrays ``[N, H, W, 3]``. Viewed as NCHW they are already
  channels_last, the layout that is ~1.9x faster for these convs on CPU and the one cuDNN prefers.
* ``torch.inference_mode``; fp16 on CUDA; on CPU bf16 where the CPU has native bf16 dot products
  (AVX512-BF16/AMX), else fp32 (``precision`` overrides).
* A forward pass handles at most ``max_pixels`` input pixels: small frames are batched together, a
  frame larger than the budget is cut into tiles that overlap by the network's receptive radius
  (≥ 17 px), so tiled output equals whole-frame output.
* ``scale`` below the network's native scale resizes the output with area averaging (e.g. x3 from an x4
  network).
"""

from __future__ import annotations

import copy
import functools
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from reelforge_sr.errors import ModelError
from reelforge_sr.models.compact import SRVGGNetCompact

log = logging.getLogger(__name__)

MIN_OVERLAP = 17
#: Input pixels per forward pass. On CPU, work units up to ~400×400 cost the same per pixel while whole
#: 640×360 frames are memory-bound (2 tiles are faster); on a GPU, large batches keep it busy.
DEFAULT_MAX_PIXELS = {"cpu": 400 * 400, "cuda": 8 * 1920 * 1080}
#: Frames per pass cap: small batches keep decode/infer/encode overlapping within a segment.
DEFAULT_MAX_BATCH = {"cpu": 8, "cuda": 16}


def default_threads() -> int:
    """``$SLURM_CPUS_PER_TASK`` if set, else the CPUs this process may use."""
    env = os.environ.get("SLURM_CPUS_PER_TASK", "").strip()
    if env.isdigit() and int(env) > 0:
        return int(env)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def pick_device(device: str = "auto") -> torch.device:
    """``auto`` → CUDA when available, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError("--device cuda was asked for but torch sees no CUDA device")
    return torch.device(device)


@functools.cache
def cpu_has_fast_bf16() -> bool:
    """True when the CPU has bf16 dot-product instructions (AVX512-BF16 or AMX) that oneDNN uses."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return torch.backends.mkldnn.is_available() and ("avx512_bf16" in flags or "amx_bf16" in flags)


def pick_dtype(device: torch.device, precision: str = "auto") -> torch.dtype:
    """``auto``: fp16 on CUDA; on CPU bf16 where the CPU computes it natively (measured 1.8x faster than
    fp32 on a Zen 4 core, output within 50 dB PSNR of fp32), else fp32."""
    table = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
    if precision == "auto":
        if device.type == "cuda":
            return torch.float16
        return torch.bfloat16 if cpu_has_fast_bf16() else torch.float32
    if precision not in table:
        raise ModelError(f"unknown precision {precision!r}")
    return table[precision]


@dataclass
class EngineInfo:
    device: str
    dtype: str
    threads: int
    max_pixels: int
    overlap: int
    native_scale: int
    scale: int


class Upscaler:
    """Upscale batches of frames with one network."""

    def __init__(self, net: SRVGGNetCompact, *, scale: int | None = None, device: str = "auto",
                 precision: str = "auto", threads: int | None = None, max_pixels: int | None = None,
                 max_batch: int | None = None) -> None:
        self.device = pick_device(device)
        self.dtype = pick_dtype(self.device, precision)
        self.threads = threads or default_threads()
        if self.device.type == "cpu":
            torch.set_num_threads(self.threads)
        self.native_scale = net.upscale
        self.scale = scale or net.upscale
        if not 1 <= self.scale <= self.native_scale:
            raise ModelError(f"scale x{self.scale} is not possible with an x{self.native_scale} network")
        self.overlap = max(MIN_OVERLAP, net.receptive_radius)
        self.max_pixels = max_pixels or DEFAULT_MAX_PIXELS.get(self.device.type, DEFAULT_MAX_PIXELS["cuda"])
        self.max_batch = max_batch or DEFAULT_MAX_BATCH.get(self.device.type, 16)
        # a copy: nn.Module.to() works in place and the caller's network must keep its fp32 weights
        self.net = copy.deepcopy(net).to(self.device, dtype=self.dtype, memory_format=torch.channels_last).eval()

    @property
    def info(self) -> EngineInfo:
        return EngineInfo(str(self.device), str(self.dtype).removeprefix("torch."), self.threads, self.max_pixels,
                          self.overlap, self.native_scale, self.scale)

    def frames_per_pass(self, height: int, width: int) -> int:
        """How many whole frames one forward pass takes (1 when the frame is tiled)."""
        n = max(1, self.max_pixels // max(1, height * width))
        return min(n, self.max_batch)

    @torch.inference_mode()
    def __call__(self, frames: np.ndarray) -> np.ndarray:
        """``[N, H, W, 3]`` uint8/uint16 → ``[N, H·s, W·s, 3]`` of the same dtype."""
        if frames.ndim != 4 or frames.shape[-1] != 3:
            raise ModelError(f"expected [N, H, W, 3] frames, got {frames.shape}")
        peak = 255.0 if frames.dtype == np.uint8 else 65535.0
        n, h, w, _ = frames.shape
        step = self.frames_per_pass(h, w)
        outs = []
        for i in range(0, n, step):
            chunk = np.ascontiguousarray(frames[i:i + step])
            x = torch.from_numpy(chunk if chunk.flags.writeable else chunk.copy())
            if x.dtype == torch.uint16:
                x = x.to(torch.int32)
            x = x.to(self.device, non_blocking=True).permute(0, 3, 1, 2)  # NHWC memory = channels_last NCHW
            x = x.to(torch.float32).mul_(1.0 / peak).to(self.dtype)
            y = self._forward(x) if h * w <= self.max_pixels else self._forward_tiled(x)
            if self.scale != self.native_scale:
                y = F.interpolate(y.float(), size=(h * self.scale, w * self.scale), mode="area")
            y = y.float().clamp_(0, 1).mul_(peak).round_()
            y = y.to(torch.uint8 if peak == 255.0 else torch.int32).permute(0, 2, 3, 1).contiguous().cpu().numpy()
            outs.append(y if peak == 255.0 else y.astype(np.uint16))
        return outs[0] if len(outs) == 1 else np.concatenate(outs)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.contiguous(memory_format=torch.channels_last))

    def tile_grid(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """Core tiles ``(y0, y1, x0, x1)``: the fewest whose padded size fits ``max_pixels``."""
        p = self.overlap
        best: tuple[int, int, int, int] | None = None  # (tiles, padded pixels, rows, cols)
        for rows in range(1, height + 1):
            th = math.ceil(height / rows)
            if (min(th + 2 * p, height)) * 1 > self.max_pixels:
                continue
            for cols in range(1, width + 1):
                tw = math.ceil(width / cols)
                padded = min(th + 2 * p, height) * min(tw + 2 * p, width)
                if padded <= self.max_pixels or (th <= 16 and tw <= 16):
                    cand = (rows * cols, padded * rows * cols, rows, cols)
                    best = min(best, cand) if best else cand
                    break
            if best and rows > best[0]:
                break
        _, _, rows, cols = best or (1, 0, math.ceil(height / 16), math.ceil(width / 16))
        ys = [round(height * r / rows) for r in range(rows + 1)]
        xs = [round(width * c / cols) for c in range(cols + 1)]
        return [(ys[r], ys[r + 1], xs[c], xs[c + 1]) for r in range(rows) for c in range(cols)]

    def _forward_tiled(self, x: torch.Tensor) -> torch.Tensor:
        n, c, h, w = x.shape
        s, p = self.native_scale, self.overlap
        out = torch.empty((n, c, h * s, w * s), dtype=self.dtype, device=self.device)
        out = out.contiguous(memory_format=torch.channels_last)
        for y0, y1, x0, x1 in self.tile_grid(h, w):
            py0, py1, px0, px1 = max(0, y0 - p), min(h, y1 + p), max(0, x0 - p), min(w, x1 + p)
            tile = self._forward(x[:, :, py0:py1, px0:px1])
            oy, ox = (y0 - py0) * s, (x0 - px0) * s
            out[:, :, y0 * s:y1 * s, x0 * s:x1 * s] = tile[:, :, oy:oy + (y1 - y0) * s, ox:ox + (x1 - x0) * s]
        return out
