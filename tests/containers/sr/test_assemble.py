"""Full pipeline (plan → segments → assemble): frames, timing, streams, chapters, report, previews."""

from __future__ import annotations

import json
from fractions import Fraction

import pytest

from reelforge_sr.assemble import assemble
from reelforge_sr.errors import AssembleError
from reelforge_sr.plan import PlanSettings, build_plan, write_plan
from reelforge_sr.segment import run_segment

from .conftest import ffprobe

FRAME = 1001 / 24000


def streams(path, kind):
    return [s for s in ffprobe(path, "-show_streams")["streams"] if s["codec_type"] == kind]


def count_frames(path) -> int:
    info = ffprobe(path, "-select_streams", "v:0", "-count_frames", "-show_entries", "stream=nb_read_frames")
    return int(info["streams"][0]["nb_read_frames"])


def test_mp4_keeps_frames_timing_audio_subtitles_and_chapters(clips, tmp_path, pipeline):
    report = pipeline(clips["av"], tmp_path)
    out = tmp_path / "output.mp4"
    assert report["output"]["path"] == str(out) and out.is_file()
    assert count_frames(out) == 36 and report["frames"] == 36 and report["frame_check"]["equal"]
    (video,) = streams(out, "video")
    assert (video["width"], video["height"]) == (256, 144)
    assert video["r_frame_rate"] == video["avg_frame_rate"] == "24000/1001"  # exact, not 23.976
    assert Fraction(video["duration"]) == Fraction("1.501500")
    audio = streams(out, "audio")
    assert [a["codec_name"] for a in audio] == ["aac", "mp3"]
    assert [a["tags"]["language"] for a in audio] == ["eng", "fra"]
    for a in audio:
        assert abs(float(a["duration"]) - float(video["duration"])) <= FRAME
    (sub,) = streams(out, "subtitle")
    assert sub["codec_name"] == "mov_text" and sub["tags"]["language"] == "eng"
    chapters = ffprobe(out, "-show_chapters")["chapters"]
    assert [c["tags"]["title"] for c in chapters] == ["One", "Two"]
    # report, quality and previews
    assert report["model"]["name"] == "realesr-animevideov3" and report["settings"]["scale"] == 4
    assert report["quality"]["psnr_db_mean"] > 25 and 0.8 < report["quality"]["ssim_mean"] <= 1
    (preview,) = report["quality"]["previews"]
    png = ffprobe(tmp_path / "previews" / preview, "-show_streams")["streams"][0]
    assert png["codec_name"] == "png" and png["width"] == 2 * 64 * 4 + 4
    assert max(report["durations"]["audio_minus_video_abs"]) <= FRAME
    assert not list(tmp_path.rglob("*.tmp")) and not (tmp_path / "assemble").exists()
    assert json.loads((tmp_path / "report.json").read_text())["frames"] == 36


def test_mkv_keeps_subtitles_audio_and_chapters(clips, tmp_path, pipeline):
    report = pipeline(clips["av"], tmp_path, "--container", "mkv", segment_seconds="100")
    out = tmp_path / "output.mkv"
    assert count_frames(out) == 36 and report["frames"] == 36
    (video,) = streams(out, "video")
    assert video["r_frame_rate"] == "24000/1001"
    assert [a["codec_name"] for a in streams(out, "audio")] == ["aac", "mp3"]
    assert [s["codec_name"] for s in streams(out, "subtitle")] == ["subrip"]
    assert len(ffprobe(out, "-show_chapters")["chapters"]) == 2


def test_interlaced_source_is_deinterlaced_with_every_frame_kept(clips, tmp_path, pipeline):
    report = pipeline(clips["interlaced"], tmp_path, segment_seconds="100")
    out = tmp_path / "output.mp4"
    (video,) = streams(out, "video")
    assert count_frames(out) == 24 and video["field_order"] == "progressive"
    assert (video["width"], video["height"]) == (256, 192)
    assert report["settings"]["deinterlace"] == "auto" and "bwdif" in json.loads(
        (tmp_path / "plan.json").read_text())["decode"]["filters"]


def test_anamorphic_ten_bit_source_gives_square_pixels_and_ten_bit_output(clips, tmp_path, pipeline):
    report = pipeline(clips["anamorphic10"], tmp_path, segment_seconds="100")
    (video,) = streams(tmp_path / "output.mp4", "video")
    assert (video["width"], video["height"], video["sample_aspect_ratio"]) == (256, 144, "1:1")
    assert video["pix_fmt"] == "yuv420p10le"
    assert count_frames(tmp_path / "output.mp4") == 24
    assert report["quality"]["psnr_db_mean"] > 25


def test_webm_with_vorbis_becomes_mp4_with_aac(clips, tmp_path, pipeline):
    report = pipeline(clips["clip"], tmp_path, segment_seconds="100")
    out = tmp_path / "output.mp4"
    assert count_frames(out) == 24
    (audio,) = streams(out, "audio")
    assert audio["codec_name"] == "aac"
    assert [s["action"] for s in report["streams"]] == ["aac 128k"]


def test_preview_mode_outputs_only_the_first_seconds(clips, tmp_path, pipeline):
    report = pipeline(clips["av"], tmp_path, "--preview-seconds", "0.5", segment_seconds="100")
    out = tmp_path / "output.mp4"
    assert count_frames(out) == 12 and report["frame_check"]["preview"]
    (video,) = streams(out, "video")
    for a in streams(out, "audio"):
        assert abs(float(a["duration"]) - float(video["duration"])) <= FRAME


def test_assemble_refuses_missing_segments(clips, tmp_path, model_dir):
    write_plan(build_plan(clips["av"], tmp_path, PlanSettings(model="anime", segment_seconds=0.5)), tmp_path)
    run_segment(tmp_path, 0, model_dir=model_dir, threads=2)
    with pytest.raises(AssembleError, match=r"2 of 3 segments are missing .*\[1, 2\]"):
        assemble(tmp_path)
    assert not (tmp_path / "output.mp4").exists()
