"""Inverse telecine: a 23.976p clip telecined with ffmpeg's ``telecine`` filter comes back as its own frames.

What is expected comes from how the clips are built: 48 progressive frames at 24000/1001, made 60 frames at
30000/1001 by 3:2 pulldown (``telecine=pattern=23``), stored losslessly. Inverse telecine must give the 48
original pictures on the 24000/1001 grid, so the result is compared with the pipeline run on the original
progressive clip.
"""

from __future__ import annotations

import json
import re
import subprocess
from fractions import Fraction

import numpy as np
import pytest

from reelforge_sr import ivtc
from reelforge_sr.errors import PlanError
from reelforge_sr.frames_io import FrameDecoder, decode_args
from reelforge_sr.plan import PlanSettings, build_plan

from .conftest import ffmpeg
from .test_timing import audio_start, frame_times

FILM = Fraction(24000, 1001)
FRAMES = 48  # 2.002 s of film


@pytest.fixture(scope="module")
def film(tmp_path_factory, video_dir) -> dict:
    """``progressive``: 48 frames of real footage at 24000/1001 (64x36) with audio; ``telecined``: the same
    through 3:2 pulldown (60 frames at 30000/1001); ``video``: the same footage at 30000/1001 progressive."""
    d = tmp_path_factory.mktemp("film")
    src = video_dir / "sintel_clip_03.mp4"
    tone = ["-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000:duration=2.002"]
    enc = ["-map", "0:v", "-map", "1:a", "-c:v", "libx264", "-qp", "0", "-c:a", "aac"]
    ffmpeg("-i", str(src), *tone, "-vf", "scale=64:36:flags=area,fps=24000/1001", "-frames:v", str(FRAMES), *enc,
           str(d / "progressive.mp4"))
    ffmpeg("-i", str(d / "progressive.mp4"), *tone, "-vf", "telecine=first_field=top:pattern=23", *enc,
           str(d / "telecined.mp4"))
    ffmpeg("-i", str(src), "-vf", "scale=64:36:flags=area,fps=30000/1001", "-frames:v", "60", "-c:v", "libx264",
           "-qp", "0", str(d / "video.mp4"))
    clips = {p.stem: p for p in d.glob("*.mp4")}
    assert len(frame_times(clips["telecined"])) == 60 and len(frame_times(clips["progressive"])) == FRAMES
    return clips


def luma(path, width: int, height: int) -> np.ndarray:
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", "-fps_mode", "passthrough",
                          "-pix_fmt", "gray", "-f", "rawvideo", "-"], capture_output=True, check=True).stdout
    return np.frombuffer(raw, np.uint8).reshape(-1, height, width).astype(np.float64)


def psnr_y(a: np.ndarray, b: np.ndarray) -> list[float]:
    mse = ((a - b) ** 2).reshape(len(a), -1).mean(axis=1)
    return [float("inf") if m == 0 else 10 * np.log10(255**2 / m) for m in mse]


def idet(path, vf: str = "null") -> dict[str, int]:
    """idet's single-frame verdicts (combed frames) and repeated fields over a whole file."""
    err = subprocess.run(["ffmpeg", "-hide_banner", "-i", str(path), "-map", "0:v:0", "-vf", f"{vf},idet",
                          "-f", "null", "-"], capture_output=True, text=True, check=True).stderr
    single = re.search(r"Single frame detection: TFF:\s*(\d+)\s*BFF:\s*(\d+)", err)
    rep = re.search(r"Repeated Fields: Neither:\s*\d+\s*Top:\s*(\d+)\s*Bottom:\s*(\d+)", err)
    return {"combed": int(single[1]) + int(single[2]), "repeated": int(rep[1]) + int(rep[2])}


