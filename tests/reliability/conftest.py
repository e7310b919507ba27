"""Fixtures for the reliability tests: the e2e session's Airflow and AWS clients, and a bad-input corpus."""

from __future__ import annotations

import os
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from airflow_local import LocalAirflow
from tests.containers.sr.conftest import clips, model_dir, pipeline, video_dir  # noqa: F401  (reused)
from tests.e2e import conftest as e2e
from tests.e2e.conftest import aws, sns_inbox  # noqa: F401

RELIABILITY_STATE = Path(os.environ.get("REELFORGE_STATE_DIR", e2e.ROOT / ".local-stack"))


@pytest.fixture(scope="session")
def airflow() -> Iterator[LocalAirflow]:
    """The one local Airflow of the session (tests/e2e/conftest.py starts it).

    pytest keeps one session fixture per conftest, so when tests/e2e ran first in this session its
    Airflow is already up on :8080: reuse it instead of failing to start a second one.
    """
    client = LocalAirflow(RELIABILITY_STATE / "logs" / "airflow-e2e.log")
    if client._healthy():
        yield client
        return
    yield from e2e.airflow._get_wrapped_function()()


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def _tiny(dest: Path, *extra: str, size: str = "64x36", seconds: float = 1.0, rate: int = 12) -> Path:
    ffmpeg("-f", "lavfi", "-i", f"testsrc=s={size}:d={seconds}:r={rate}", *extra, str(dest))
    return dest


@pytest.fixture(scope="session")
def bad_inputs(tmp_path_factory, clips) -> dict[str, Path]:  # noqa: F811
    """Every input of issue 10's corpus, generated here (≤ 64 px, ≤ 2 s, except 1x1 and 16K)."""
    d = tmp_path_factory.mktemp("bad-inputs")
    out: dict[str, Path] = {}
    (d / "zero.mp4").touch()
    out["zero_byte"] = d / "zero.mp4"
    (d / "random.mp4").write_bytes(os.urandom(16384))  # noqa: S311 - content, not a secret
    out["random_bytes"] = d / "random.mp4"
    full = _tiny(d / "full.mp4", "-c:v", "libx264", "-movflags", "+faststart")
    data = full.read_bytes()
    moov = data.find(b"moov")
    assert 0 < moov < data.find(b"mdat"), "faststart puts moov before mdat"
    # the moov atom removed entirely (its box renamed to 'free'): an MP4 without its index
    size = struct.unpack(">I", data[moov - 4:moov])[0]
    (d / "truncated.mp4").write_bytes(data[:moov - 4] + data[moov - 4 + size:])
    out["truncated_no_moov"] = d / "truncated.mp4"
    ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", "-f", "mp4", str(d / "audio_only.mp4"))
    out["audio_only"] = d / "audio_only.mp4"
    out["one_by_one"] = _tiny(d / "1x1.mp4", "-c:v", "libx264", "-pix_fmt", "yuv444p", size="1x1")
    # a real 15360x8640 H.264 frame at the worst quality: ~0.4 MB, ~2 s to make
    ffmpeg("-f", "lavfi", "-i", "color=black:s=15360x8640:d=0.04:r=25", "-frames:v", "1", "-c:v", "libx264",
           "-preset", "ultrafast", "-crf", "51", str(d / "16k.mp4"))
    out["declared_16k"] = d / "16k.mp4"
    # VFR: 12 frames at 12 fps, then 36 at 24 fps, timestamps kept as they are
    out["vfr"] = _tiny(d / "vfr.mp4", "-vf", "setpts='if(lt(N,12),N/12,1+(N-12)/24)/TB'", "-fps_mode", "vfr",
                       "-c:v", "libx264", seconds=2.0, rate=24)
    rotated = _tiny(d / "plain.mp4", "-c:v", "libx264")
    ffmpeg("-i", str(rotated), "-c", "copy", "-metadata:s:v:0", "rotate=90", str(d / "rotated.mp4"))
    out["rotated"] = d / "rotated.mp4"
    out["odd_dimensions"] = _tiny(d / "odd.mp4", "-c:v", "libx264", "-pix_fmt", "yuv444p", size="63x35")
    out["ten_bit"] = clips["anamorphic10"]
    out["interlaced"] = clips["interlaced"]
    # a Matroska file that declares 100x its real duration (24 frames)
    webm = bytearray(clips["clip"].read_bytes())
    i = webm.find(b"\x44\x89\x88")  # Duration element, 8-byte float
    (value,) = struct.unpack(">d", webm[i + 3:i + 11])
    webm[i + 3:i + 11] = struct.pack(">d", value * 100)
    (d / "long.webm").write_bytes(bytes(webm))
    out["long_duration_few_frames"] = d / "long.webm"
    (d / "notes.txt").write_text("shot list, not a video\n")
    out["non_video"] = d / "notes.txt"
    return out
