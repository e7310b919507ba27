"""Join the segments and mux the source's audio, subtitles and chapters; check and report.

1. Concatenate ``segments/*.mkv`` (concat demuxer, stream copy) into an intermediate MP4 whose video
   track timescale T is a multiple of the frame rate's numerator. Matroska stores milliseconds, so these
   timestamps are off by < 0.5 ms; a ``setts`` bitstream filter (MP4 → MP4, timescale T both sides) then
   puts every frame at its source frame's time (``timeline``): a constant-rate source lands back on the
   exact grid (24000/1001 stays 1001 ticks of 1/24000), a variable-rate one keeps its own times.
2. Mux that video, shifted by the source's own video start offset (A/V sync as in the source), with
   every audio stream, subtitle stream, chapter and the global metadata of the source. Audio and
   subtitles are copied; what a container cannot hold is converted (audio → AAC and text subtitles →
   mov_text for MP4, mov_text → SubRip for MKV; bitmap subtitles are kept only in MKV).
3. Write to a temp name, check the frame count and every frame's time against the source relative to
   the audio (more than one frame off: a permanent failure, nothing published), fsync, rename to the
   final name; then the quality check, previews and ``report.json``.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from fractions import Fraction
from pathlib import Path
from typing import Any

from reelforge_sr import frameindex, framerate, quality, timeline
from reelforge_sr.atomic import publish, read_json, temp_name, write_json
from reelforge_sr.errors import AssembleError, ReelForgeError, TimingError
from reelforge_sr.ffmpeg_cli import FFMPEG, FFPROBE, require_version, run
from reelforge_sr.plan import read_plan
from reelforge_sr.probe import ProbeResult, probe
from reelforge_sr.segment import completed_record, count_packets, segment_paths
from reelforge_sr.timeline import track_timescale

log = logging.getLogger(__name__)
MP4_AUDIO_COPY = {"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac", "mp2"}
REPORT_NAME = "report.json"


def _quote(path: Path) -> str:
    return "'" + str(path).replace("'", "'\\''") + "'"


def concat_segments(plan: dict[str, Any], workdir: Path, out: Path) -> None:
    fps = Fraction(plan["timing"]["fps"])
    lines = ["ffconcat version 1.0"]
    for seg in plan["segments"]:
        video, _ = segment_paths(workdir, seg["index"])
        lines += [f"file {_quote(video)}", f"duration {float(seg.get('out_frames', seg['frames']) / fps):.6f}"]
    listing = out.with_suffix(".txt")
    listing.write_text("\n".join(lines) + "\n")
    timescale, _ = track_timescale(fps)
    run([FFMPEG, "-nostdin", "-v", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(listing), "-map", "0:v:0",
         "-c", "copy", "-video_track_timescale", str(timescale), "-f", "mp4", str(out)], what="concatenating segments")


def stream_plan(pr: ProbeResult, container: str) -> tuple[list[str], list[dict[str, Any]], list[str]]:
    """ffmpeg args mapping the source (input 1) streams, what happens to each, and warnings."""
    args: list[str] = []
    actions: list[dict[str, Any]] = []
    warnings: list[str] = []
    out_index = 1  # 0 is the video
    for a in pr.audio:
        args += ["-map", f"1:{a.index}"]
        if container == "mp4" and a.codec not in MP4_AUDIO_COPY:
            bitrate = 64 * max(2, a.channels or 2)
            args += [f"-c:{out_index}", "aac", f"-b:{out_index}", f"{bitrate}k"]
            actions.append({"type": "audio", "source_index": a.index, "codec": a.codec, "action": f"aac {bitrate}k"})
        else:
            args += [f"-c:{out_index}", "copy"]
            actions.append({"type": "audio", "source_index": a.index, "codec": a.codec, "action": "copy"})
        out_index += 1
    for s in pr.subtitles:
        if container == "mp4" and not s.text_based:
            warnings.append(f"subtitle stream {s.index} ({s.codec}) is a bitmap format an MP4 cannot hold: dropped "
                            f"(use --container mkv to keep it)")
            actions.append({"type": "subtitle", "source_index": s.index, "codec": s.codec, "action": "dropped"})
            continue
        args += ["-map", f"1:{s.index}"]
        if container == "mp4":
            codec = "copy" if s.codec == "mov_text" else "mov_text"
        else:
            codec = "srt" if s.codec == "mov_text" else "copy"  # Matroska has no mov_text
        args += [f"-c:{out_index}", codec]
        actions.append({"type": "subtitle", "source_index": s.index, "codec": s.codec, "action": codec})
        out_index += 1
    if container == "mkv" and pr.attachments:
        args += ["-map", "1:t?", "-c:t", "copy"]
        actions.append({"type": "attachment", "count": pr.attachments, "action": "copy"})
    return args, actions, warnings


def source_runs(plan: dict[str, Any]) -> list[timeline.Run]:
    """The plan's frame placement (a plan written before it had one: the constant-rate grid)."""
    rows = (plan.get("frame_times") or {}).get("runs")
    if rows:
        return [timeline.Run.from_list(r) for r in rows]
    return [timeline.Run(0, 0, Fraction(track_timescale(Fraction(plan["timing"]["fps"]))[1]))]


