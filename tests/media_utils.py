"""Small media helpers shared by tests: make test clips from real samples, probe results."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path


def make_clip(src: Path, dest: Path, *, width: int = 96, height: int = 54, seconds: float = 2.0,
              tone: int = 440) -> Path:
    """A small "legacy SD" clip with audio and a keyframe every 12 frames, from a real sample."""
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-i", str(src), "-f", "lavfi", "-i", f"sine=frequency={tone}:sample_rate=48000",
         "-map", "0:v:0", "-map", "1:a:0", "-t", str(seconds), "-vf", f"scale={width}:{height}:flags=area",
         "-r", "24", "-c:v", "libx264", "-g", "12", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest", str(dest)],
        check=True,
    )
    return dest


def probe(path: Path) -> dict:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-count_frames", "-show_streams", "-show_format", "-of", "json", str(path)],
        capture_output=True, text=True, check=True,
    ).stdout
    return json.loads(out)
