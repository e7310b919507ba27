"""The ``moore-cpu`` payload's glue without the cluster venv: launcher plan, tiny-model guard, CUDA redirect.

The real trainers run in ``test_moore_cpu.py`` (stack) and the DAG test; these are the fast checks.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from reelforge_aa import config, launch, tiny_models

ROOT = Path(__file__).resolve().parents[3]
SRC = ROOT / "containers" / "animate_anyone" / "src"
CONFIGS = ROOT / "containers" / "animate_anyone" / "configs"


@pytest.fixture(autouse=True)
def _source_tree_configs(monkeypatch):
    """The packaged configs are the source tree's ``configs/`` (the package is not installed here)."""
    monkeypatch.setattr(config, "template_path", lambda stage: CONFIGS / f"{stage}.yaml")


def _env(tmp_path: Path, stage: str, **kw: str) -> dict[str, str]:
    env = {"AA_STAGE": stage, "AA_PAYLOAD": "moore-cpu", "AA_LAUNCHER": "accelerate",
           "AA_OUTPUT_DIR": str(tmp_path / "t1" / stage), "AA_EXP_NAME": "run", "AA_MANIFEST": "/fsx/m.json",
           "AA_MODEL_DIR": "/fsx/models/animate-anyone", "AA_CODE_DIR": "/opt/Moore-AnimateAnyone",
           "AA_OVERRIDES": json.dumps({"solver.max_train_steps": 3, "data.train_bs": 2}), "SLURM_NNODES": "1",
           "AA_STAGE1_CKPT_DIR": str(tmp_path / "t1" / "stage1" / "run"), "AA_STAGE1_CKPT_STEP": "3"}
    env.update(kw)
    return env


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_moore_cpu_plan_switches_cuda_features_off_and_uses_its_own_tiny_models(tmp_path, stage):
    plan = launch.prepare(_env(tmp_path, stage))
    cfg = yaml.safe_load(Path(plan["config"]).read_text())
    assert plan["argv"][-4:] == ["-m", "reelforge_aa.moore_cpu", "--config", plan["config"]]
    assert "--use_deepspeed" not in plan["argv"] and "--multi_gpu" not in plan["argv"]
    solver = cfg["solver"]
    assert solver["mixed_precision"] == "no" and cfg["weight_dtype"] == "fp32"
    assert solver["enable_xformers_memory_efficient_attention"] is False and solver["use_8bit_adam"] is False
    assert cfg["val"]["validation_steps"] > 10**6
    assert solver["max_train_steps"] == 3 and cfg["data"]["train_bs"] == 2  # the run's overrides still win
    assert cfg["data"]["train_width"] == 64
    models = tmp_path / "t1" / "tiny-models"  # shared by both stages of one training, never AA_MODEL_DIR
    assert cfg["vae_model_path"] == str(models / "sd-vae-ft-mse")
    assert Path(cfg["base_model_path"]).parent == models


def test_other_payloads_keep_the_templates_and_model_dir(tmp_path):
    cfg = yaml.safe_load(Path(launch.prepare(_env(tmp_path, "stage1", AA_PAYLOAD="animate-anyone"))["config"])
                         .read_text())
    assert cfg["solver"]["mixed_precision"] == "fp16" and cfg["weight_dtype"] == "fp16"
    assert cfg["vae_model_path"] == "/fsx/models/animate-anyone/sd-vae-ft-mse"


def test_tiny_models_never_write_into_a_directory_of_other_files(tmp_path):
    (tmp_path / "sd-vae-ft-mse").mkdir()
    (tmp_path / "sd-vae-ft-mse" / "diffusion_pytorch_model.safetensors").write_bytes(b"real weights")
    cfg = {"base_model_path": str(tmp_path / "sd-image-variations-diffusers"),
           "vae_model_path": str(tmp_path / "sd-vae-ft-mse"),
           "image_encoder_path": str(tmp_path / "sd-image-variations-diffusers" / "image_encoder")}
    assert tiny_models.model_root(cfg) == tmp_path
    with pytest.raises(RuntimeError, match="not ReelForge's tiny models"):
        tiny_models.ensure(cfg)
    assert (tmp_path / "sd-vae-ft-mse" / "diffusion_pytorch_model.safetensors").read_bytes() == b"real weights"


def test_cuda_device_redirect_maps_only_the_device(tmp_path):
    code = """
import torch
from reelforge_aa.moore_cpu import redirect_cuda_to_cpu
if not torch.cuda.is_available():  # without the redirect, the trainers' .to("cuda") fails here
    try:
        torch.zeros(1).to("cuda")
        raise SystemExit("a CUDA device worked before the redirect")
    except (AssertionError, RuntimeError):
        pass
redirect_cuda_to_cpu()
redirect_cuda_to_cpu()  # idempotent
t = torch.zeros(2).to("cuda", dtype=torch.float16)
assert t.device.type == "cpu" and t.dtype == torch.float16
assert torch.zeros(1).to(device=torch.device("cuda:0")).device.type == "cpu"
m = torch.nn.Linear(2, 2).to(device="cuda", dtype=torch.float64)
assert m.weight.device.type == "cpu" and m.weight.dtype == torch.float64
assert torch.nn.Linear(2, 2).to("cuda").weight.device.type == "cpu"
print("ok")
"""
    out = subprocess.run([sys.executable, "-c", code], env={"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"},
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_dag_plans_moore_cpu_jobs_on_one_cpu_process_and_refuses_more_nodes(monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    from reelforge.animate_anyone import tasks
    from reelforge.animate_anyone.settings import AASettings

    settings = AASettings(
        cluster_work_root="/fsx/reelforge", output_bucket="o", output_prefix="aa/", topic_arn="t",
        mlflow_tracking_uri="http://127.0.0.1:5055", mlflow_experiment="exp", venv="/v", container_image="",
        container_mounts="/fsx:/fsx", code_dir="/code", model_dir="/models", launcher="torchrun",
        deepspeed_config="zero3", partition="gpu", export_partition="cpu", gres="gpu:8", gpus_per_node=8,
        cpus_per_task=4, time_limit_stage1="1:00:00", time_limit_stage2="1:00:00", sbatch_args=(),
        auto_resume="auto", max_sweep_runs=8, max_nodes=4, max_manifest_bytes=1 << 20)
    monkeypatch.setattr(tasks, "aa_settings", lambda: settings)
    staged = {"training_id": "tid", "root": "/fsx/reelforge/animate-anyone/tid", "manifest_path": "/m.json",
              "manifest_uri": "s3://b/m.json"}
    params = {"payload": "moore-cpu", "nodes": 1, "sweep_grid": {"solver.learning_rate": [1e-5, 1e-3]}}
    jobs = tasks.plan_sweep(staged=staged, params=params, dag_id="d", run_id="r")
    assert len(jobs) == 2
    for job in jobs:
        env = job["env"]
        assert env["AA_PAYLOAD"] == "moore-cpu" and env["AA_LAUNCHER"] == "accelerate"
        assert env["AA_GPUS_PER_NODE"] == "1" and env["AA_DEEPSPEED_CONFIG"] == ""
    for bad in ({"nodes": 2}, {"stage2_nodes": 2}):
        with pytest.raises(AirflowFailException, match="one node"):
            tasks.plan_sweep(staged=staged, params={**params, **bad}, dag_id="d", run_id="r")
