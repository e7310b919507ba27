"""Moore-AnimateAnyone's real trainers through our stage entrypoint (``reelforge-aa launch``), on the CPU.

The cluster venv and the pinned, patched snapshot (``tests/e2e/animate_anyone/cluster_env.py``); the
``moore-cpu`` payload (``reelforge_aa.moore_cpu``: CUDA device → CPU, torchvision op schemas, tiny random
models). Data is our manifest format over tiny generated clips; MLflow is a SQLite store. Stage 1 runs two
steps, is resumed past an incomplete newest checkpoint to a third, and stage 2 starts from its weights.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from reelforge.animate_anyone.manifest import parse_manifest

pytestmark = [pytest.mark.stack, pytest.mark.slow]


@pytest.fixture(scope="module")
def cluster() -> dict[str, Path]:
    from tests.e2e.animate_anyone.cluster_env import ensure_moore, ensure_venv

    return {"venv": ensure_venv(), "code": ensure_moore()}


def make_clips(data: Path, count: int) -> Path:
    from tests.e2e.animate_anyone.cluster_env import make_clips as make

    manifest = make(data, count)
    assert parse_manifest(manifest.read_bytes()) == json.loads(manifest.read_text())  # what the DAG stages
    return manifest


def launch(cluster: dict[str, Path], env: dict[str, str], log: Path) -> str:
    """One node's ``reelforge-aa launch`` (what the sbatch script's srun runs); returns its output."""
    full = {k: v for k, v in os.environ.items() if not k.startswith(("AA_", "MLFLOW_", "SLURM_"))}
    full.update(env, AA_PAYLOAD="moore-cpu", AA_LAUNCHER="accelerate", AA_CODE_DIR=str(cluster["code"]),
                OMP_NUM_THREADS="2", PYTHONUNBUFFERED="1")
    python = str(cluster["venv"] / "bin" / "python")
    with log.open("w") as fh:
        proc = subprocess.run([python, "-m", "reelforge_aa", "launch"], env=full, stdout=fh,
                              stderr=subprocess.STDOUT, timeout=600)
    out = log.read_text()
    assert proc.returncode == 0, out[-4000:]
    return out


def mlflow_run(cluster: dict[str, Path], env: dict[str, str]) -> str:
    """The glue's ``mlflow-run`` (as the sbatch script calls it): the run Moore's tracker must attach to."""
    full = {**os.environ, **env}
    out = subprocess.run([str(cluster["venv"] / "bin" / "python"), "-m", "reelforge_aa", "mlflow-run"], env=full,
                         check=True, capture_output=True, text=True, timeout=120).stdout
    return out.strip().splitlines()[-1]


def train_loss_steps(cluster: dict[str, Path], uri: str, run_id: str) -> list[int]:
    code = ("import json, sys; from mlflow import MlflowClient; "
            "h = MlflowClient(sys.argv[1]).get_metric_history(sys.argv[2], 'train_loss'); "
            "print(json.dumps(sorted(m.step for m in h)))")
    out = subprocess.run([str(cluster["venv"] / "bin" / "python"), "-c", code, uri, run_id], check=True,
                         capture_output=True, text=True, timeout=120).stdout
    return json.loads(out.strip().splitlines()[-1])


def test_stage_entrypoints_run_moore_train_resume_and_hand_over(cluster, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MLflow's file-backed artifact root is ./mlruns: here, not in the checkout
    import torch

    manifest = make_clips(tmp_path / "data", 2)
    root = tmp_path / "training"
    run_dir = root / "stage1" / "sweep-00-test"
    tracking = {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
                "MLFLOW_EXPERIMENT_NAME": "reelforge-animate-anyone-test"}
    stage1 = {**tracking, "AA_STAGE": "stage1", "AA_OUTPUT_DIR": str(root / "stage1"),
              "AA_EXP_NAME": run_dir.name, "AA_MANIFEST": str(manifest)}
    run_id = mlflow_run(cluster, {**stage1, "AA_RUN_KEY": "test/stage1/sweep-00-test"})
    stage1["MLFLOW_RUN_ID"] = run_id
    steps = {"solver.max_train_steps": 2, "checkpointing_steps": 1, "save_model_epoch_interval": 1}

    # 1. Two steps of train_stage_1.py: a checkpoint per step, completed by the patch; weights at the epoch end.
    out = launch(cluster, {**stage1, "AA_OVERRIDES": json.dumps(steps)}, tmp_path / "stage1-a.log")
    assert "node 0: starting from scratch" in out
    assert f"running {cluster['code'] / 'train_stage_1.py'}" in out
    assert "Num examples = 2" in out and "Device: cpu" in out
    for step in (1, 2):
        assert (run_dir / f"checkpoint-{step}" / "reelforge.complete").read_text() == str(step)
    assert {p.name for p in run_dir.glob("*.pth")} == {f"{m}-2.pth" for m in
                                                       ("denoising_unet", "reference_unet", "pose_guider")}
    assert json.loads((root / "tiny-models" / "reelforge-tiny-models.json").read_text())["written"]
    first = torch.load(run_dir / "denoising_unet-2.pth", map_location="cpu")

    # 2. A newer checkpoint without its completion marker (a job killed while saving) is moved aside, so
    #    Moore's "highest checkpoint-*" rule resumes from checkpoint-2 and global_step goes on to 3.
    (run_dir / "checkpoint-7").mkdir()
    (run_dir / "checkpoint-7" / "pytorch_model.bin").write_bytes(b"partial")
    out = launch(cluster, {**stage1, "AA_OVERRIDES": json.dumps({**steps, "solver.max_train_steps": 3})},
                 tmp_path / "stage1-b.log")
    assert "moved incomplete checkpoint aside: .incomplete-checkpoint-7" in out
    assert "node 0: starting from checkpoint-2" in out and "Resuming from checkpoint checkpoint-2" in out
    assert (run_dir / "checkpoint-3" / "reelforge.complete").is_file()
    third = torch.load(run_dir / "denoising_unet-3.pth", map_location="cpu")
    assert any(not torch.equal(first[k], third[k]) for k in first), "step 3 changed no weight"
    # Moore's accelerate MLflow tracker logged into the glue's run, across the resume.
    assert train_loss_steps(cluster, tracking["MLFLOW_TRACKING_URI"], run_id) == [1, 2, 3]

    # 3. train_stage_2.py from the stage-1 weights of step 3: the frozen modules are exactly those weights.
    stage2_dir = root / "stage2" / "main"
    stage2 = {**tracking, "AA_STAGE": "stage2", "AA_OUTPUT_DIR": str(root / "stage2"), "AA_EXP_NAME": "main",
              "AA_MANIFEST": str(manifest), "AA_STAGE1_CKPT_DIR": str(run_dir), "AA_STAGE1_CKPT_STEP": "3",
              "AA_OVERRIDES": json.dumps(steps)}
    out = launch(cluster, stage2, tmp_path / "stage2.log")
    assert f"running {cluster['code'] / 'train_stage_2.py'}" in out and "Load motion module params" in out
    assert (stage2_dir / "motion_module-2.pth").is_file()
    net = torch.load(stage2_dir / "checkpoint-2" / "pytorch_model.bin", map_location="cpu")
    for module in ("reference_unet", "pose_guider"):
        saved = torch.load(run_dir / f"{module}-3.pth", map_location="cpu")
        assert all(torch.equal(net[f"{module}.{k}"], v) for k, v in saved.items()), module
    spatial = {k: v for k, v in third.items() if f"denoising_unet.{k}" in net}
    assert len(spatial) == len(third)  # every stage-1 tensor has its place in the 3D UNet
    assert all(torch.equal(net[f"denoising_unet.{k}"], v) for k, v in spatial.items())
    motion = [k for k in net if "motion_modules" in k]
    assert motion and all(not k.startswith(("reference_unet", "pose_guider")) for k in motion)
    shutil.rmtree(root)  # ~1.5 GB of checkpoints and weights
