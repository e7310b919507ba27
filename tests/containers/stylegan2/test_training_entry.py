"""The training entry: hyper-parameter mapping, resume across starts, failure file, SIGTERM.

NVlabs' train.py is replaced by ``nvlabs_train_double.py`` (a test double, see its docstring), which
writes snapshots in NVlabs' naming and pickles a real tiny generator, so export runs for real too.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from reelforge_stylegan2.cli import main
from reelforge_stylegan2.export import load_exported
from reelforge_stylegan2.sm import UserError
from reelforge_stylegan2.training import parse_hyperparameters, progress, train_command

HERE = Path(__file__).resolve().parent
DOUBLE = HERE / "nvlabs_train_double.py"
SRC = HERE.parents[2] / "containers" / "stylegan2" / "src"


@pytest.fixture
def job(opt_ml, tmp_path, monkeypatch):
    """A training job's /opt/ml: hyper-parameters, the 'train' channel, the double as train.py."""
    channel = opt_ml.channel("train")
    channel.mkdir(parents=True)
    (channel / "dataset.zip").write_bytes(b"PK\x05\x06" + b"\x00" * 18)  # the double only checks it exists
    opt_ml.hyperparameters.write_text(json.dumps({"kimg": "12", "snap": "1", "gamma": "6.5", "aug": "ada",
                                                  "mirror": "true", "keep_snapshots": "2"}))
    argv_log = tmp_path / "argv.jsonl"
    monkeypatch.setenv("STYLEGAN2_TRAIN_SCRIPT", str(DOUBLE))
    monkeypatch.setenv("DOUBLE_ARGV_LOG", str(argv_log))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(HERE), os.environ.get("PYTHONPATH", "")]))

    def starts() -> list[dict]:
        if not argv_log.exists():
            return []
        return [dict(a[2:].split("=", 1) for a in json.loads(line)) for line in argv_log.read_text().splitlines()]

    return opt_ml, starts


def test_hyperparameters_map_to_train_py_options():
    hp = parse_hyperparameters({"kimg": "5000", "gamma": "0.8192", "aug": "ada", "target": "0.7",
                                "mirror": "False", "cfg": "paper256", "batch": "32", "sagemaker_region": "x"})
    argv = train_command(hp, script="/nv/train.py", runs=Path("/ck/runs"), data=Path("/d/dataset.zip"), kimg=1200,
                         resume=None, gpus=4)
    assert argv[1:] == ["/nv/train.py", "--outdir=/ck/runs", "--data=/d/dataset.zip", "--kimg=1200", "--gpus=4",
                        "--aug=ada", "--batch=32", "--cfg=paper256", "--gamma=0.8192",
                        "--metrics=fid50k_full,kid50k_full", "--mirror=0", "--snap=50", "--target=0.7"]
    transfer = parse_hyperparameters({"transfer": "ffhq256"})
    assert train_command(transfer, script="t", runs=Path("r"), data=Path("d"), kimg=1, resume=None,
                         gpus=1)[-1] == "--resume=ffhq256"
    assert train_command(transfer, script="t", runs=Path("r"), data=Path("d"), kimg=1, resume=Path("/s.pkl"),
                         gpus=1)[-1] == "--resume=/s.pkl"


@pytest.mark.parametrize(("raw", "message"), [
    ({"kimgs": "10"}, "unknown hyper-parameters ['kimgs']"),
    ({"kimg": "ten"}, "kimg='ten'"),
    ({"mirror": "maybe"}, "not a boolean"),
    ({"aug": "ada", "p": "0.2"}, "p needs aug=fixed"),
    ({"cfg": "paper2048"}, "is not one of"),
    ({"metrics": "fid50k_full;rm -rf"}, "metric names"),
])
def test_bad_hyperparameters_are_refused(raw, message):
    with pytest.raises(UserError, match=message.replace("[", r"\[").replace("]", r"\]")):
        parse_hyperparameters(raw)


