"""Segment planning, plan.json shape, preview mode and the anime / live-action heuristic."""

from __future__ import annotations

import json
import subprocess

import pytest

from reelforge_sr import frameindex
from reelforge_sr.cli import main
from reelforge_sr.content import FLAT_THRESHOLD, classify
from reelforge_sr.errors import PlanError
from reelforge_sr.plan import PlanSettings, build_plan, choose_boundaries, read_plan, write_plan
from reelforge_sr.probe import probe


def test_plan_json_shape_and_frame_exact_segments(clips, tmp_path):
    assert main(["-q", "plan", "--source", str(clips["av"]), "--workdir", str(tmp_path), "--model", "anime",
                 "--segment-seconds", "0.5"]) == 0
    plan = json.loads((tmp_path / "plan.json").read_text())
    assert plan["version"] == 1 and plan["source"] == str(clips["av"].resolve())
    assert plan["model"] == "realesr-animevideov3" and plan["total_frames"] == 36
    assert {"probe", "settings", "segments"} <= set(plan)
    segs = plan["segments"]
    assert [s["index"] for s in segs] == list(range(len(segs))) and len(segs) == 3
    assert segs[0]["start_frame"] == 0 and segs[-1]["end_frame"] == 36
    assert all(a["end_frame"] == b["start_frame"] for a, b in zip(segs, segs[1:], strict=False))
    # boundaries sit on keyframes (every 12 frames, plus x264's scene cuts)
    packets = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "packet=pts,flags",
                              "-of", "csv=p=0", str(clips["av"])], capture_output=True, text=True, check=True).stdout
    rows = sorted((int(pts), "K" in flags) for pts, flags in (ln.split(",")[:2] for ln in packets.split()))
    keyframes = {i for i, (_, key) in enumerate(rows) if key}
    assert {s["start_frame"] for s in segs} <= keyframes
    assert segs[0]["seek"] is None and all(s["seek"] > 0 for s in segs[1:])
    assert not list(tmp_path.glob("*.tmp"))
    assert read_plan(tmp_path)["digest"] == plan["digest"]


def test_boundaries_cover_every_frame_for_many_lengths(clips):
    index = frameindex.build(clips["av"], 0, 36)
    assert len(index) == 36 and index.method == "packets" and index.keyframes[:2] == [0, 12]
    for seconds in (0.05, 0.3, 0.5, 0.9, 2.0, 100.0):
        for total in (36, 20, 1):
            starts = choose_boundaries(index, total, seconds)
            assert starts[0] == 0 and starts == sorted(set(starts)) and starts[-1] < total, (seconds, total)
    assert len(choose_boundaries(index, 36, 0.05)) > 10  # short segments: boundaries off keyframes too


def test_preview_mode_plans_only_the_first_seconds(clips, tmp_path):
    plan = build_plan(clips["av"], tmp_path, PlanSettings(model="anime", preview_seconds=0.5))
    assert plan["preview"] and plan["total_frames"] == 12 and plan["source_frames"] == 36
    assert plan["segments"][-1]["end_frame"] == 12


def test_invalid_settings_and_tampered_plan(clips, tmp_path):
    with pytest.raises(PlanError, match="--scale"):
        build_plan(clips["av"], tmp_path, PlanSettings(scale=5))
    with pytest.raises(PlanError, match="cannot produce x4"):
        build_plan(clips["av"], tmp_path, PlanSettings(model="RealESRGANv2-animevideo-xsx2", scale=4))
    plan = build_plan(clips["av"], tmp_path, PlanSettings(model="anime"))
    write_plan(plan, tmp_path)
    plan["segments"][0]["end_frame"] += 1
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    with pytest.raises(PlanError, match="digest"):
        read_plan(tmp_path)


def test_auto_model_follows_the_source(clips, tmp_path):
    plan = build_plan(clips["interlaced"], tmp_path, PlanSettings())
    assert plan["model_choice"]["method"] == "content heuristic"
    assert plan["model"] in {"realesr-animevideov3", "realesr-general-x4v3"}
    assert plan["decode"]["deinterlace"] and plan["decode"]["filters"].startswith("bwdif=")
    ana = build_plan(clips["anamorphic10"], tmp_path, PlanSettings(model="anime"))
    assert ana["decode"]["pix_fmt"] == "rgb48le" and ana["encode"]["pix_fmt"] == "yuv420p10le"
    assert (ana["geometry"]["out_width"], ana["geometry"]["out_height"]) == (256, 144)
    keep = build_plan(clips["anamorphic10"], tmp_path, PlanSettings(model="anime", sar="keep", ten_bit="off"))
    assert (keep["geometry"]["out_width"], keep["geometry"]["out_sar"]) == (192, "4:3")
    assert keep["encode"]["pix_fmt"] == "yuv420p"


@pytest.mark.parametrize(("name", "kind"), [
    ("caminandes_clip_02.mp4", "anime"),
    ("big_buck_bunny_0_30.webm", "anime"),
    ("sintel_clip_03.mp4", "anime"),
    ("tears_of_steel_clip_01.mp4", "live-action"),
    ("pixabay_bee_211.mp4", "live-action"),
])
def test_content_heuristic_on_real_clips(video_dir, name, kind):
    p = probe(video_dir / name)
    verdict = classify(p.path, p.duration, p.video.display_width, p.video.display_height)
    assert verdict.kind == kind, verdict
    assert verdict.analysis_size == (320, 180)
    # not a coin toss: the median is clearly on its side of the threshold
    assert abs(verdict.flat_share - FLAT_THRESHOLD) > 0.04