def video_span(plan: dict[str, Any]) -> float:
    """Seconds from the first frame's start to the last frame's end."""
    fps = Fraction(plan["timing"]["fps"])
    timescale, _ = track_timescale(fps)
    last = framerate.output_frames(plan) - 1
    runs = source_runs(plan)
    tail = runs[-1].step / timescale if runs[-1].first < last and runs[-1].step else 1 / fps
    return timeline.seconds_of(runs, last, timescale) + float(tail)


def check_timing(plan: dict[str, Any], output: Path) -> timeline.Offsets:
    """Every output frame against its source frame, relative to the audio (raises beyond one frame).

    At a constant rate on request, output frame *j* is held to its instant on the grid from the first
    source frame (the frame it shows is the one on screen then: ``framerate``). After inverse telecine, each
    output frame (on the film grid) is held to the source time of the frame it shows.
    """
    pr = ProbeResult.from_dict(plan["probe"])
    total = plan["total_frames"]
    source = frameindex.build(Path(pr.path), pr.video.index, plan["source_frames"]).times[:total]
    if (plan.get("frame_map") or {}).get("mode") == "ivtc":  # each frame against the source frame it shows
        source = [source[k] for k in framerate.output_sources(plan)]
    elif framerate.plan_repeats(plan) is not None:
        step = 1 / Fraction(plan["timing"]["fps"])
        source = [source[0] + j * step for j in range(framerate.output_frames(plan))]
    out = frameindex.build(output, 0, len(source)).times
    src_audio = stream_start(Path(pr.path), "a:0") if pr.audio else None
    out_audio = stream_start(output, "a:0") if pr.audio else None
    offsets = timeline.av_offsets(source, plan["timing"]["format_start"], src_audio,
                                  out, stream_start(output, None) or 0.0, out_audio)
    fps = Fraction(plan["timing"]["fps"])
    if not timeline.within_one_frame(offsets, fps):
        raise TimingError(f"frame {offsets.worst_frame} would play {offsets.worst_av_s * 1000:+.1f} ms off its "
                          f"source time relative to the audio (limit: one frame, {1000 / float(fps):.1f} ms)")
    return offsets


def stream_start(path: Path, stream: str | None) -> float | None:
    """When a stream's first packet is due (``a:0``; encoder priming included, as players decode it),
    or the file's start_time (``None``)."""
    if stream is None:
        entries = ["-show_entries", "format=start_time"]
    else:
        entries = ["-select_streams", stream, "-read_intervals", "%+#1", "-show_entries", "packet=pts_time"]
    out = run([FFPROBE, "-v", "error", *entries, "-of", "default=nw=1:nk=1", str(path)],
              what="ffprobe start time").stdout.decode().split()
    try:
        return float(out[0])
    except (IndexError, ValueError):
        return None


def place_frames(plan: dict[str, Any], video_in: Path, video_out: Path) -> None:
    """Move every frame from the grid to its source time (MP4 → MP4, timescale T in and out).

    The concatenated segments are on a millisecond-rounded grid; a constant-rate source is one run,
    so this also snaps its timestamps back onto the exact grid (24000/1001 stays 1001 ticks of 1/24000).
    """
    fps = Fraction(plan["timing"]["fps"])
    timescale, ticks = track_timescale(fps)
    setts = timeline.setts_filter(source_runs(plan), ticks)
    run([FFMPEG, "-nostdin", "-v", "error", "-y", "-i", str(video_in), "-map", "0:v:0", "-c", "copy", "-bsf:v", setts,
         "-video_track_timescale", str(timescale), "-f", "mp4", str(video_out)], what="snapping timestamps")


