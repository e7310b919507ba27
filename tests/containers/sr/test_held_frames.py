"""Held-frame reuse: drawings held on twos and threes are upscaled once each; nothing else is reused.

The held clip is built here: 20 different pictures of real footage (64x36), held for 2, 3, 2, 3, ... frames
(50 frames), with temporal noise added and then x264 (CRF 18) compression, so held copies differ by codec noise.
Expected counts come from that construction; quality is measured against the same clip with reuse off
(both outputs encoded losslessly, so that only reuse can tell them apart).
"""

from __future__ import annotations

import subprocess

import numpy as np
import pytest

from reelforge_sr.held import Bound, difference, plan_reuse, same_picture

from .test_ivtc import luma, psnr_y
from .test_timing import frame_times

W, H = 64, 36
HOLDS = [2, 3] * 10  # 20 drawings, 50 frames


def decode_rgb(path, vf: str = "null", frames: int | None = None, size: tuple[int, int] = (W, H)) -> np.ndarray:
    args = ["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", "-vf", vf, "-fps_mode", "passthrough"]
    args += ["-frames:v", str(frames)] if frames else []
    raw = subprocess.run([*args, "-pix_fmt", "rgb24", "-f", "rawvideo", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, size[1], size[0], 3)


@pytest.fixture(scope="module")
def held_clip(tmp_path_factory, video_dir):
    d = tmp_path_factory.mktemp("held")
    drawings = decode_rgb(video_dir / "sintel_clip_03.mp4", f"fps=10,scale={W}:{H}:flags=area")[:len(HOLDS)]
    assert len(drawings) == len(HOLDS)
    frames = np.repeat(drawings, HOLDS, axis=0)
    clip = d / "held.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{W}x{H}",
                    "-framerate", "24000/1001", "-i", "-", "-vf", "noise=alls=2:allf=t", "-c:v", "libx264",
                    "-crf", "18", "-pix_fmt", "yuv420p", str(clip)], input=frames.tobytes(), check=True)
    assert len(frame_times(clip)) == sum(HOLDS)
    return clip


def test_held_drawings_are_upscaled_once_within_45_db_of_full_processing(held_clip, tmp_path, pipeline):
    # lossless output (--crf 0) in both runs: the comparison measures reuse, not x264's choices
    on = pipeline(held_clip, tmp_path / "on", "--scale", "2", "--crf", "0", segment_seconds="1")  # auto
    off = pipeline(held_clip, tmp_path / "off", "--scale", "2", "--crf", "0", "--reuse-held", "off",
                   segment_seconds="1")
    frames = sum(HOLDS)
    assert on["frames"] == off["frames"] == frames
    assert off["segments"]["model_frames"] == frames and off["segments"]["reused_frames"] == 0
    calls = on["segments"]["model_frames"]
    # at least one call per drawing (and per segment start); at most 55 % of the frames
    assert len(HOLDS) <= calls <= 0.55 * frames, calls
    assert on["segments"]["reused_frames"] == frames - calls and on["segments"]["model_share"] <= 0.55
    a, b = tmp_path / "on" / "output.mp4", tmp_path / "off" / "output.mp4"
    assert frame_times(a) == frame_times(b)
    assert on["durations"]["output_video"] == off["durations"]["output_video"]
    worst = min(psnr_y(luma(a, 2 * W, 2 * H), luma(b, 2 * W, 2 * H)))
    assert worst >= 45.0, f"PSNR-Y {worst:.2f} dB against full processing"


def test_live_action_gets_no_reuse(clips, tmp_path, pipeline):
    report = pipeline(clips["av"], tmp_path, "--scale", "2", segment_seconds="0.5")
    assert report["segments"]["reused_frames"] == 0
    assert report["segments"]["model_frames"] == report["frames"] == 36


@pytest.mark.parametrize("clip", ["tears_of_steel_clip_01.mp4", "sintel_clip_03.mp4"])
def test_consecutive_frames_of_moving_footage_never_match(video_dir, clip):
    """Native-size frames of the moving samples, as the worker decodes them: no pair within the bound."""
    info = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=width,height",
                           "-of", "csv=p=0", str(video_dir / clip)], capture_output=True, text=True, check=True)
    w, h = map(int, info.stdout.strip().split(","))
    frames = decode_rgb(video_dir / clip, frames=96, size=(w, h))
    calls, sources = plan_reuse(frames, np.ones(len(frames), np.int64), None, Bound())
    assert calls == list(range(len(frames))) and sources == calls


def test_fades_cuts_and_local_changes_are_not_held(video_dir):
    """Noise of about half a level is held; a fade step, a cut and a blink are not, each caught by its own bound
    even where it passes the frame-wide PSNR bound (50 dB)."""
    bound = Bound()
    frame = decode_rgb(video_dir / "sintel_clip_03.mp4", frames=1, size=(640, 360))[0]
    other = decode_rgb(video_dir / "tears_of_steel_clip_01.mp4", frames=1, size=(640, 360))[0]
    rng = np.random.default_rng(0)
    noisy = np.clip(frame + rng.normal(0, 0.6, frame.shape).round(), 0, 255).astype(np.uint8)
    assert same_picture(noisy, frame, bound)  # noise of ~0.6 level: the same drawing
    faded = np.clip(frame.astype(int) + 1, 0, 255).astype(np.uint8)  # one fade step of 1 level
    assert not same_picture(faded, frame, bound)
    assert not same_picture(other, frame, bound)  # a cut
    blink = frame.astype(int)
    blink[100:103, 200:203] += np.where(blink[100:103, 200:203] > 127, -60, 60)  # 9 pixels change: a blink
    blink = blink.astype(np.uint8)
    assert difference(blink, frame)["psnr_db"] > bound.psnr_db and not same_picture(blink, frame, bound)
    deep = frame.astype(np.uint16) * 257  # 16-bit input is compared in 8-bit levels
    assert same_picture(noisy.astype(np.uint16) * 257, deep, bound)
    fade16 = np.clip(deep.astype(int) + 193, 0, 65535).astype(np.uint16)  # 0.75 of a level, in 16 bits
    assert difference(fade16, deep)["psnr_db"] > bound.psnr_db and not same_picture(fade16, deep, bound)


def test_reuse_compares_with_the_last_model_input_so_drift_cannot_pile_up():
    """A slow ramp of 0.4 levels per frame: each step is small, but the output is refreshed as it adds up."""
    base = np.full((H, W, 3), 100.0)
    frames = np.stack([np.clip(base + 0.4 * k, 0, 255) for k in range(12)]).round().astype(np.uint8)
    calls, sources = plan_reuse(frames, np.ones(12, np.int64), None, Bound())
    assert len(calls) >= 5  # a call at least every 2 levels of change (dc bound 0.5)
    assert plan_reuse(frames, np.ones(12, np.int64), None, None)[0] == list(range(12))  # reuse off
    shown = np.array([1, 0, 1, 1] * 3)  # frames the plan drops are neither compared nor shown
    _, sources = plan_reuse(frames, shown, frames[0], Bound())
    assert len(sources) == int(shown.sum())