def test_crash_writes_the_failure_file_and_the_next_start_resumes(job):
    opt_ml, starts = job
    os.environ["DOUBLE_FAIL_AFTER_KIMG"] = "4"
    try:
        assert main(["train"]) == 1
    finally:
        del os.environ["DOUBLE_FAIL_AFTER_KIMG"]
    failure = (opt_ml.output / "failure").read_text()
    assert failure.startswith("train: RuntimeError: train.py exited with 1")
    assert "CUDA error: an illegal memory access" in failure
    runs = opt_ml.checkpoints / "runs"
    (first_run,) = runs.iterdir()
    # snapshots at 0 and 4 kimg, then one cut short mid-write: the complete newest is 4 kimg
    assert progress(runs).done_kimg == 4 and progress(runs).newest.path.name == "network-snapshot-000004.pkl"
    (first,) = starts()
    assert first["kimg"] == "12" and "resume" not in first
    assert {k: first[k] for k in ("gamma", "aug", "mirror", "snap", "metrics", "gpus")} == {
        "gamma": "6.5", "aug": "ada", "mirror": "1", "snap": "1", "metrics": "fid50k_full,kid50k_full", "gpus": "1"}
    assert first["outdir"] == str(runs) and first["data"] == str(opt_ml.channel("train") / "dataset.zip")

    # The job restarts (spot capacity back, or an Airflow retry on the same checkpoint URI).
    (opt_ml.output / "failure").unlink()
    assert main(["train"]) == 0
    second = starts()[1]
    assert second["kimg"] == "8"  # 12 in total, 4 already done
    assert second["resume"] == str(first_run / "network-snapshot-000004.pkl")
    assert progress(runs).done_kimg == 12
    assert not (opt_ml.output / "failure").exists()

    # Pruning: the earlier run keeps only its newest snapshot (the cut-short one is gone), the last run 2.
    assert sorted(p.name for p in first_run.glob("*.pkl")) == ["network-snapshot-000004.pkl"]
    last_run = sorted(runs.iterdir())[-1]
    assert sorted(p.name for p in last_run.glob("*.pkl")) == ["network-snapshot-000004.pkl",
                                                              "network-snapshot-000008.pkl"]

    metrics = json.loads((opt_ml.model / "metrics.json").read_text())
    assert metrics == {"fid50k_full": 20.0, "kid50k_full": 0.004, "kimg": 12, "resolution": 16,
                       "snapshot": f"{last_run.name}/network-snapshot-000008.pkl"}
    assert json.loads((opt_ml.checkpoints / "reelforge-metrics.json").read_text()) == metrics
    final_pkl = last_run / "network-snapshot-000008.pkl"
    assert (opt_ml.model / "network-snapshot.pkl").read_bytes() == final_pkl.read_bytes()
    module, meta = load_exported(opt_ml.model / "generator.pt")
    assert meta["img_resolution"] == 16 and meta["source"] == metrics["snapshot"]
    img = module(torch.randn(1, meta["z_dim"]), torch.zeros(1, 0), torch.ones(1))
    assert img.shape == (1, 3, 16, 16)
    assert "fid50k_full=20.0" in (opt_ml.output / "message").read_text()

    # A start after all kimg are done (e.g. interrupted during export) only exports again.
    assert main(["train"]) == 0
    assert len(starts()) == 2


def test_sigterm_stops_train_py_without_a_failure_file(job, tmp_path):
    opt_ml, starts = job
    marker = tmp_path / "first-snapshot"
    env = {**os.environ, "DOUBLE_HANG_AFTER_FIRST": str(marker),
           "PYTHONPATH": os.pathsep.join([str(SRC), str(HERE)])}
    proc = subprocess.Popen([sys.executable, "-m", "reelforge_stylegan2", "train"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        for _ in range(600):  # wait (up to a minute) until the double has written its first snapshot
            if marker.exists() or proc.poll() is not None:
                break
            time.sleep(0.1)
        assert marker.exists(), proc.communicate(timeout=30)[0]
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143, out
    assert "interrupted" in out
    assert not (opt_ml.output / "failure").exists()
    assert progress(opt_ml.checkpoints / "runs").newest.kimg == 0
    assert len(starts()) == 1
