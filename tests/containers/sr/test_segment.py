"""One segment: exact frame ranges, model fidelity, atomic publication, idempotence, failures."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from reelforge_sr import segment as segment_mod
from reelforge_sr.atomic import remove_stale_temps
from reelforge_sr.cli import main
from reelforge_sr.errors import SegmentError
from reelforge_sr.frames_io import FrameDecoder, decode_args
from reelforge_sr.models import SRVGGNetCompact, load_model
from reelforge_sr.plan import PlanSettings, build_plan, plan_digest, read_plan, write_plan
from reelforge_sr.quality import psnr
from reelforge_sr.segment import run_segment, segment_paths


def decode_all(path: Path, filters: str, width: int, height: int) -> np.ndarray:
    out = subprocess.run(["ffmpeg", "-v", "error", "-i", str(path), "-map", "0:v:0", "-fps_mode", "passthrough",
                          "-vf", filters, "-f", "rawvideo", "-pix_fmt", "rgb24", "-"], capture_output=True,
                         check=True).stdout
    return np.frombuffer(out, np.uint8).reshape(-1, height, width, 3)


def make_plan(source: Path, workdir: Path, **settings) -> dict:
    plan = build_plan(source, workdir, PlanSettings(**settings))
    write_plan(plan, workdir)
    return plan


def test_each_segment_decodes_exactly_its_frames(clips, tmp_path):
    plan = make_plan(clips["av"], tmp_path, model="anime", segment_seconds=0.4)
    assert len(plan["segments"]) >= 3
    filters = plan["decode"]["filters"]
    full = decode_all(clips["av"], filters, 64, 36)
    assert len(full) == 36
    for seg in plan["segments"]:
        dec = FrameDecoder(decode_args(plan["source"], 0, seg["seek"], seg["frames"], filters, "rgb24"),
                           64, 36, "rgb24", seg["frames"])
        frames = dec.read(seg["frames"])
        dec.finish()
        assert np.array_equal(frames, full[seg["start_frame"]:seg["end_frame"]]), seg


def test_segment_output_matches_a_frame_by_frame_reference(clips, tmp_path, model_dir):
    """Segment 1 (a seek), live-action model from its ncnn weights, lossless x264: ≥ 45 dB per frame."""
    plan = make_plan(clips["av"], tmp_path, model="live-action", segment_seconds=0.5, crf=0)
    assert main(["-q", "segment", "--workdir", str(tmp_path), "--index", "1", "--model-dir", str(model_dir),
                 "--threads", "2"]) == 0
    seg = plan["segments"][1]
    src = decode_all(clips["av"], plan["decode"]["filters"], 64, 36)[seg["start_frame"]:seg["end_frame"]]
    loaded = load_model("realesr-general-x4v3", model_dir)
    ref_net = SRVGGNetCompact(num_conv=32)
    ref_net.load_state_dict(loaded.net.state_dict())
    with torch.no_grad():  # the RealESRGANer way: one frame at a time, contiguous NCHW fp32
        ref = np.stack([(ref_net(torch.from_numpy(f.copy()).permute(2, 0, 1)[None].float() / 255).clamp(0, 1) * 255)
                        .round().byte()[0].permute(1, 2, 0).numpy() for f in src])
    col = plan["colour"]
    out = decode_all(segment_paths(tmp_path, 1)[0], f"scale=in_color_matrix={col['matrix']}:in_range={col['range']}"
                     ":flags=bicubic+accurate_rnd+full_chroma_int,format=rgb24", 256, 144)
    assert out.shape == ref.shape == (seg["frames"], 144, 256, 3)
    scores = [psnr(o, r) for o, r in zip(out, ref, strict=True)]
    assert min(scores) >= 45, scores
    # the comparison can tell frames apart: one frame off scores far lower
    assert max(psnr(o, r) for o, r in zip(out[1:], ref[:-1], strict=True)) < 35
    record = json.loads(segment_paths(tmp_path, 1)[1].read_text())
    assert record["frames"] == seg["frames"] and record["weights"]["format"] == "ncnn"


def test_rerun_skips_a_finished_segment_and_redoes_a_stale_one(clips, tmp_path, model_dir):
    make_plan(clips["av"], tmp_path, model="anime", segment_seconds=0.5)
    first = run_segment(tmp_path, 0, model_dir=model_dir, threads=2)
    video, record = segment_paths(tmp_path, 0)
    stamp = (video.stat().st_mtime_ns, record.stat().st_mtime_ns)
    again = run_segment(tmp_path, 0, model_dir=model_dir, threads=2)
    assert not first["skipped"] and again["skipped"] and again["sha256"] == first["sha256"]
    assert (video.stat().st_mtime_ns, record.stat().st_mtime_ns) == stamp
    # a record that does not match the file (e.g. a partial copy) is not trusted
    rec = json.loads(record.read_text())
    record.write_text(json.dumps({**rec, "sha256": "0" * 64}))
    assert not run_segment(tmp_path, 0, model_dir=model_dir, threads=2)["skipped"]


def start_slow_segment(workdir: Path, model_dir: Path, *extra: str) -> subprocess.Popen:
    """``reelforge-sr segment`` of segment 0 in a child process, slowed down (1 thread, batch 1, many tiles)
    so that a test can interrupt it; returns once it has started writing its temp output."""
    video, _ = segment_paths(workdir, 0)
    cmd = [sys.executable, "-m", "reelforge_sr", "-q", "segment", "--workdir", str(workdir), "--index", "0",
           "--model-dir", str(model_dir), "--threads", "1", "--batch", "1", "--max-pixels", "1600", *extra]
    proc = subprocess.Popen(cmd, env={**os.environ, "REELFORGE_OFFLINE": "1"}, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(video.parent.glob(f"{video.name}.*.tmp")):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "the worker never started encoding"
        time.sleep(0.02)
    return proc


def test_killed_worker_leaves_no_partial_final_file(clips, tmp_path, model_dir):
    make_plan(clips["av"], tmp_path, model="live-action", segment_seconds=100)
    video, record = segment_paths(tmp_path, 0)
    proc = start_slow_segment(tmp_path, model_dir)
    time.sleep(0.5)  # let it write some frames
    assert proc.poll() is None, "the worker finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not video.exists() and not record.exists()
    leftovers = list(video.parent.glob(f"{video.name}.*.tmp"))
    assert leftovers  # at most a temp file is left
    # the rerun removes the stale temp and finishes the segment
    result = run_segment(tmp_path, 0, model_dir=model_dir, threads=2)
    assert not result["skipped"] and result["frames"] == 36 and video.is_file()
    assert not list(video.parent.glob("*.tmp"))


def test_sigterm_unwinds_cleanly_with_a_failure_file(clips, tmp_path, model_dir):
    make_plan(clips["av"], tmp_path, model="live-action", segment_seconds=100)
    video, record = segment_paths(tmp_path, 0)
    proc = start_slow_segment(tmp_path, model_dir, "--precision", "fp32")  # the signal must land mid-segment
    time.sleep(0.3)  # inside the frame loop
    assert proc.poll() is None, "the worker finished before it could be signalled"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 1
    assert "terminated by signal 15" in proc.stderr.read().decode()
    assert "terminated by signal 15" in (tmp_path / "failure").read_text()
    assert not video.exists() and not record.exists() and not list(video.parent.glob("*.tmp"))


def test_decoder_shortfall_is_an_error_not_a_skip(clips, tmp_path, model_dir, capsys):
    plan = build_plan(clips["av"], tmp_path, PlanSettings(model="anime", segment_seconds=100))
    plan["segments"][0]["end_frame"] += 3  # the plan promises 3 frames the source does not have
    plan["segments"][0]["frames"] += 3
    plan["total_frames"] += 3
    plan["digest"] = plan_digest(plan)
    write_plan(plan, tmp_path)
    assert main(["-q", "segment", "--workdir", str(tmp_path), "--index", "0", "--model-dir", str(model_dir)]) == 1
    assert "decoder stopped after 36 of 39 frames" in capsys.readouterr().err
    assert "decoder stopped" in (tmp_path / "failure").read_text()
    video, record = segment_paths(tmp_path, 0)
    assert not video.exists() and not record.exists() and not list(video.parent.glob("*.tmp"))


def test_encoder_failure_is_an_error(clips, tmp_path, model_dir, monkeypatch):
    make_plan(clips["av"], tmp_path, model="anime", segment_seconds=100)
    real = segment_mod.encoder_args

    def quits_after_5_frames(*args, **kwargs):
        argv = real(*args, **kwargs)
        return [*argv[:-3], "-frames:v", "5", *argv[-3:]]  # ffmpeg stops reading its input early

    monkeypatch.setattr(segment_mod, "encoder_args", quits_after_5_frames)
    with pytest.raises(SegmentError, match="encode"):
        run_segment(tmp_path, 0, model_dir=model_dir, threads=2)
    video, _ = segment_paths(tmp_path, 0)
    assert not video.exists() and not list(video.parent.glob("*.tmp"))


def test_model_failure_is_an_error(clips, tmp_path, model_dir, monkeypatch):
    make_plan(clips["av"], tmp_path, model="anime", segment_seconds=100)

    def boom(self, frames):
        raise RuntimeError("CUDA out of memory (simulated)")

    monkeypatch.setattr(segment_mod.Upscaler, "__call__", boom)
    with pytest.raises(SegmentError, match="model failed on frames 0"):
        run_segment(tmp_path, 0, model_dir=model_dir, threads=2)
    video, _ = segment_paths(tmp_path, 0)
    assert not video.exists() and not list(video.parent.glob("*.tmp"))


def test_index_defaults_to_the_slurm_array_task_id(clips, tmp_path, model_dir, monkeypatch, capsys):
    make_plan(clips["av"], tmp_path, model="anime", segment_seconds=0.5)
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    assert main(["-q", "segment", "--workdir", str(tmp_path), "--model-dir", str(model_dir)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["index"] == 2 and segment_paths(tmp_path, 2)[0].is_file()
    assert read_plan(tmp_path)["segments"][2]["frames"] == out["frames"]
    assert main(["-q", "segment", "--workdir", str(tmp_path), "--index", "7"]) == 1


def test_stale_temps_are_removed_but_a_live_workers_temp_is_kept(tmp_path):
    final = tmp_path / "00003.mkv"
    host = socket.gethostname()
    sleeper = subprocess.Popen(["sleep", "30"])
    try:
        dead = subprocess.Popen(["true"])
        dead.wait()
        names = {"live": f"00003.mkv.{host}.{sleeper.pid}.tmp", "dead": f"00003.mkv.{host}.{dead.pid}.tmp",
                 "remote_fresh": "00003.mkv.other-node.123.tmp", "remote_old": "00003.mkv.other-node.456.tmp",
                 "other_index": f"00004.mkv.{host}.{dead.pid}.tmp"}
        for name in names.values():
            (tmp_path / name).write_bytes(b"partial")
        old = time.time() - 3600
        os.utime(tmp_path / names["remote_old"], (old, old))
        removed = {p.name for p in remove_stale_temps(final)}
        assert removed == {names["dead"], names["remote_old"]}
    finally:
        sleeper.kill()
        sleeper.wait()


def test_an_unreplaceable_final_name_fails_clearly(clips, tmp_path, model_dir, capsys):
    make_plan(clips["av"], tmp_path, model="anime", segment_seconds=100)
    video, record = segment_paths(tmp_path, 0)
    video.mkdir(parents=True)
    (video / "keep").write_text("blocks the final name")
    assert main(["-q", "segment", "--workdir", str(tmp_path), "--index", "0", "--model-dir", str(model_dir)]) == 1
    assert "is not a regular file" in capsys.readouterr().err
    assert not record.exists() and not list(video.parent.glob("*.tmp"))
