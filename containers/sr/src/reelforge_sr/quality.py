"""Quality check: the output, downscaled back to the source size, against the source (PSNR, SSIM);
and side-by-side crops (source bicubic-upscaled | ReelForge) as PNG previews."""

from __future__ import annotations

import logging
import math
import subprocess
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812

from reelforge_sr import framerate
from reelforge_sr.ffmpeg_cli import FFMPEG
from reelforge_sr.frames_io import FrameDecoder, decode_args

log = logging.getLogger(__name__)
SSIM_C1, SSIM_C2 = 0.01**2, 0.03**2


def psnr(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * math.log10(peak * peak / mse)


def _gaussian(size: int = 11, sigma: float = 1.5) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float64) - size // 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    g = g / g.sum()
    return (g[:, None] * g[None, :])[None, None]


def ssim(a: np.ndarray, b: np.ndarray, peak: float = 255.0) -> float:
    """Mean SSIM of the luma (BT.601 weights) of two ``[H, W, 3]`` images, 11×11 Gaussian window."""
    w = torch.tensor([0.299, 0.587, 0.114], dtype=torch.float64)
    ya = (torch.from_numpy(a.astype(np.float64)) / peak @ w)[None, None]
    yb = (torch.from_numpy(b.astype(np.float64)) / peak @ w)[None, None]
    k = _gaussian(min(11, ya.shape[-1], ya.shape[-2]) | 1)
    mu_a, mu_b = F.conv2d(ya, k), F.conv2d(yb, k)
    saa = F.conv2d(ya * ya, k) - mu_a**2
    sbb = F.conv2d(yb * yb, k) - mu_b**2
    sab = F.conv2d(ya * yb, k) - mu_a * mu_b
    num = (2 * mu_a * mu_b + SSIM_C1) * (2 * sab + SSIM_C2)
    den = (mu_a**2 + mu_b**2 + SSIM_C1) * (saa + sbb + SSIM_C2)
    return float((num / den).mean())


def sample_indices(total: int, k: int) -> list[int]:
    return sorted({min(total - 1, int((i + 0.5) * total / k)) for i in range(k)})


def source_frame(plan: dict[str, Any], frame: int) -> np.ndarray:
    """Frame ``frame`` of the source, decoded exactly as the segment workers decode it (pre-roll included)."""
    seg = next(s for s in plan["segments"] if s["start_frame"] <= frame < s["end_frame"])
    geo, dec = plan["geometry"], plan["decode"]
    filters = f"{dec['filters']},select=eq(n\\,{frame - seg['start_frame'] + seg.get('preroll', 0)})"
    d = FrameDecoder(decode_args(plan["source"], plan["probe"]["video"]["index"], seg["seek"], 1, filters,
                                 dec["pix_fmt"]), geo["decode_width"], geo["decode_height"], dec["pix_fmt"], 1)
    try:
        out = d.read(1)
        d.finish()
    finally:
        d.kill()
    return out[0]


def output_frame(plan: dict[str, Any], output: Path, out_probe: dict[str, Any], frame: int, width: int,
                 height: int, flags: str) -> np.ndarray:
    """Frame ``frame`` of the output, resized to ``width``×``height`` and converted to the plan's RGB."""
    fps = Fraction(plan["timing"]["fps"])
    col, pix = plan["colour"], plan["decode"]["pix_fmt"]
    v = out_probe["video"]
    seek = None if frame == 0 else float(v["start_time"] - out_probe["start_time"] + (frame - Fraction(1, 2)) / fps)
    filters = (f"scale={width}:{height}:flags={flags}:in_color_matrix={col['matrix']}:in_range={col['range']},"
               f"format={pix}")
    d = FrameDecoder(decode_args(str(output), v["index"], seek, 1, filters, pix), width, height, pix, 1)
    try:
        out = d.read(1)
        d.finish()
    finally:
        d.kill()
    return out[0]


def write_png(path: Path, image: np.ndarray) -> None:
    """An RGB ``[H, W, 3]`` uint8 array as PNG (via ffmpeg)."""
    h, w, _ = image.shape
    proc = subprocess.run([FFMPEG, "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}",
                           "-i", "pipe:0", "-frames:v", "1", "-c:v", "png", "-f", "image2", str(path)],
                          input=np.ascontiguousarray(image).tobytes(), capture_output=True, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"writing {path.name} failed: {proc.stderr.decode(errors='replace')[-300:]}")