def mux(plan: dict[str, Any], video: Path, out_tmp: Path, container: str) -> tuple[list[dict], list[str]]:
    """The upscaled video (input 0, shifted by the source's video start offset) + the source's other streams."""
    pr = ProbeResult.from_dict(plan["probe"])
    fps = Fraction(plan["timing"]["fps"])
    timescale, _ = track_timescale(fps)
    offset = plan["timing"]["video_start"] - plan["timing"]["format_start"]
    maps, actions, warnings = stream_plan(pr, container)
    args = [FFMPEG, "-nostdin", "-v", "error", "-y", "-itsoffset", f"{offset:.6f}", "-i", str(video), "-i", pr.path,
            "-map", "0:v:0", "-c:v", "copy", *maps, "-map_metadata", "1", "-map_chapters", "1"]
    if plan["encode"]["codec"] in ("libx265", "hevc_nvenc") and container == "mp4":
        args += ["-tag:v", "hvc1"]
    if plan["preview"]:
        args += ["-t", f"{video_span(plan) + offset:.6f}"]
    if container == "mp4":
        args += ["-movflags", "+faststart", "-video_track_timescale", str(timescale), "-f", "mp4"]
    else:
        args += ["-f", "matroska"]
    run([*args, str(out_tmp)], what="muxing the output")
    return actions, warnings


def probe_output(path: Path, frames: int) -> dict[str, Any]:
    pr = probe(path, max_side=1 << 16, max_pixels=1 << 40, count_frames=False, check_decode=False)
    out = pr.to_dict()
    out["video"]["frame_count"] = frames
    out["video"]["frame_count_method"] = "packets"
    return out


def _facts(p: dict[str, Any]) -> dict[str, Any]:
    v = p["video"]
    return {
        "path": p["path"], "bytes": p["size_bytes"], "format": p["format_name"], "duration": p["duration"],
        "video": {k: v[k] for k in ("codec", "width", "height", "sar", "dar", "fps", "vfr", "interlaced",
                                    "field_order", "rotation", "pix_fmt", "bit_depth", "color_primaries",
                                    "color_transfer", "color_space", "color_range", "frame_count", "duration",
                                    "start_time")},
        "audio": [{k: a[k] for k in ("index", "codec", "channels", "sample_rate", "language", "duration")}
                  for a in p["audio"]],
        "subtitles": [{k: s[k] for k in ("index", "codec", "language")} for s in p["subtitles"]],
        "chapters": len(p["chapters"]),
    }


