"""Every frame at its own time: a source that switches frame rate mid-way, through the whole pipeline.

The expected times come from how the clip is built (8 frames at 24 fps, 10 at 30 fps, 8 at 24 fps),
never from the worker; the output is read back with ffprobe.
"""

from __future__ import annotations

import json
import subprocess
from fractions import Fraction

import pytest

from reelforge_sr.assemble import assemble
from reelforge_sr.errors import TimingError
from reelforge_sr.plan import PlanSettings, build_plan, write_plan
from reelforge_sr.segment import run_segment

from .conftest import ffmpeg, ffprobe

PARTS = ((24, 8), (30, 10), (24, 8))  # (fps, frames)


def built_times() -> list[Fraction]:
    times, t = [], Fraction(0)
    for fps, frames in PARTS:
        for _ in range(frames):
            times.append(t)
            t += Fraction(1, fps)
    return times


@pytest.fixture(scope="module")
def rate_switching_clip(tmp_path_factory, video_dir):
    """Real footage at 24 → 30 → 24 fps with audio, in an MP4 that keeps each frame's time (1/120 s)."""
    d = tmp_path_factory.mktemp("vfr")
    parts = []
    start = 0.0
    for i, (fps, frames) in enumerate(PARTS):
        part = d / f"part{i}.mp4"
        ffmpeg("-ss", f"{start:.3f}", "-i", str(video_dir / "tears_of_steel_clip_01.mp4"), "-vf",
               f"fps={fps},scale=64:36:flags=area,settb=1/120", "-frames:v", str(frames), "-an",
               "-c:v", "libx264", "-preset", "veryfast", "-video_track_timescale", "120", str(part))
        parts.append(part)
        start += frames / fps
    inputs = [a for p in parts for a in ("-i", str(p))]
    chain = "".join(f"[{i}:v]" for i in range(len(parts))) + f"concat=n={len(parts)}:v=1:a=0[v]"
    total = float(sum(Fraction(f, fps) for fps, f in PARTS))
    clip = d / "switching.mp4"
    ffmpeg(*inputs, "-f", "lavfi", "-i", f"sine=frequency=440:sample_rate=48000:duration={total:.4f}",
           "-filter_complex", chain, "-map", "[v]", "-map", f"{len(parts)}:a", "-vsync", "vfr",
           "-c:v", "libx264", "-preset", "veryfast", "-c:a", "aac", "-video_track_timescale", "120", str(clip))
    times = frame_times(clip)
    assert times == built_times(), "the test clip itself is not what it should be"
    return clip


def frame_times(path) -> list[Fraction]:
    """Video frame times from the file's start, in display order (ffprobe packets)."""
    info = ffprobe(path, "-select_streams", "v:0", "-show_entries", "packet=pts:stream=time_base:format=start_time")
    tb = Fraction(info["streams"][0]["time_base"])
    start = Fraction(info["format"].get("start_time") or "0").limit_denominator(1_000_000)
    return sorted(int(p["pts"]) * tb - start for p in info["packets"])


def audio_start(path) -> Fraction:
    """When the first audio packet is due, from the file's start (AAC priming included, as players decode it)."""
    info = ffprobe(path, "-select_streams", "a:0", "-read_intervals", "%+#1",
                   "-show_entries", "packet=pts:stream=time_base:format=start_time")
    tb = Fraction(info["streams"][0]["time_base"])
    start = Fraction(info["format"].get("start_time") or "0").limit_denominator(1_000_000)
    return int(info["packets"][0]["pts"]) * tb - start


@pytest.mark.parametrize("container", ["mp4", "mkv"])
def test_a_rate_switching_source_keeps_every_frame_at_its_source_time(rate_switching_clip, tmp_path, pipeline,
                                                                      container):
    report = pipeline(rate_switching_clip, tmp_path, "--container", container, "--scale", "2",
                      segment_seconds="0.4")
    out = tmp_path / f"output.{container}"
    expected = built_times()
    got = frame_times(out)
    assert len(got) == len(expected)
    half_frame = Fraction(1, 60)  # half a frame of the faster part
    worst = max(abs((g - got[0]) - e) for g, e in zip(got, expected, strict=True))
    assert worst <= half_frame, f"a frame is {float(worst) * 1000:.1f} ms off its source time"
    # A/V: each frame against the audio, as in the source, within one frame at every frame (the muxer may
    # move both streams together: Matroska has no edit list for the AAC priming samples, MP4 has)
    src_times, src_audio = frame_times(rate_switching_clip), audio_start(rate_switching_clip)
    out_audio = audio_start(out)
    drift = max(abs((g - out_audio) - (s - src_audio)) for g, s in zip(got, src_times, strict=True))
    assert drift <= Fraction(1, 30), f"A/V off by up to {float(drift) * 1000:.1f} ms"
    timing = report["timing"]
    assert timing["vfr"] and timing["frames_checked"] == len(expected)
    assert abs(timing["worst_av_offset_s"]) <= timing["limit_s"]


