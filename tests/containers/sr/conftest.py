"""Fixtures for the reelforge-sr worker tests: real weights, small clips made from the real samples."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
SHARED = Path(os.environ.get("REELFORGE_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path_factory):
    """Tests never download weights, nor use a download cache outside the test's temp dirs."""
    monkeypatch.setenv("REELFORGE_OFFLINE", "1")
    monkeypatch.setenv("REELFORGE_CACHE_DIR", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture(scope="session")
def model_dir() -> Path:
    path = Path(os.environ.get("REELFORGE_MODEL_DIR", SHARED / "models"))
    if not (path / "realesr-animevideov3.pth").is_file():
        pytest.skip(f"model weights not found in {path} (set REELFORGE_MODEL_DIR)")
    return path


@pytest.fixture(scope="session")
def video_dir() -> Path:
    path = SHARED / "video"
    if not (path / "tears_of_steel_clip_01.mp4").is_file():
        pytest.skip(f"sample clips not found in {path}")
    return path


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def ffprobe(path: Path, *args: str) -> dict:
    out = subprocess.run(["ffprobe", "-v", "error", "-of", "json", *args, str(path)], capture_output=True,
                         check=True, text=True).stdout
    return json.loads(out)


@pytest.fixture(scope="session")
def clips(tmp_path_factory, video_dir) -> dict[str, Path]:
    """Small test clips (≤ 36 frames, ≤ 64 px wide) made from the real samples, once per session."""
    d = tmp_path_factory.mktemp("clips")
    tos = video_dir / "tears_of_steel_clip_01.mp4"
    (d / "subs.srt").write_text("1\n00:00:00,000 --> 00:00:00,800\nHello\n\n2\n00:00:00,900 --> 00:00:01,400\nWorld\n")
    (d / "meta.txt").write_text(";FFMETADATA1\ntitle=ReelForge test\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=700\n"
                                "title=One\n[CHAPTER]\nTIMEBASE=1/1000\nSTART=700\nEND=1500\ntitle=Two\n")
    # 36 frames at 24000/1001 with camera motion, 2 audio streams, a subtitle stream and 2 chapters
    ffmpeg("-i", str(tos), "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=1.5015",
           "-f", "lavfi", "-i", "sine=frequency=660:sample_rate=44100:duration=1.5015", "-i", str(d / "subs.srt"),
           "-i", str(d / "meta.txt"), "-map", "0:v", "-map", "1:a", "-map", "2:a", "-map", "3:s",
           "-map_metadata", "4", "-map_chapters", "4", "-vf", "scale=64:36:flags=area,fps=24000/1001",
           "-t", "1.5015", "-c:v", "libx264", "-g", "12", "-c:a:0", "aac", "-c:a:1", "libmp3lame",
           "-c:s", "mov_text", "-metadata:s:a:0", "language=eng", "-metadata:s:a:1", "language=fra",
           "-metadata:s:s:0", "language=eng", str(d / "av.mp4"))
    # interlaced (top field first), 24 frames
    ffmpeg("-i", str(video_dir / "caminandes_clip_02.mp4"), "-vf", "scale=64:48,tinterlace=interleave_top,setfield=tff",
           "-r", "12", "-t", "2", "-c:v", "libx264", "-flags", "+ildct+ilme", "-x264opts", "tff=1", "-g", "12",
           str(d / "interlaced.mp4"))
    # anamorphic (64x48 stored, SAR 4:3 → 16:9 display) and 10-bit, 24 frames
    ffmpeg("-i", str(video_dir / "caminandes_clip_02.mp4"), "-vf", "scale=48:36:flags=area", "-t", "1",
           "-c:v", "libx264", "-pix_fmt", "yuv420p10le", "-aspect", "16:9", "-g", "12", str(d / "anamorphic10.mp4"))
    # WebM (no nb_frames: counted by decoding) with Vorbis audio, 24 frames
    ffmpeg("-i", str(video_dir / "big_buck_bunny_432_433.webm"), "-vf", "scale=64:36:flags=area", "-t", "1",
           "-c:v", "libvpx", "-b:v", "300k", "-c:a", "libvorbis", str(d / "clip.webm"))
    # audio only
    ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", str(d / "audio_only.m4a"))
    return {p.stem: p for p in d.iterdir() if p.suffix in {".mp4", ".webm", ".m4a"}}


def _run_pipeline(source: Path, workdir: Path, model_dir: Path, *plan_args: str, segment_seconds: str = "0.5",
                  model: str = "anime") -> dict:
    """plan → every segment → assemble through the CLI entry point, in process; returns the report."""
    from reelforge_sr.cli import main

    assert main(["-q", "plan", "--source", str(source), "--workdir", str(workdir), "--model", model,
                 "--segment-seconds", segment_seconds, *plan_args]) == 0
    plan = json.loads((workdir / "plan.json").read_text())
    for seg in plan["segments"]:
        assert main(["-q", "segment", "--workdir", str(workdir), "--index", str(seg["index"]),
                     "--model-dir", str(model_dir), "--threads", "2"]) == 0
    assert main(["-q", "assemble", "--workdir", str(workdir), "--quality-samples", "3", "--previews", "1"]) == 0
    return json.loads((workdir / "report.json").read_text())


@pytest.fixture
def pipeline(model_dir):
    """``pipeline(source, workdir, *plan_args, segment_seconds=..., model=...)`` → report.json content."""
    return lambda source, workdir, *args, **kw: _run_pipeline(source, workdir, model_dir, *args, **kw)
