"""Inverse telecine: find 3:2 pulldown in the plan step and decide, once for the whole source, which frames survive.

**Detection** (``detect``): ffmpeg's ``idet`` over up to ``SPANS`` spans of ``SPAN_FRAMES`` frames spread over
the source counts frames that repeat a field of the frame before. 3:2 pulldown repeats one field in two of
every five frames (ratio 0.4); progressive and truly interlaced video repeat none (a still picture counts as
"neither" too). A span is *telecined* when its ratio is within ``TELECINE_RATIO``, *plain* below
``PLAIN_RATIO``, else *unsure*. The verdict is ``telecined`` when at least ``MAJORITY`` of the spans are
telecined, ``plain`` when none is, else ``mixed``. Only 30000/1001 and 30 fps constant-rate sources can carry
3:2 pulldown of film; other rates are ``not applicable``.

**Frame choice** (``kept_frames``): ``fieldmatch`` (+ ``bwdif`` on frames it still finds combed) and
``decimate`` run over the whole source once; ``decimate`` works on 5-frame cycles from the first frame, so
running it per segment would choose other frames. Its output frames are bit-identical copies of
``fieldmatch``'s, so comparing frame md5s of both outputs in order tells which source frames it kept.
Segment workers then apply the same field matching (with ``PREROLL`` frames decoded before their first one,
so every frame is matched from the same neighbours as in the full pass) and drop the frames this pass dropped.
"""

from __future__ import annotations

import re
import tempfile
from fractions import Fraction
from pathlib import Path
from typing import Any

from reelforge_sr import framerate
from reelforge_sr.errors import PlanError
from reelforge_sr.ffmpeg_cli import FFMPEG, run

SPANS = 5
SPAN_FRAMES = 300
TELECINE_RATIO = (0.25, 0.55)
PLAIN_RATIO = 0.05
MAJORITY = 0.8
#: frames decoded before a segment's first frame: one for fieldmatch's previous frame, one more so that the
#: frame before the segment is itself matched (bwdif reads it as its previous frame)
PREROLL = 2
#: source rate → rate after inverse telecine (4 of every 5 frames kept)
RATES = {Fraction(30000, 1001): Fraction(24000, 1001), Fraction(30): Fraction(24)}
MODES = ("auto", "on", "off")
#: frames read past a preview's end in the full pass, so the cycles it cuts are decided as in the whole file
TAIL = 10


def output_rate(fps: Fraction) -> Fraction | None:
    """The film rate a 3:2-telecined source at ``fps`` carries, or None when it cannot carry one."""
    return RATES.get(fps)


def filters(field_order: str) -> str:
    """Field matching for telecined sources: ``fieldmatch``, then ``bwdif`` on frames still combed after it."""
    return (f"fieldmatch=order={field_order}:combmatch=none,"
            f"bwdif=mode=send_frame:parity={field_order}:deint=interlaced")


def _idet(source: str, stream: int, seek: float | None, frames: int) -> dict[str, int]:
    args = [FFMPEG, "-nostdin", "-hide_banner", "-v", "info"]
    if seek is not None:
        args += ["-ss", f"{seek:.6f}"]
    args += ["-i", source, "-map", f"0:{stream}", "-an", "-sn", "-dn", "-fps_mode", "passthrough", "-vf", "idet",
             "-frames:v", str(frames), "-f", "null", "-"]
    err = run(args, what="telecine detection (idet)").stderr.decode(errors="replace")
    rep = re.search(r"Repeated Fields: Neither:\s*(\d+)\s*Top:\s*(\d+)\s*Bottom:\s*(\d+)", err)
    multi = re.search(r"Multi frame detection: TFF:\s*(\d+)\s*BFF:\s*(\d+)\s*Progressive:\s*(\d+)", err)
    if not rep or not multi:
        raise PlanError(f"telecine detection: no idet statistics in ffmpeg's output for {source}")
    neither, top, bottom = map(int, rep.groups())
    tff, bff, _ = map(int, multi.groups())
    return {"frames": neither + top + bottom, "repeated": top + bottom, "tff": tff, "bff": bff}


def span_starts(total: int) -> list[int]:
    """First frames of the sampled spans: the whole source when it is short, else evenly spread."""
    if total <= SPANS * SPAN_FRAMES:
        return [0]
    return [round(i * (total - SPAN_FRAMES) / (SPANS - 1)) for i in range(SPANS)]


def classify(ratio: float) -> str:
    if TELECINE_RATIO[0] <= ratio <= TELECINE_RATIO[1]:
        return "telecined"
    return "plain" if ratio < PLAIN_RATIO else "unsure"


