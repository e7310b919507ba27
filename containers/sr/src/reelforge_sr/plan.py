"""Cut a source into frame-exact segments and record every decision in ``<workdir>/plan.json``.

Segments are ``[start_frame, end_frame)`` ranges that tile ``[0, total_frames)`` exactly. Boundaries
are placed near every ``segment_seconds``, on a keyframe when one lies within half a segment of the
target (keyframes coincide with scene cuts in most encodes, and seeking there is cheap), else on the
frame nearest the target. Each segment carries the time to seek to (half-way between its first frame
and the one before), so a worker decodes exactly its frames.
"""

from __future__ import annotations

import bisect
import hashlib
import json
import logging
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

from reelforge_sr import colour, frameindex, framerate, ivtc, timeline
from reelforge_sr.atomic import write_json
from reelforge_sr.content import classify
from reelforge_sr.errors import PlanError
from reelforge_sr.held import Bound
from reelforge_sr.models.registry import DEFAULT_FOR_KIND, resolve
from reelforge_sr.probe import ProbeResult, probe

log = logging.getLogger(__name__)
PLAN_VERSION = 1
PLAN_NAME = "plan.json"
CODECS = ("libx264", "libx265", "h264_nvenc", "hevc_nvenc")
CONTAINERS = ("mp4", "mkv")
#: H.264/HEVC level 6.2 frame size limit (139264 macroblocks of 16×16)
MAX_OUTPUT_PIXELS = 139264 * 256


@dataclass
class PlanSettings:
    model: str = "auto"
    scale: int = 4
    segment_seconds: float = 10.0
    preview_seconds: float = 0.0
    codec: str = "libx264"
    crf: int = 18
    preset: str = ""
    container: str = "mp4"
    ten_bit: str = "auto"
    deinterlace: str = "auto"
    sar: str = "square"
    frame_rate: str = "source"  # source (keep every frame's time) | constant | a rate such as 25 or 30000/1001
    ivtc: str = "auto"  # inverse telecine: auto (when detected) | on | off
    reuse_held: str = "auto"  # held frames reuse the previous upscaled frame: auto (drawn content) | on | off

    def validate(self) -> None:
        if self.scale not in (2, 3, 4):
            raise PlanError(f"--scale must be 2, 3 or 4, not {self.scale}")
        if not self.segment_seconds > 0:
            raise PlanError("--segment-seconds must be > 0")
        if self.preview_seconds < 0:
            raise PlanError("--preview-seconds must be ≥ 0")
        if self.codec not in CODECS:
            raise PlanError(f"--codec must be one of {', '.join(CODECS)}")
        if not 0 <= self.crf <= 51:
            raise PlanError("--crf must be within 0..51")
        if self.container not in CONTAINERS:
            raise PlanError(f"--container must be one of {', '.join(CONTAINERS)}")
        for name in ("ten_bit", "deinterlace", "ivtc", "reuse_held"):
            if getattr(self, name) not in ("auto", "on", "off"):
                raise PlanError(f"--{name.replace('_', '-')} must be auto, on or off")
        if self.sar not in ("square", "keep"):
            raise PlanError("--sar must be square or keep")
        framerate.parse(self.frame_rate)


def even(value: float) -> int:
    return max(2, int(round(value / 2)) * 2)


def choose_model(request: str, pr: ProbeResult, preview_frames_end: float) -> tuple[str, dict[str, Any]]:
    """Registry name for ``auto`` / ``anime`` / ``live-action`` / a registry name, and why."""
    if request == "auto":
        v = pr.video
        verdict = classify(pr.path, min(pr.duration, preview_frames_end), v.display_width, v.display_height)
        return DEFAULT_FOR_KIND[verdict.kind], {"method": "content heuristic", **verdict.to_dict()}
    spec = resolve(request)
    return spec.name, {"method": "requested", "request": request}


def reuse_decision(request: str, model_choice: dict[str, Any], pr: ProbeResult, end_time: float) -> dict[str, Any]:
    """Held-frame reuse for ``on`` / ``off`` / ``auto``: auto reuses on drawn content (the content verdict
    that ``--model auto`` uses, measured here when a model was named), where drawings are held for two or
    three frames; live action has no held drawings, and a still shot there is not worth the risk."""
    if request != "auto":
        return {"mode": request, "enabled": request == "on"}
    kind = model_choice.get("kind")
    if kind is None:
        v = pr.video
        kind = classify(pr.path, min(pr.duration, end_time), v.display_width, v.display_height).kind
    return {"mode": "auto", "content": kind, "enabled": kind == "anime"}


