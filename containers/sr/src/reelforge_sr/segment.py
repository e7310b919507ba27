"""One Slurm array task: decode a frame range, upscale it, encode it, publish it atomically.

Where the plan asks for a constant frame rate (``framerate``) or inverse telecine (``ivtc``), a source frame
the plan drops is decoded but never upscaled, and one it repeats is upscaled once and encoded as often as the
grid shows it. With inverse telecine the decoder starts ``preroll`` frames early (discarded) so that field
matching sees the same neighbours as in the plan's full pass. With held-frame reuse (``held``), a frame that
shows the same picture as the last model input, within the plan's bound, is given that input's output.

Decoding, inference and encoding overlap: a reader thread fills a small queue from the decoder pipe, the
main thread runs the model, a writer thread feeds the encoder pipe. Exactly the planned number of frames
must come out: a decoder shortfall, a model error or an encoder failure raises :class:`SegmentError`
(non-zero exit), never a skip. The segment is encoded to ``segments/<i>.mkv.<host>.<pid>.tmp``, checked
(frame count), fsynced, renamed to ``segments/<i>.mkv``, then ``segments/<i>.json`` records its frame
count and sha256. A rerun skips a segment whose file and record match the plan; a killed worker leaves
at most a temp file (removed by the next run).
"""

from __future__ import annotations

import logging
import os
import queue
import socket
import threading
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from reelforge_sr import framerate, held
from reelforge_sr.atomic import publish, read_json, remove_stale_temps, temp_name, write_json
from reelforge_sr.engine import Upscaler, default_threads, pick_device
from reelforge_sr.errors import SegmentError
from reelforge_sr.ffmpeg_cli import FFPROBE, encoders, require_version, run
from reelforge_sr.frames_io import FrameDecoder, FrameEncoder, decode_args, encoder_args
from reelforge_sr.models.weights import file_sha256, load_model
from reelforge_sr.plan import read_plan

log = logging.getLogger(__name__)
END = object()


def segment_paths(workdir: Path, index: int) -> tuple[Path, Path]:
    """``segments/<index:05d>.mkv`` and its record ``segments/<index:05d>.json``."""
    seg_dir = workdir / "segments"
    return seg_dir / f"{index:05d}.mkv", seg_dir / f"{index:05d}.json"


def completed_record(plan: dict[str, Any], workdir: Path, index: int, *, verify_hash: bool = True) -> dict | None:
    """The record of a finished segment that matches the plan, else None."""
    video, record_path = segment_paths(workdir, index)
    if not (video.is_file() and record_path.is_file()):
        return None
    try:
        record = read_json(record_path)
    except (OSError, ValueError):
        return None
    seg = plan["segments"][index]
    if (record.get("plan_digest") != plan["digest"] or record.get("start_frame") != seg["start_frame"]
            or record.get("end_frame") != seg["end_frame"] or record.get("frames") != seg["frames"]
            or record.get("out_frames", record.get("frames")) != seg.get("out_frames", seg["frames"])
            or record.get("bytes") != video.stat().st_size):
        return None
    if verify_hash and record.get("sha256") != file_sha256(video):
        return None
    return record


def count_packets(path: Path) -> int:
    out = run([FFPROBE, "-v", "error", "-select_streams", "v:0", "-count_packets", "-show_entries",
               "stream=nb_read_packets", "-of", "csv=p=0", str(path)], what=f"counting frames of {path.name}")
    text = out.stdout.decode().strip().split(",")[0]
    return int(text) if text.isdigit() else -1


def _put(q: queue.Queue, item: Any, stop: threading.Event) -> bool:
    while True:
        try:
            q.put(item, timeout=0.2)
            return True
        except queue.Full:
            if stop.is_set() and item is not END:
                return False


def _outputs(frames: np.ndarray, shown: np.ndarray, calls: list[int], sources: list[int], ups: np.ndarray | None,
             anchor_in: np.ndarray | None, anchor_out: np.ndarray | None,
             ) -> tuple[np.ndarray | None, np.ndarray | None, np.ndarray | None]:
    """The batch's output frames (each shown frame's picture, repeated as the plan shows it) and the new anchor."""
    if not sources:
        return None, anchor_in, anchor_out
    counts = shown[shown > 0]
    if ups is not None and len(calls) == len(frames) and (counts == 1).all():
        out = ups  # every frame upscaled and shown once: no copy
    else:
        if anchor_out is None:
            pool = ups
        else:
            pool = anchor_out[None] if ups is None else np.concatenate([anchor_out[None], ups])
        out = np.repeat(pool[np.asarray(sources) + (anchor_out is not None)], counts, axis=0)
    if calls:
        anchor_in, anchor_out = frames[calls[-1]], ups[-1]
    return out, anchor_in, anchor_out