def assemble(workdir: str | Path, output: str | Path | None = None, *, quality_samples: int = 5,
             previews: int = 3) -> dict[str, Any]:
    """Build the final video and ``report.json`` in ``workdir``; return the report."""
    started = time.monotonic()
    workdir = Path(workdir).resolve()
    plan = read_plan(workdir)
    require_version()
    container = plan["settings"]["container"]
    output = Path(output).resolve() if output else workdir / f"output.{container}"
    records, missing = [], []
    for seg in plan["segments"]:
        rec = completed_record(plan, workdir, seg["index"])
        (records.append(rec) if rec else missing.append(seg["index"]))
    if missing:
        raise AssembleError(f"{len(missing)} of {len(plan['segments'])} segments are missing or do not match the "
                            f"plan: {missing[:20]}{' …' if len(missing) > 20 else ''}")
    scratch = workdir / "assemble"
    shutil.rmtree(scratch, ignore_errors=True)
    scratch.mkdir(parents=True)
    video = scratch / "video.mp4"
    concat_segments(plan, workdir, scratch / "video_ms.mp4")
    place_frames(plan, scratch / "video_ms.mp4", video)
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_name(output)
    try:
        actions, warnings = mux(plan, video, tmp, container)
        frames = count_packets(tmp)
        if frames != framerate.output_frames(plan):
            raise AssembleError(f"the muxed output has {frames} frames, the plan {framerate.output_frames(plan)}")
        offsets = check_timing(plan, tmp)
        publish(tmp, output)
    finally:
        tmp.unlink(missing_ok=True)
    mux_s = time.monotonic() - started
    out_probe = probe_output(output, frames)
    t0 = time.monotonic()
    try:
        q = quality.check(plan, output, out_probe, workdir / "previews", samples=quality_samples, previews=previews)
    except (ReelForgeError, RuntimeError) as exc:
        q = {"error": str(exc)}
        warnings.append(f"quality check failed: {exc}")
    if q.get("warning"):
        warnings.append(q["warning"])
    quality_s = time.monotonic() - t0
    shutil.rmtree(scratch, ignore_errors=True)

    in_probe = plan["probe"]
    vdur = out_probe["video"]["duration"]
    audio_gap = [round(abs((a["duration"] or 0) - vdur), 4) for a in out_probe["audio"]]
    report = {
        "version": 1,
        "status": "ok",
        "frames": frames,
        "frame_check": {"planned": framerate.output_frames(plan), "source": plan["source_frames"],
                        "output": frames, "equal": frames == framerate.output_frames(plan), "preview": plan["preview"]},
        "frame_rate": {"mode": "source"} if "frame_map" not in plan else {
            k: plan["frame_map"][k] for k in ("mode", "fps", "dropped", "repeated")},
        "durations": {"source_video": in_probe["video"]["duration"], "planned": plan["timing"]["duration"],
                      "output_video": vdur, "output_audio": [a["duration"] for a in out_probe["audio"]],
                      "audio_minus_video_abs": audio_gap, "frame_duration": float(1 / Fraction(plan["timing"]["fps"]))},
        "timing": offsets.to_dict() | {"vfr": plan["timing"]["vfr"] and "frame_map" not in plan,
                                       "runs": len(source_runs(plan)),
                                       "limit_s": round(float(1 / Fraction(plan["timing"]["fps"])), 6)},
        "input": _facts(in_probe),
        "output": _facts(out_probe) | {"container": container},
        "model": {"name": plan["model"], "kind": plan["model_kind"], "choice": plan["model_choice"],
                  "weights": records[0].get("weights"), "engine": records[0].get("engine")},
        "settings": plan["settings"],
        "geometry": plan["geometry"],
        "colour": plan["colour"],
        "streams": actions,
        "chapters": {"source": len(in_probe["chapters"]), "output": len(out_probe["chapters"])},
        "segments": {"count": len(records), "frames_per_s": [r.get("frames_per_s") for r in records],
                     "elapsed_s_total": round(sum(r.get("elapsed_s") or 0 for r in records), 3),
                     **work_counts(plan, records),
                     "hosts": sorted({r.get("host") or "?" for r in records})},
        "ivtc": {k: plan["ivtc"].get(k) for k in ("setting", "verdict", "reason", "applied", "field_order", "kept",
                                                  "dropped", "fps", "spans")} | {"action": ivtc_action(plan)}
        if "ivtc" in plan else None,
        "timings": {"mux_s": round(mux_s, 3), "quality_s": round(quality_s, 3),
                    "assemble_total_s": round(time.monotonic() - started, 3)},
        "quality": q,
        "warnings": [*in_probe.get("warnings", []), *warnings],
        "host": os.uname().nodename,
    }
    write_json(workdir / REPORT_NAME, report)
    return report


def work_counts(plan: dict[str, Any], records: list[dict[str, Any]]) -> dict[str, Any]:
    """Model calls against frames: decoded source frames, those the output shows, those reused as held."""
    model = sum(r.get("model_frames", r["frames"]) for r in records)
    shown = sum(r.get("shown_frames", r["frames"]) for r in records)
    return {"model_frames": model, "source_frames": sum(r["frames"] for r in records), "shown_frames": shown,
            "reused_frames": sum(r.get("reused_frames", 0) for r in records),
            "model_share": round(model / shown, 4) if shown else None,
            "model_s_total": round(sum(r.get("model_s") or 0 for r in records), 3),
            "reuse": (plan.get("reuse") or {}).get("enabled", False)}


def ivtc_action(plan: dict[str, Any]) -> str:
    """What the worker did about fields, in words."""
    tc, dec = plan["ivtc"], plan["decode"]
    if tc.get("applied"):
        return (f"inverse telecine: fieldmatch ({tc['field_order']}) + decimate, {tc['kept']} of "
                f"{tc['kept'] + tc['dropped']} frames kept, {tc['fps']} fps progressive")
    if dec["deinterlace"]:
        why = "mixed telecined/other content: every frame kept" if tc.get("verdict") == "mixed" else "interlaced"
        return f"deinterlaced with bwdif ({why})"
    return "none (progressive)"


def read_report(workdir: Path) -> dict[str, Any]:
    return read_json(workdir / REPORT_NAME)