def bicubic(image: np.ndarray, scale: int, peak: float) -> np.ndarray:
    x = torch.from_numpy(image.astype(np.float32)).permute(2, 0, 1)[None] / peak
    y = F.interpolate(x, scale_factor=scale, mode="bicubic", align_corners=False).clamp(0, 1)
    return (y[0].permute(1, 2, 0) * peak).round().numpy()


def to8(image: np.ndarray, peak: float) -> np.ndarray:
    return image.astype(np.uint8) if peak == 255.0 else (image.astype(np.float64) / 257).round().astype(np.uint8)


#: Below this (mean, or any sampled frame) the output is far from its source: a warning in the report and the
#: success message. ``bench/quality_calibration.py`` on the 8 sample clips (144 lines, x4, auto model): every
#: sampled frame at 25.2 dB or more (worst: tears_of_steel, live action); a broken output seen in use (an
#: output downscaled vs its source) gave 16.8 dB mean, 12-13 dB on 3 of 5 samples.
WARN_PSNR_DB = 22.0


def warning(rows: list[dict[str, Any]], mean: float | None) -> str | None:
    """Why this output looks far from its source, or ``None``."""
    worst = min(rows, key=lambda r: r["psnr_db"], default=None)
    if worst is None or (mean is not None and mean >= WARN_PSNR_DB and worst["psnr_db"] >= WARN_PSNR_DB):
        return None
    return (f"low consistency with the source: PSNR {mean:.1f} dB mean, {worst['psnr_db']:.1f} dB at frame "
            f"{worst['frame']} (ordinary content stays above {WARN_PSNR_DB:.0f} dB); check the previews")


def check(plan: dict[str, Any], output: Path, out_probe: dict[str, Any], previews_dir: Path, *, samples: int = 5,
          previews: int = 3, crop: tuple[int, int] = (128, 96)) -> dict[str, Any]:
    """PSNR/SSIM on ``samples`` frames and up to ``previews`` side-by-side crop PNGs."""
    geo = plan["geometry"]
    scale = plan["settings"]["scale"]
    w, h = geo["decode_width"], geo["decode_height"]
    peak = 255.0 if plan["decode"]["pix_fmt"] == "rgb24" else 65535.0
    previews_dir.mkdir(parents=True, exist_ok=True)
    rows, files = [], []
    shows = framerate.output_sources(plan)  # the source frame each output frame shows
    for n, frame in enumerate(sample_indices(len(shows), samples)):
        src = source_frame(plan, shows[frame])
        down = output_frame(plan, output, out_probe, frame, w, h, "area")
        rows.append({"frame": frame, "source_frame": shows[frame], "psnr_db": round(psnr(src, down, peak), 3),
                     "ssim": round(ssim(src, down, peak), 5)})
        if n < previews:
            big = output_frame(plan, output, out_probe, frame, geo["model_width"], geo["model_height"], "lanczos")
            cw, ch = min(crop[0], w), min(crop[1], h)
            x0, y0 = (w - cw) // 2, (h - ch) // 2
            left = bicubic(src[y0:y0 + ch, x0:x0 + cw], scale, peak)
            right = big[y0 * scale:(y0 + ch) * scale, x0 * scale:(x0 + cw) * scale]
            gap = np.full((ch * scale, 4, 3), peak)
            side = np.concatenate([left, gap, right], axis=1)
            path = previews_dir / f"frame{frame:06d}_bicubic_vs_reelforge.png"
            write_png(path, to8(side, peak))
            files.append(path.name)
    finite = [r["psnr_db"] for r in rows if math.isfinite(r["psnr_db"])]
    mean = round(float(np.mean(finite)), 3) if finite else None
    return {
        "method": "output area-downscaled to the source size vs the source, RGB PSNR and luma SSIM",
        "frames": rows,
        "psnr_db_mean": mean,
        "warning": warning([r for r in rows if math.isfinite(r["psnr_db"])], mean),
        "ssim_mean": round(float(np.mean([r["ssim"] for r in rows])), 5) if rows else None,
        "previews": files,
        "preview_layout": "left: source crop bicubic-upscaled; right: ReelForge",
    }