def run_segment(workdir: str | Path, index: int, *, model_dir: str | None = None, device: str = "auto",
                threads: int | None = None, batch: int | None = None, precision: str = "auto",
                max_pixels: int | None = None, allow_download: bool | None = None) -> dict[str, Any]:
    """Produce segment ``index`` of the plan in ``workdir``; return its record (``skipped`` if it was done)."""
    workdir = Path(workdir).resolve()
    plan = read_plan(workdir)
    n_segments = len(plan["segments"])
    if not 0 <= index < n_segments:
        raise SegmentError(f"segment index {index} is outside the plan's 0..{n_segments - 1}")
    seg = plan["segments"][index]
    final, record_path = segment_paths(workdir, index)
    done = completed_record(plan, workdir, index)
    if done:
        log.info("segment %d already complete (%d frames, sha256 %s): skipped", index, done["frames"], done["sha256"])
        return {**done, "skipped": True}
    require_version()
    source = Path(plan["source"])
    if not source.is_file() or source.stat().st_size != plan["source_size"]:
        raise SegmentError(f"the source {source} is missing or changed since planning: plan again")
    final.parent.mkdir(parents=True, exist_ok=True)
    if final.exists() and not final.is_file():
        raise SegmentError(f"{final} exists and is not a regular file: it cannot be replaced")
    for stale in remove_stale_temps(final):
        log.info("removed stale temp file %s", stale)
    codec = plan["encode"]["codec"]
    if "nvenc" in codec and codec not in encoders():
        raise SegmentError(f"the plan asks for {codec} but this ffmpeg has no such encoder")

    threads = threads or default_threads()
    if precision == "auto" and plan["decode"]["ten_bit"] and pick_device(device).type == "cpu":
        precision = "fp32"  # bf16 keeps 8 significant bits: not enough for 10-bit input
    geo, dec_cfg = plan["geometry"], plan["decode"]
    w, h, pix = geo["decode_width"], geo["decode_height"], dec_cfg["pix_fmt"]
    scale = plan["settings"]["scale"]
    tmp = temp_name(final)
    count = seg["frames"]
    out_count = seg.get("out_frames", count)
    all_repeats = framerate.plan_repeats(plan)
    repeats = None if all_repeats is None else all_repeats[seg["start_frame"]:seg["end_frame"]]
    started = time.monotonic()
    # ffmpeg children start first: their start-up overlaps loading the model
    preroll = seg.get("preroll", 0)
    decoder = FrameDecoder(decode_args(plan["source"], plan["probe"]["video"]["index"], seg["seek"], count + preroll,
                                       dec_cfg["filters"], pix, threads=min(2, threads)),
                           w, h, pix, count + preroll)
    encoder = FrameEncoder(encoder_args(plan, tmp, w * scale, h * scale, pix))
    try:
        loaded = load_model(plan["model"], model_dir, allow_download=allow_download)
        engine = Upscaler(loaded.net, scale=scale, device=device, precision=precision, threads=threads,
                          max_pixels=max_pixels, max_batch=batch)
    except BaseException:
        decoder.kill()
        encoder.kill()
        tmp.unlink(missing_ok=True)
        raise
    per_pass = engine.frames_per_pass(h, w)
    log.info("segment %d: frames [%d, %d) of %s, model %s on %s (%s, %d threads, %d frame(s) per pass)", index,
             seg["start_frame"], seg["end_frame"], plan["source"], plan["model"], engine.info.device,
             engine.info.dtype, threads, per_pass)
    stop = threading.Event()
    errors: list[BaseException] = []
    q_in: queue.Queue = queue.Queue(maxsize=2)
    q_out: queue.Queue = queue.Queue(maxsize=2)
    timings = {"model_s": 0.0, "reuse_check_s": 0.0}
    reuse = plan.get("reuse") or {}
    bound = held.Bound.from_dict(reuse["bound"]) if reuse.get("enabled") else None

    def reader() -> None:
        try:
            if preroll and decoder.read(preroll) is None:
                raise SegmentError(f"segment {index}: no frames for the {preroll}-frame pre-roll")
            while not stop.is_set():
                frames = decoder.read(per_pass)
                if frames is None:
                    decoder.finish()
                    break
                if not _put(q_in, frames, stop):
                    break
        except BaseException as exc:  # noqa: BLE001 - handed to the main thread
            errors.append(exc)
            stop.set()
        finally:
            _put(q_in, END, stop)

    def writer() -> None:
        try:
            while (item := q_out.get()) is not END:
                if not stop.is_set():
                    encoder.write(item)
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)
            stop.set()
            while q_out.get() is not END:
                pass

    threads_ = [threading.Thread(target=reader, name="decode", daemon=True),
                threading.Thread(target=writer, name="encode", daemon=True)]
    for t in threads_:
        t.start()
    produced = 0  # source frames through the model step (dropped ones included)
    model_calls = shown_frames = 0
    anchor_in: np.ndarray | None = None  # the last model input and its output, for held-frame reuse
    anchor_out: np.ndarray | None = None
    last_log = started
    try:
        while (frames := q_in.get()) is not END:
            if stop.is_set():
                continue
            shown = (np.ones(len(frames), np.int64) if repeats is None
                     else np.asarray(repeats[produced:produced + len(frames)]))
            try:
                t0 = time.monotonic()
                calls, sources = held.plan_reuse(frames, shown, anchor_in, bound)
                t1 = time.monotonic()
                ups = None if not calls else engine(frames if len(calls) == len(frames) else frames[calls])
                timings["model_s"] += time.monotonic() - t1
                timings["reuse_check_s"] += t1 - t0
                out, anchor_in, anchor_out = _outputs(frames, shown, calls, sources, ups, anchor_in, anchor_out)
            except Exception as exc:
                errors.append(SegmentError(f"model failed on frames {seg['start_frame'] + produced}+: {exc}"))
                stop.set()
                continue
            model_calls += len(calls)
            shown_frames += len(sources)
            produced += len(frames)
            if out is not None:
                _put(q_out, out, stop)
            if time.monotonic() - last_log > 30:
                last_log = time.monotonic()
                log.info("segment %d: %d/%d frames, %.2f frames/s", index, produced, count,
                         produced / (last_log - started))
        _put(q_out, END, stop)
        for t in threads_:
            t.join()
        if errors:
            raise errors[0]
        encoder.close()
        if produced != count or encoder.written != out_count:
            raise SegmentError(f"segment {index}: {produced} of {count} source frames decoded, "
                               f"{encoder.written} of {out_count} output frames encoded")
        packets = count_packets(tmp)
        if packets != out_count:
            raise SegmentError(f"segment {index}: encoded file holds {packets} frames, planned {out_count}")
        try:
            publish(tmp, final)
        except OSError as exc:
            raise SegmentError(f"cannot publish {final}: {exc}") from exc
    except BaseException:
        stop.set()
        decoder.kill()
        encoder.kill()
        tmp.unlink(missing_ok=True)
        raise
    elapsed = time.monotonic() - started
    record = {
        "index": index, "start_frame": seg["start_frame"], "end_frame": seg["end_frame"], "frames": count,
        "out_frames": out_count, "model_frames": model_calls, "shown_frames": shown_frames,
        "reused_frames": shown_frames - model_calls, "preroll": preroll,
        "file": final.name, "bytes": final.stat().st_size, "sha256": file_sha256(final),
        "plan_digest": plan["digest"], "model": plan["model"], "weights": loaded.source,
        "engine": asdict(engine.info), "encoder": codec, "elapsed_s": round(elapsed, 3),
        "model_s": round(timings["model_s"], 3), "reuse_check_s": round(timings["reuse_check_s"], 3),
        "frames_per_s": round(count / elapsed, 3) if elapsed else None,
        "host": socket.gethostname(), "pid": os.getpid(),
        "slurm_job": os.environ.get("SLURM_ARRAY_JOB_ID") or os.environ.get("SLURM_JOB_ID"),
    }
    write_json(record_path, record)
    log.info("segment %d: %d frames in %.1fs (%.2f frames/s), %d model calls for %d shown frames → %s", index, count,
             elapsed, count / elapsed, model_calls, shown_frames, final)
    return {**record, "skipped": False}