def test_telecined_film_is_inverse_telecined_to_its_own_frames(film, tmp_path, pipeline):
    out_dir, ref_dir = tmp_path / "ivtc", tmp_path / "reference"
    report = pipeline(film["telecined"], out_dir, "--scale", "2", segment_seconds="0.5")
    reference = pipeline(film["progressive"], ref_dir, "--scale", "2", "--reuse-held", "off", segment_seconds="0.5")
    out = out_dir / "output.mp4"

    assert report["ivtc"]["verdict"] == "telecined" and report["ivtc"]["applied"]
    assert report["ivtc"]["field_order"] == "tff" and report["ivtc"]["fps"] == "24000/1001"
    assert report["frames"] == FRAMES == 60 * 4 // 5  # 4/5 of the input frames
    assert report["segments"]["source_frames"] == 60 and report["segments"]["shown_frames"] == FRAMES
    times = frame_times(out)
    assert [t - times[0] for t in times] == [j / FILM for j in range(FRAMES)]  # exact 24000/1001 grid
    assert report["durations"]["output_video"] == pytest.approx(float(FRAMES / FILM), abs=1e-6)
    assert report["durations"]["output_audio"] == [pytest.approx(2.002, abs=0.03)]
    assert abs(audio_start(out) - audio_start(film["telecined"])) < Fraction(1, 1000)  # audio untouched

    # every frame against full processing of the original progressive frames
    worst = min(psnr_y(luma(out, 128, 72), luma(ref_dir / "output.mp4", 128, 72)))
    assert worst >= 45.0, f"PSNR-Y {worst:.2f} dB against full processing of the original frames"
    # idet at the source size: the telecined source is combed and repeats fields, the output neither
    source = idet(film["telecined"])
    assert source["combed"] >= 20 and source["repeated"] >= 20, source
    assert idet(out, "scale=64:36:flags=area") == {"combed": 0, "repeated": 0}
    assert reference["segments"]["model_frames"] == FRAMES


def test_segments_decode_exactly_the_frames_of_the_full_pass(film, tmp_path):
    """Concatenated segment decodes (pre-roll dropped) equal the plan's full fieldmatch pass on kept frames."""
    plan = build_plan(film["telecined"], tmp_path, PlanSettings(model="anime", scale=2, segment_seconds=0.3))
    assert len(plan["segments"]) >= 5 and all(s["preroll"] == 2 for s in plan["segments"][1:])
    filters = plan["decode"]["filters"]
    assert filters.startswith("fieldmatch=order=tff")
    size = 64 * 36 * 3
    full = subprocess.run(["ffmpeg", "-v", "error", "-i", str(film["telecined"]), "-vf", filters, "-f", "rawvideo",
                           "-pix_fmt", "rgb24", "-"], capture_output=True, check=True).stdout
    assert len(full) == 60 * size
    parts = []
    for seg in plan["segments"]:
        n = seg["frames"] + seg["preroll"]
        dec = FrameDecoder(decode_args(plan["source"], 0, seg["seek"], n, filters, "rgb24"), 64, 36, "rgb24", n)
        parts.append(dec.read(n)[seg["preroll"]:])
        dec.finish()
    assert np.concatenate(parts).tobytes() == full
    # decimate drops one frame of every five; the kept ones are the 48 distinct film frames
    repeats = [v for v, n in plan["frame_map"]["repeats"] for _ in range(n)]
    assert [sum(repeats[c:c + 5]) for c in range(0, 60, 5)] == [4] * 12
    frames = np.frombuffer(full, np.uint8).reshape(60, -1)
    kept = frames[[k for k, r in enumerate(repeats) if r]]
    assert len({f.tobytes() for f in kept}) == FRAMES


def test_plain_video_at_30000_1001_is_left_alone_unless_asked(film, tmp_path):
    plan = build_plan(film["video"], tmp_path, PlanSettings(model="anime", scale=2))
    assert plan["ivtc"]["verdict"] == "plain" and not plan["ivtc"]["applied"]
    assert plan["ivtc"]["spans"][0]["repeated_fields"] < 3 and "frame_map" not in plan
    assert "fieldmatch" not in plan["decode"]["filters"] and plan["total_frames"] == plan["output_frames"] == 60
    forced = build_plan(film["video"], tmp_path, PlanSettings(model="anime", scale=2, ivtc="on"))
    assert forced["ivtc"]["applied"] and forced["output_frames"] == 48
    assert forced["timing"]["fps"] == "24000/1001" and forced["digest"] != plan["digest"]


