"""Held-frame reuse on every live-action sample clip: it only ever reuses a frame the source itself repeats.

By default (``--reuse-held auto``) live action reuses nothing. Forced on, it may: live action has no held
drawings, but stock encoders sometimes repeat a frame (pixabay_bee's second frame is a
339-byte P frame, pixabay_butterfly's a 71-byte B frame: the first picture coded again with a few residual
blocks). Reusing such a frame is right; reusing two different pictures is not. Each clip is planned as the
worker plans it, decoded with the plan's filters at its native size, and the real decision (``plan_reuse``
with the plan's bound, per segment) is run over every frame; every reused pair must be a genuine duplicate:
identical or ≥ 60 dB apart. Different frames of the moving samples are ≤ 36 dB apart.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from reelforge_sr.held import Bound, difference, plan_reuse
from reelforge_sr.plan import PlanSettings, build_plan

from .conftest import SHARED

DUPLICATE_DB = 60.0


def live_action_clips() -> list[str]:
    """The clips SOURCES.md marks as LIVE ACTION (its table rows: file name first, content after)."""
    sources = SHARED / "video" / "SOURCES.md"
    if not sources.is_file():
        return []
    rows = (line.split("|") for line in sources.read_text().splitlines() if line.startswith("| `"))
    return sorted(m.group(1) for cells in rows if "LIVE ACTION" in "|".join(cells[2:])
                  and (m := re.fullmatch(r"\s*`([^`]+)`\s*", cells[1])))


def shown_frames(plan: dict, total: int) -> np.ndarray:
    rows = (plan.get("frame_map") or {}).get("repeats")
    return np.array([v for v, n in rows for _ in range(n)] if rows else [1] * total, np.int64)


def reused_pairs(source: Path, workdir: Path) -> tuple[int, list[tuple[int, int]], np.ndarray]:
    """Plan ``source``, decode it as the worker does, and run the reuse decision segment by segment:
    (frames, [(frame, the model input whose output it reuses)], the frames)."""
    plan = build_plan(source, workdir, PlanSettings(model="anime", reuse_held="on"))  # forced on
    geo, dec = plan["geometry"], plan["decode"]
    assert dec["pix_fmt"] == "rgb24", dec
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(source), "-map", "0:v:0", "-vf", dec["filters"],
                          "-fps_mode", "passthrough", "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    frames = np.frombuffer(raw, np.uint8).reshape(-1, geo["decode_height"], geo["decode_width"], 3)
    assert len(frames) == plan["total_frames"]
    bound = Bound.from_dict(plan["reuse"]["bound"])
    assert plan["reuse"]["enabled"]
    shown = shown_frames(plan, len(frames))
    pairs = []
    for seg in plan["segments"]:
        a, b = seg["start_frame"], seg["end_frame"]
        calls, sources = plan_reuse(frames[a:b], shown[a:b], None, bound)
        for i, s in zip(np.flatnonzero(shown[a:b] > 0), sources, strict=True):
            if calls[s] != i:
                pairs.append((a + int(i), a + calls[s]))
    return len(frames), pairs, frames


def test_the_samples_include_live_action():
    clips = live_action_clips()
    if not clips:
        pytest.skip(f"sample clips not found in {SHARED / 'video'}")
    assert {"tears_of_steel_clip_01.mp4", "pixabay_bee_211.mp4", "pixabay_butterfly_209.mp4"} <= set(clips)


@pytest.mark.parametrize("clip", live_action_clips())
def test_live_action_reuses_only_frames_the_source_repeats(video_dir, tmp_path, clip):
    total, pairs, frames = reused_pairs(video_dir / clip, tmp_path)
    found = {(i, j): difference(frames[i], frames[j])["psnr_db"] for i, j in pairs}
    assert all(db >= DUPLICATE_DB for db in found.values()), f"{clip}: reused pairs (frame, from): PSNR {found}"
    assert len(pairs) <= 0.02 * total, f"{clip}: {len(pairs)} of {total} frames reused"


@pytest.mark.parametrize("clip", live_action_clips())
def test_by_default_live_action_reuses_nothing(video_dir, tmp_path, clip):
    """``--reuse-held auto`` (the default) follows the content verdict: live action has no held drawings."""
    plan = build_plan(video_dir / clip, tmp_path, PlanSettings())
    assert plan["reuse"]["mode"] == "auto" and plan["reuse"]["content"] == "live-action", plan["reuse"]
    assert not plan["reuse"]["enabled"]
