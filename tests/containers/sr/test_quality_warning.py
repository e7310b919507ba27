"""The quality warning: an output far from its source is flagged, an ordinary one is not."""

from __future__ import annotations

from reelforge_sr import quality
from reelforge_sr.assemble import probe_output
from reelforge_sr.plan import PlanSettings, build_plan

from .conftest import ffmpeg


def _check(plan, tmp_path, video, name):
    frames = plan["total_frames"]
    return quality.check(plan, video, probe_output(video, frames), tmp_path / name, samples=4, previews=0)


def test_an_output_far_from_its_source_is_flagged_and_a_plain_upscale_is_not(clips, tmp_path):
    plan = build_plan(clips["av"], tmp_path / "w", PlanSettings(model="anime", scale=4))
    w, h = plan["geometry"]["out_width"], plan["geometry"]["out_height"]
    plain = tmp_path / "plain.mp4"  # what any upscaler at least gives: consistent with the source
    ffmpeg("-i", str(clips["av"]), "-map", "0:v", "-vf", f"scale={w}:{h}:flags=bicubic", "-crf", "12", str(plain))
    ok = _check(plan, tmp_path, plain, "ok")
    assert ok["warning"] is None and ok["psnr_db_mean"] > quality.WARN_PSNR_DB + 5
    # a broken result of the same shape: smeared and shifted (as a wrong filter or geometry would give)
    broken = tmp_path / "broken.mp4"
    ffmpeg("-i", str(plain), "-vf", "gblur=sigma=12,crop=iw-24:ih:24:0,pad=iw+24:ih:0:0", "-crf", "12", str(broken))
    bad = _check(plan, tmp_path, broken, "bad")
    assert bad["psnr_db_mean"] < quality.WARN_PSNR_DB
    assert bad["warning"].startswith("low consistency with the source: PSNR ")