def detect(source: str, stream: int, times: list[Fraction], start_time: float, fps: Fraction,
           vfr: bool) -> dict[str, Any]:
    """Repeated-field statistics over sampled spans and the verdict (see the module doc)."""
    if vfr or output_rate(fps) is None:
        return {"verdict": "not applicable", "reason": f"{'variable' if vfr else fps} fps: 3:2 pulldown of film "
                f"gives 30000/1001 or 30 fps", "spans": [], "field_order": None}
    spans, tff, bff = [], 0, 0
    for first in span_starts(len(times)):
        n = min(SPAN_FRAMES if len(times) > SPANS * SPAN_FRAMES else len(times), len(times) - first)
        seek = None if first == 0 else float((times[first - 1] + times[first]) / 2) - start_time
        st = _idet(source, stream, seek, n)
        ratio = st["repeated"] / st["frames"] if st["frames"] else 0.0
        spans.append({"start_frame": first, "frames": st["frames"], "repeated_fields": st["repeated"],
                      "ratio": round(ratio, 4), "class": classify(ratio)})
        tff, bff = tff + st["tff"], bff + st["bff"]
    telecined = sum(s["class"] == "telecined" for s in spans)
    if telecined >= MAJORITY * len(spans):
        verdict = "telecined"
    elif telecined == 0:
        verdict = "plain"
    else:
        verdict = "mixed"
    return {"verdict": verdict, "reason": f"{telecined} of {len(spans)} sampled span(s) repeat a field in "
            f"{TELECINE_RATIO[0]:g}–{TELECINE_RATIO[1]:g} of their frames (3:2 pulldown: 0.4)",
            "spans": spans, "field_order": "bff" if bff > tff else "tff"}


def _md5s(path: Path) -> list[str]:
    return [line.rsplit(",", 1)[1].strip() for line in path.read_text().splitlines()
            if line and not line.startswith("#")]


def kept_frames(source: str, stream: int, field_order: str, frames: int, until: float | None) -> list[bool]:
    """Which of the first ``frames`` source frames ``fieldmatch`` + ``decimate`` keep, over the whole source
    (or up to ``until`` seconds from the file's start, for a preview: the cycles it cuts are decided in full)."""
    with tempfile.TemporaryDirectory(prefix="reelforge-ivtc-") as tmp:
        matched, kept = Path(tmp) / "matched.md5", Path(tmp) / "kept.md5"
        args = [FFMPEG, "-nostdin", "-v", "error"]
        if until is not None:
            args += ["-t", f"{until:.6f}"]
        args += ["-i", source, "-filter_complex",
                 f"[0:{stream}]{filters(field_order)},split[m][d];[d]decimate[k]",
                 "-fps_mode", "passthrough", "-map", "[m]", "-f", "framemd5", str(matched),
                 "-fps_mode", "passthrough", "-map", "[k]", "-f", "framemd5", str(kept)]
        run(args, what="inverse telecine pass (fieldmatch + decimate)", timeout=None)
        all_md5, kept_md5 = _md5s(matched), _md5s(kept)
    if len(all_md5) < frames:
        raise PlanError(f"inverse telecine pass decoded {len(all_md5)} frames, the index has {frames}")
    keep, j = [], 0
    for digest in all_md5:  # kept frames are a subsequence; equal neighbours are interchangeable pixels
        hit = j < len(kept_md5) and kept_md5[j] == digest
        keep.append(hit)
        j += hit
    if j != len(kept_md5):
        raise PlanError(f"inverse telecine pass: {len(kept_md5) - j} decimated frame(s) match no source frame")
    return keep[:frames]


def decide(setting: str, source: str, stream: int, times: list[Fraction], start_time: float, fps: Fraction,
           vfr: bool) -> dict[str, Any]:
    """Detection (unless ``off``) and whether inverse telecine applies: the plan's ``ivtc`` record."""
    if setting not in MODES:
        raise PlanError(f"--ivtc must be one of {', '.join(MODES)}")
    if setting == "off":
        return {"setting": setting, "verdict": "not checked", "reason": "--ivtc off", "spans": [],
                "field_order": None, "applied": False}
    if setting == "on" and (vfr or output_rate(fps) is None):
        raise PlanError(f"--ivtc on needs a constant 30000/1001 or 30 fps source (3:2 pulldown of film); this one "
                        f"is {'variable-rate' if vfr else f'{fps} fps'}")
    found = detect(source, stream, times, start_time, fps, vfr)
    applied = setting == "on" or found["verdict"] == "telecined"
    return {"setting": setting, **found, "applied": applied}


def frame_counts(keep: list[bool], times: list[Fraction], fps: Fraction,
                 requested: str | Fraction) -> tuple[list[int], Fraction]:
    """Each source frame's output count after inverse telecine, and the output rate.

    Kept frames are placed on the film grid ``times[0] + j / (4/5 fps)``; each is within one source frame of
    its own time. A constant rate on request is then applied to that grid (``framerate.repeats``).
    """
    film = RATES[fps]
    kept = [k for k, keep_k in enumerate(keep) if keep_k]
    if not kept:
        raise PlanError("inverse telecine kept no frame")
    out_fps = film if requested in ("source", "constant") else Fraction(requested)
    if out_fps == film:
        per_kept = [1] * len(kept)
    else:
        grid = [times[0] + j / film for j in range(len(kept))]
        per_kept = framerate.repeats(grid, grid[-1] + 1 / film, out_fps)
    counts = [0] * len(keep)
    for k, n in zip(kept, per_kept, strict=True):
        counts[k] = n
    return counts, out_fps