def choose_boundaries(index: frameindex.FrameIndex, total: int, seconds: float) -> list[int]:
    """Start frames of all segments (first is 0): a keyframe within half a segment of each target, else the
    frame nearest the target; the last segment absorbs a remainder shorter than half a segment."""
    times = index.times[:total]
    keys = [k for k in index.keyframes if 0 < k < total]
    key_times = [times[k] for k in keys]
    span = Fraction(seconds)
    starts = [0]
    while True:
        prev = starts[-1]
        target = times[prev] + span
        if target + span / 2 > times[-1]:  # what is left is under 1.5 segments: keep it whole
            break
        lo = bisect.bisect_left(key_times, max(target - span / 2, times[prev] + span / 2))
        hi = bisect.bisect_right(key_times, target + span / 2)
        if lo < hi:
            start = min(keys[lo:hi], key=lambda k: abs(times[k] - target))
        else:
            n = bisect.bisect_left(times, target, lo=prev + 1)
            start = min((c for c in (n - 1, n) if prev < c < total), key=lambda k: abs(times[k] - target),
                        default=prev)
        if start <= prev:
            break
        starts.append(start)
    return starts


def build_plan(source: str | Path, workdir: str | Path, settings: PlanSettings) -> dict[str, Any]:
    """Probe, index, choose model and segments; return the plan (not written)."""
    settings.validate()
    pr = probe(source)
    v = pr.video
    index = frameindex.build(Path(pr.path), v.index, v.frame_count)
    source_frames = len(index)
    if source_frames != v.frame_count:
        log.warning("frame index has %d frames, probe said %d: using the index", source_frames, v.frame_count)
    total = source_frames
    if settings.preview_seconds > 0:
        limit = index.times[0] + Fraction(settings.preview_seconds)
        total = max(1, sum(1 for t in index.times if t < limit))
    end_time = float(index.times[total - 1] - index.times[0]) + 1 / float(Fraction(v.fps))

    model, model_choice = choose_model(settings.model, pr, end_time)
    spec = resolve(model)
    if settings.scale > spec.scale:
        raise PlanError(f"model {model} is x{spec.scale}: it cannot produce x{settings.scale}")

    ten_bit = settings.ten_bit == "on" or (settings.ten_bit == "auto" and v.bit_depth > 8)
    deinterlace = settings.deinterlace == "on" or (settings.deinterlace == "auto" and v.interlaced)
    source_fps = Fraction(v.fps)
    telecine = ivtc.decide(settings.ivtc, pr.path, v.index, index.times[:total], pr.start_time, source_fps, v.vfr)
    if telecine["applied"]:
        deinterlace = False  # field matching instead; bwdif only on frames it leaves combed
    elif telecine["verdict"] == "mixed" and settings.deinterlace == "auto":
        deinterlace = True  # conservative: every frame kept and deinterlaced, none dropped
    sar = Fraction(*map(int, v.sar.split(":")))
    model_w, model_h = v.display_width * settings.scale, v.display_height * settings.scale
    if settings.sar == "square":
        out_w, out_h, out_sar = even(model_w * sar), even(model_h), "1:1"
    else:
        out_w, out_h, out_sar = even(model_w), even(model_h), v.sar
    if out_w * out_h > MAX_OUTPUT_PIXELS:
        raise PlanError(f"output would be {out_w}x{out_h}: beyond the H.264/HEVC frame size limit; use a lower --scale")
    col = colour.resolve(asdict(v))
    decode_fmt = "rgb48le" if ten_bit else "rgb24"
    filters = []
    if deinterlace:
        filters.append("bwdif=mode=send_frame:parity=auto:deint=all")
    if telecine["applied"]:
        filters.append(ivtc.filters(telecine["field_order"]))
    filters.append(f"scale=in_color_matrix={col['matrix']}:in_range={col['range']}"
                   f":flags=bicubic+accurate_rnd+full_chroma_int,format={decode_fmt}")
    enc_pix = "yuv420p10le" if ten_bit else "yuv420p"
    enc_filters = [f"scale={out_w}:{out_h}:flags=lanczos+accurate_rnd:out_color_matrix={col['matrix']}"
                   f":out_range={col['range']}", f"format={enc_pix}", f"setsar={out_sar.replace(':', '/')}"]
    preset = settings.preset or ("p5" if "nvenc" in settings.codec else "veryfast")

    requested = framerate.parse(settings.frame_rate)
    counts: list[int] | None = None
    out_fps = source_fps
    if telecine["applied"]:
        more = total + ivtc.TAIL  # a preview's last cycles are decided with the frames after them
        until = None if more >= source_frames else float(index.times[more]) - pr.start_time
        keep = ivtc.kept_frames(pr.path, v.index, telecine["field_order"], total, until)
        counts, out_fps = ivtc.frame_counts(keep, index.times[:total], source_fps, requested)
        telecine |= {"kept": sum(keep), "dropped": keep.count(False), "fps": str(ivtc.RATES[source_fps])}
    elif requested != "source":
        out_fps = source_fps if requested == "constant" else requested
        times = index.times[:total]
        last = times[-1] - times[-2] if total > 1 else 1 / source_fps  # the last frame lasts as the one before
        counts = framerate.repeats(times, times[-1] + last, out_fps)
    starts = choose_boundaries(index, total, settings.segment_seconds)
    bounds = [*starts, total]
    segments = []
    for i, (a, b) in enumerate(zip(bounds, bounds[1:], strict=False)):
        preroll = min(a, ivtc.PREROLL) if telecine["applied"] else 0  # field matching reads the frames before
        seek = index.seek_before(a - preroll)
        segments.append({
            "index": i, "start_frame": a, "end_frame": b, "frames": b - a,
            "out_frames": b - a if counts is None else sum(counts[a:b]),
            "start_time": float(index.times[a]),
            "seek": None if seek is None else round(float(seek) - pr.start_time, 6),
        } | ({"preroll": preroll} if telecine["applied"] else {}))
    if empty := [seg["index"] for seg in segments if seg["out_frames"] == 0]:
        raise PlanError(f"at {settings.frame_rate} fps segment(s) {empty[:5]} would have no output frame: "
                        f"choose a higher rate or longer segments")
    plan: dict[str, Any] = {
        "version": PLAN_VERSION,
        "source": pr.path,
        "source_size": pr.size_bytes,
        "workdir": str(Path(workdir).resolve()),
        "probe": pr.to_dict(),
        "settings": asdict(settings) | {"preset": preset},
        "model": model,
        "model_choice": model_choice,
        "model_kind": spec.kind,
        "preview": settings.preview_seconds > 0,
        "timing": {
            "fps": v.fps if counts is None else str(out_fps), "source_fps": v.fps, "vfr": v.vfr,
            "frame_index": index.method,
            "video_start": float(index.times[0]), "format_start": pr.start_time,
            "duration": round(float(sum(counts) / out_fps if telecine["applied"] else total / source_fps), 6),
        },
        "geometry": {
            "decode_width": v.display_width, "decode_height": v.display_height,
            "model_width": model_w, "model_height": model_h,
            "out_width": out_w, "out_height": out_h, "out_sar": out_sar, "source_sar": v.sar,
        },
        "colour": col,
        "decode": {"pix_fmt": decode_fmt, "filters": ",".join(filters), "deinterlace": deinterlace,
                   "ten_bit": ten_bit},
        "encode": {"codec": settings.codec, "pix_fmt": enc_pix, "crf": settings.crf, "preset": preset,
                   "filters": ",".join(enc_filters), "tags": colour.tag_args(col)},
        "segments": segments,
        "total_frames": total,
        "source_frames": source_frames,
        "output_frames": total if counts is None else sum(counts),
        # where each output frame goes: the source's own times, as straight runs (not in the digest:
        # segments do not depend on it), or the constant-rate grid
        "frame_times": {"runs": [r.to_list() for r in (
            timeline.frame_runs(index.times[:total], source_fps) if counts is None
            else [timeline.Run(0, 0, Fraction(timeline.track_timescale(out_fps)[1]))])]},
    }
    if counts is not None:
        plan["frame_map"] = {"mode": "ivtc" if telecine["applied"] and requested == "source" else "constant",
                             "fps": str(out_fps), "repeats": framerate.encode(counts),
                             "dropped": counts.count(0), "repeated": sum(n - 1 for n in counts if n > 1)}
    plan["ivtc"] = telecine
    plan["reuse"] = {**reuse_decision(settings.reuse_held, model_choice, pr, end_time), "bound": Bound().to_dict(),
                     "compare": "decoded frame vs the last frame sent to the model (RGB, 8-bit levels)"}
    plan["digest"] = plan_digest(plan)
    return plan