def test_ivtc_off_and_inapplicable_rates(film, clips, tmp_path):
    off = build_plan(film["telecined"], tmp_path, PlanSettings(model="anime", ivtc="off"))
    assert off["ivtc"]["verdict"] == "not checked" and off["output_frames"] == 60
    film_rate = build_plan(film["progressive"], tmp_path, PlanSettings(model="anime"))
    assert film_rate["ivtc"]["verdict"] == "not applicable" and not film_rate["ivtc"]["applied"]
    with pytest.raises(PlanError, match="--ivtc on needs a constant 30000/1001 or 30 fps"):
        build_plan(clips["interlaced"], tmp_path, PlanSettings(model="anime", ivtc="on"))
    with pytest.raises(PlanError, match="--ivtc must be"):
        build_plan(film["telecined"], tmp_path, PlanSettings(model="anime", ivtc="yes"))


@pytest.mark.parametrize(("ratios", "verdict"), [((0.4, 0.38, 0.42, 0.4, 0.0), "telecined"),
                                                 ((0.0, 0.01, 0.0), "plain"),
                                                 ((0.4, 0.0, 0.0, 0.4, 0.0), "mixed"),
                                                 ((0.4, 0.15), "mixed")])
def test_verdict_over_spans(monkeypatch, ratios, verdict):
    """4 of 5 telecined spans (one still) is telecined; fewer, or an unsure span, is mixed; none is plain."""
    spans = iter(ratios)
    monkeypatch.setattr(ivtc, "span_starts", lambda total: list(range(len(ratios))))
    monkeypatch.setattr(ivtc, "_idet", lambda *a: {"frames": 100, "repeated": round(100 * next(spans)),
                                                   "tff": 5, "bff": 0})
    times = [Fraction(k, 30) for k in range(3000)]
    found = ivtc.detect("x.mp4", 0, times, 0.0, Fraction(30000, 1001), False)
    assert found["verdict"] == verdict and found["field_order"] == "tff"
    assert json.dumps(found)


def test_mixed_content_is_deinterlaced_with_every_frame_kept(film, tmp_path, monkeypatch):
    """Conservative handling: no frame dropped, every frame through bwdif, the report says why."""
    from reelforge_sr.assemble import ivtc_action

    monkeypatch.setattr(ivtc, "detect", lambda *a: {"verdict": "mixed", "reason": "test", "spans": [],
                                                    "field_order": "tff"})
    plan = build_plan(film["telecined"], tmp_path, PlanSettings(model="anime"))
    assert not plan["ivtc"]["applied"] and plan["decode"]["deinterlace"]
    assert plan["decode"]["filters"].startswith("bwdif=mode=send_frame:parity=auto:deint=all")
    assert plan["output_frames"] == 60 and "frame_map" not in plan
    assert "mixed" in ivtc_action(plan)
    kept = build_plan(film["telecined"], tmp_path, PlanSettings(model="anime", deinterlace="off"))
    assert not kept["decode"]["deinterlace"]  # an explicit --deinterlace off is respected


def test_a_constant_rate_on_request_applies_to_the_film_grid(film, tmp_path):
    """After inverse telecine 'constant' is the film rate; 48 film frames on a 48 fps grid are each shown twice."""
    same = build_plan(film["telecined"], tmp_path, PlanSettings(model="anime", frame_rate="constant"))
    assert same["timing"]["fps"] == "24000/1001" and same["output_frames"] == FRAMES
    double = build_plan(film["telecined"], tmp_path, PlanSettings(model="anime", frame_rate="48000/1001"))
    repeats = [v for v, n in double["frame_map"]["repeats"] for _ in range(n)]
    assert double["output_frames"] == 2 * FRAMES and sorted(set(repeats)) == [0, 2] and repeats.count(0) == 12
