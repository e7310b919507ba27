"""The worker's pipeline leaves the cores to the model: lower-priority encoder, big pipes, sleeping OMP threads."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from reelforge_sr import frames_io
from reelforge_sr.cli import RUNTIME_ENV
from reelforge_sr.ffmpeg_cli import FFMPEG, PIPE_BYTES, grow_pipe

SRC = Path(__file__).resolve().parents[3] / "containers" / "sr" / "src"


def null_encoder_args() -> list[str]:
    return [FFMPEG, "-nostdin", "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", "16x8", "-framerate", "1",
            "-i", "pipe:0", "-f", "null", "-"]


def test_encoder_runs_at_lower_priority_with_a_large_pipe():
    enc = frames_io.FrameEncoder(null_encoder_args())
    try:
        assert os.getpriority(os.PRIO_PROCESS, enc.proc.pid) == os.nice(0) + frames_io.ENCODER_NICE
        limit = int(Path("/proc/sys/fs/pipe-max-size").read_text())
        assert grow_pipe(enc.proc.stdin) >= min(PIPE_BYTES, limit)
        enc.write(np.zeros((3, 8, 16, 3), np.uint8))
    finally:
        enc.close()
    assert enc.written == 3


def test_encoder_priority_can_be_left_alone():
    enc = frames_io.FrameEncoder(null_encoder_args(), nice=0)
    try:
        assert os.getpriority(os.PRIO_PROCESS, enc.proc.pid) == os.nice(0)
    finally:
        enc.close()


def run_cli_then_report_env(env: dict[str, str]) -> str:
    code = ("import os, sys; from reelforge_sr.cli import main; main(['-q', 'probe', '/nonexistent.mp4']); "
            "print('torch' in sys.modules, os.environ.get('OMP_WAIT_POLICY'))")  # probe does not load torch
    out = subprocess.run([sys.executable, "-c", code], env={**env, "PYTHONPATH": str(SRC)}, capture_output=True,
                         text=True, check=True)
    return out.stdout.strip()


def test_cli_sets_the_omp_wait_policy_unless_given():
    env = {k: v for k, v in os.environ.items() if k not in RUNTIME_ENV}
    assert run_cli_then_report_env(env) == f"False {RUNTIME_ENV['OMP_WAIT_POLICY']}"  # before torch is loaded
    assert run_cli_then_report_env({**env, "OMP_WAIT_POLICY": "ACTIVE"}) == "False ACTIVE"