def plan_digest(plan: dict[str, Any]) -> str:
    """sha256 of what determines segment content (not timestamps of the planning run)."""
    keys = ("version", "source", "source_size", "settings", "model", "timing", "geometry", "colour", "decode",
            "encode", "segments", "total_frames")
    if "frame_map" in plan:  # only constant-rate plans have one: older plans keep their digest
        keys += ("frame_map",)
    keys += tuple(k for k in ("ivtc", "reuse") if k in plan)  # plans from before them keep their digest
    blob = json.dumps({k: plan.get(k) for k in keys}, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def write_plan(plan: dict[str, Any], workdir: str | Path) -> Path:
    workdir = Path(workdir)
    (workdir / "segments").mkdir(parents=True, exist_ok=True)
    path = workdir / PLAN_NAME
    write_json(path, plan)
    return path


def read_plan(workdir: str | Path) -> dict[str, Any]:
    path = Path(workdir) / PLAN_NAME
    try:
        plan = json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise PlanError(f"{path} not found: run `reelforge-sr plan` first") from exc
    except json.JSONDecodeError as exc:
        raise PlanError(f"{path} is not valid JSON: {exc}") from exc
    if plan.get("version") != PLAN_VERSION:
        raise PlanError(f"{path}: plan version {plan.get('version')} is not {PLAN_VERSION}")
    if plan.get("digest") != plan_digest(plan):
        raise PlanError(f"{path}: digest does not match its content (edited by hand?)")
    return plan