def test_a_run_that_would_play_off_its_source_time_fails_before_anything_is_published(rate_switching_clip,
                                                                                      tmp_path, model_dir):
    plan = build_plan(rate_switching_clip, tmp_path, PlanSettings(model="anime", scale=2, segment_seconds=1.0))
    runs = plan["frame_times"]["runs"]
    assert len(runs) >= 3  # one straight run per rate
    runs[1][1] += 3000  # the 30 fps part placed ~0.3 s late (a placement bug, simulated)
    write_plan(plan, tmp_path)
    for seg in plan["segments"]:
        run_segment(tmp_path, seg["index"], model_dir=model_dir, threads=2)
    with pytest.raises(TimingError, match="off its source time") as err:
        assemble(tmp_path, quality_samples=1, previews=0)
    assert err.value.permanent
    assert not (tmp_path / "output.mp4").exists() and not list(tmp_path.glob("output*"))
    assert all((tmp_path / "segments").glob("*.mkv"))  # the upscaled segments are kept for a rerun
    assert not (tmp_path / "report.json").exists()
    json.loads((tmp_path / "plan.json").read_text())


# ------------------------------------------------------------------ constant rate on request

BITS = 5  # source frame k shows k in binary: five vertical bars, bright for a 1 (so output frames say which)


@pytest.fixture(scope="module")
def numbered_rate_switching_clip(tmp_path_factory):
    """The same 24 → 30 → 24 fps timing as above, each frame showing its number, with audio."""
    d = tmp_path_factory.mktemp("numbered")
    parts, first = [], 0
    for i, (fps, frames) in enumerate(PARTS):
        part = d / f"part{i}.mp4"
        ffmpeg("-f", "lavfi", "-i", f"color=c=black:s=64x36:r={fps}", "-vf",
               f"geq=lum='if(bitand({first}+N,pow(2,floor(X*{BITS}/W))),210,40)':cb=128:cr=128,settb=1/120",
               "-frames:v", str(frames),
               "-c:v", "libx264", "-preset", "veryfast", "-qp", "0", "-video_track_timescale", "120", str(part))
        parts.append(part)
        first += frames
    inputs = [a for p in parts for a in ("-i", str(p))]
    chain = "".join(f"[{i}:v]" for i in range(len(parts))) + f"concat=n={len(parts)}:v=1:a=0[v]"
    clip = d / "numbered.mp4"
    ffmpeg(*inputs, "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=1",
           "-filter_complex", chain, "-map", "[v]", "-map", f"{len(parts)}:a", "-vsync", "vfr",
           "-c:v", "libx264", "-preset", "veryfast", "-qp", "0", "-c:a", "aac", "-video_track_timescale", "120",
           str(clip))
    assert frame_times(clip) == built_times(), "the test clip itself is not what it should be"
    return clip


def shown_numbers(path, frames: int) -> list[int]:
    """The number each video frame shows, in order (each bar's mean luma against mid-grey)."""
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", "-vf",
                          f"scale={BITS}:1:flags=area", "-fps_mode", "passthrough", "-pix_fmt", "gray", "-f",
                          "rawvideo", "-"], capture_output=True, check=True).stdout
    assert len(raw) == frames * BITS, (len(raw), frames)
    return [sum(1 << b for b in range(BITS) if raw[i * BITS + b] > 128) for i in range(frames)]


def test_constant_rate_on_request_drops_and_repeats_whole_frames_on_an_exact_grid(numbered_rate_switching_clip,
                                                                                 tmp_path, pipeline):
    report = pipeline(numbered_rate_switching_clip, tmp_path, "--scale", "2", "--frame-rate", "24",
                      segment_seconds="0.4")
    out = tmp_path / "output.mp4"
    source = built_times()
    # the frame on screen at each instant j/24 of the one-second clip (how the clip was built)
    want = [max(k for k, t in enumerate(source) if t <= Fraction(j, 24)) for j in range(24)]
    got = frame_times(out)
    assert len(got) == 24
    assert all(g - got[0] == Fraction(j, 24) for j, g in enumerate(got)), [float(g - got[0]) for g in got]
    assert shown_numbers(numbered_rate_switching_clip, len(source)) == list(range(len(source)))
    shown = shown_numbers(out, 24)
    assert shown == want, f"output frames show source frames {shown}, expected {want}"
    # the 30 fps stretch loses two frames, which the model never sees; nothing is retimed
    assert report["frame_rate"] == {"mode": "constant", "fps": "24", "dropped": 2, "repeated": 0}
    assert report["segments"]["model_frames"] == len(set(want)) == 24
    out_audio, src_audio = audio_start(out), audio_start(numbered_rate_switching_clip)
    drift = max(abs((g - out_audio) - (Fraction(j, 24) - src_audio)) for j, g in enumerate(got))
    assert drift <= Fraction(1, 24), f"A/V off by up to {float(drift) * 1000:.1f} ms"
    assert not report["timing"]["vfr"] and abs(report["timing"]["worst_av_offset_s"]) <= 1 / 24


def test_constant_rate_above_the_source_repeats_frames_and_upscales_each_once(numbered_rate_switching_clip,
                                                                             tmp_path, pipeline):
    report = pipeline(numbered_rate_switching_clip, tmp_path, "--scale", "2", "--frame-rate", "60",
                      segment_seconds="0.4")
    source = built_times()
    want = [max(k for k, t in enumerate(source) if t <= Fraction(j, 60)) for j in range(60)]
    assert shown_numbers(tmp_path / "output.mp4", 60) == want
    assert report["frame_rate"]["dropped"] == 0 and report["frame_rate"]["repeated"] == 60 - 26
    assert report["segments"]["model_frames"] == 26  # each source frame through the model once
