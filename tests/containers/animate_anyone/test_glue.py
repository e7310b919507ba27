"""The cluster-side glue: config templates, checkpoints/resume, launcher, sbatch scripts, smoke payload."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jinja2
import pytest
import yaml
from reelforge_aa import checkpoints, config, launch

ROOT = Path(__file__).resolve().parents[3]
PKG = ROOT / "containers" / "animate_anyone"
TEMPLATES = {s: PKG / "configs" / f"{s}.yaml" for s in ("stage1", "stage2")}
VARS = {"AA_MANIFEST": "/fsx/m.json", "AA_MODEL_DIR": "/fsx/models", "AA_SEED": 42, "AA_RESUME_FROM": "",
        "AA_EXP_NAME": "sweep-00-abc", "AA_OUTPUT_DIR": "/fsx/out", "AA_STAGE1_CKPT_DIR": "/fsx/s1",
        "AA_STAGE1_CKPT_STEP": 120}
# Keys Moore-AnimateAnyone's train_stage_1.py / train_stage_2.py read from their configs.
MOORE_KEYS = {
    "stage1": {"data.train_bs", "data.train_width", "data.train_height", "data.meta_paths", "data.sample_margin",
               "solver.learning_rate", "solver.max_train_steps", "solver.mixed_precision", "checkpointing_steps",
               "save_model_epoch_interval", "resume_from_checkpoint", "exp_name", "output_dir", "seed",
               "base_model_path", "vae_model_path", "image_encoder_path", "controlnet_openpose_path",
               "noise_scheduler_kwargs.beta_schedule", "val.validation_steps", "weight_dtype", "snr_gamma"},
    "stage2": {"data.n_sample_frames", "data.sample_rate", "stage1_ckpt_dir", "stage1_ckpt_step", "mm_path",
               "resume_from_checkpoint", "exp_name", "output_dir", "solver.max_train_steps", "checkpointing_steps"},
}


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_templates_render_with_typed_placeholders(stage):
    cfg = config.render(TEMPLATES[stage], VARS)
    for key in MOORE_KEYS[stage]:
        assert config.get(cfg, key) is not None, key
    assert cfg["seed"] == 42 and cfg["resume_from_checkpoint"] == ""
    assert cfg["output_dir"] == "/fsx/out" and cfg["exp_name"] == "sweep-00-abc"
    assert cfg["data"]["meta_paths"] == ["/fsx/m.json"]
    if stage == "stage2":
        assert cfg["stage1_ckpt_step"] == 120 and cfg["stage1_ckpt_dir"] == "/fsx/s1"
    assert "${" not in config.dump(cfg)


def test_overrides_apply_and_typos_are_refused():
    cfg = config.render(TEMPLATES["stage1"], VARS, {"solver.learning_rate": 3e-5, "smoke.step_seconds": 0.5})
    assert cfg["solver"]["learning_rate"] == 3e-5 and cfg["smoke"]["step_seconds"] == 0.5
    for bad in ({"solver.learing_rate": 1}, {"solver": 1}, {"data.train_bs.x": 1}, {"bad key": 1}):
        with pytest.raises(config.ConfigError):
            config.render(TEMPLATES["stage1"], VARS, bad)
    with pytest.raises(config.ConfigError, match="AA_SEED"):
        config.render(TEMPLATES["stage1"], {k: v for k, v in VARS.items() if k != "AA_SEED"})


def _checkpoint(run_dir: Path, step: int, complete: bool = True) -> Path:
    path = run_dir / f"checkpoint-{step}"
    path.mkdir(parents=True)
    (path / "model.safetensors").write_bytes(b"x")
    if complete:
        (path / checkpoints.COMPLETE_MARKER).write_text(str(step))
    return path


def test_newest_complete_checkpoint_and_quarantine(tmp_path):
    run = tmp_path / "run"
    _checkpoint(run, 100)
    _checkpoint(run, 200)
    accel = run / "checkpoint-300"
    accel.mkdir()
    (accel / "random_states_0.pkl").write_bytes(b"x")  # unpatched accelerate checkpoint, complete
    _checkpoint(run, 400, complete=False)  # killed while saving
    assert checkpoints.newest_checkpoint(run)[0] == 300
    moved = checkpoints.quarantine_incomplete(run)
    assert [p.name.split(".")[1] for p in moved] == ["incomplete-checkpoint-400"]
    assert sorted(p.name for p in run.iterdir() if p.name.startswith("checkpoint")) == [
        "checkpoint-100", "checkpoint-200", "checkpoint-300"]
    assert checkpoints.newest_checkpoint(tmp_path / "nothing") is None
    for step in (5, 10):
        for module in ("denoising_unet", "reference_unet", "pose_guider"):
            (run / f"{module}-{step}.pth").write_bytes(b"w")
    (run / "denoising_unet-15.pth").write_bytes(b"w")  # the others of step 15 are missing
    assert checkpoints.weight_steps(run, checkpoints.STAGE_WEIGHTS["stage1"]) == [5, 10]


def _env(tmp_path: Path, **kw) -> dict[str, str]:
    env = {"AA_STAGE": "stage1", "AA_PAYLOAD": "animate-anyone", "AA_OUTPUT_DIR": str(tmp_path / "out"),
           "AA_EXP_NAME": "sweep-01-abc", "AA_MANIFEST": "/fsx/m.json", "AA_CONFIG_TEMPLATE": str(TEMPLATES["stage1"]),
           "AA_OVERRIDES": json.dumps({"solver.learning_rate": 3e-5}), "SLURM_JOB_ID": "77", "SLURM_NODEID": "0",
           "SLURM_NNODES": "2", "AA_MASTER_ADDR": "10.0.0.5", "AA_MASTER_PORT": "20077", "AA_GPUS_PER_NODE": "8",
           "AA_CODE_DIR": "/opt/Moore-AnimateAnyone"}
    env.update(kw)
    return env


def test_launcher_resumes_from_the_run_dir_and_ranks_each_node(tmp_path):
    env = _env(tmp_path, AA_LAUNCHER="accelerate", AA_DEEPSPEED_CONFIG="/zero2.json")
    run = tmp_path / "out" / "sweep-01-abc"
    plan = launch.prepare(env)
    assert plan["resume_step"] is None
    assert yaml.safe_load(Path(plan["config"]).read_text())["resume_from_checkpoint"] == ""
    _checkpoint(run, 50)
    _checkpoint(run, 60, complete=False)
    plan = launch.prepare(env)
    cfg = yaml.safe_load(Path(plan["config"]).read_text())
    assert plan["resume_step"] == 50 and cfg["resume_from_checkpoint"] == str(run)
    assert not (run / "checkpoint-60").exists()  # the trainer will load checkpoint-50
    assert cfg["solver"]["learning_rate"] == 3e-5
    argv = plan["argv"]
    assert argv[1:4] == ["-m", "accelerate.commands.launch", "--num_machines"]
    assert argv[argv.index("--num_processes") + 1] == "16" and argv[argv.index("--machine_rank") + 1] == "0"
    assert argv[argv.index("--main_process_ip") + 1] == "10.0.0.5"
    assert "--use_deepspeed" in argv and argv[argv.index("--deepspeed_config_file") + 1] == "/zero2.json"
    assert argv[-3:] == ["train_stage_1.py", "--config", plan["config"]] and plan["cwd"] == "/opt/Moore-AnimateAnyone"

    node1 = launch.prepare({**env, "SLURM_NODEID": "1", "AA_LAUNCHER": "torchrun"})
    argv = node1["argv"]
    assert argv[argv.index("--node_rank") + 1] == "1" and argv[argv.index("--nproc_per_node") + 1] == "8"
    assert argv[argv.index("--master_port") + 1] == "20077"
    single = launch.prepare({**env, "SLURM_NNODES": "1", "AA_LAUNCHER": "torchrun", "AA_PAYLOAD": "smoke"})
    assert "--standalone" in single["argv"] and single["argv"][-4:-2] == ["-m", "reelforge_aa_smoke.train"]


def _render(name: str) -> str:
    loader = jinja2.FileSystemLoader(str(ROOT / "include"))
    env = jinja2.Environment(loader=loader, undefined=jinja2.StrictUndefined)  # noqa: S701 - bash, not HTML
    return env.get_template(f"slurm/animate_anyone/{name}").render()


@pytest.mark.parametrize("name", ["stage1.sbatch", "stage2.sbatch", "export.sbatch"])
def test_sbatch_scripts_render_and_parse(name, tmp_path):
    text = _render(name)
    assert text.startswith("#!/bin/bash\n#SBATCH")
    assert "{%" not in text and "{{" not in text
    script = tmp_path / name
    script.write_text(text)
    assert subprocess.run(["bash", "-n", str(script)], capture_output=True).returncode == 0


def _fake_slurm(bin_dir: Path, record: Path) -> None:
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(
        "#!/bin/bash\n"
        f"printf '%s\\n' \"$*\" >> {record}\n"
        "if [[ \"$1\" == --help ]]; then echo '  --auto-resume=N  HyperPod'; exit 0; fi\n"
        "for a in \"$@\"; do [[ $a == mlflow-run ]] && echo 0123456789abcdef0123456789abcdef; done\n"
        "for a in \"$@\"; do [[ $a == launch ]] && env | grep -E '^(MLFLOW_|AA_MASTER)' | sort >> " f"{record}; done\n"
        "exit 0\n")
    (bin_dir / "scontrol").write_text(
        "#!/bin/bash\n"
        "if [[ $1 == show && $2 == hostnames ]]; then echo n7; echo n8; exit 0; fi\n"
        "echo 'NodeName=n7 Arch=x86_64 NodeAddr=10.1.2.3 NodeHostName=ip-10-1-2-3'\n")
    for f in bin_dir.iterdir():
        f.chmod(0o755)


@pytest.mark.parametrize("image", ["", "123456789012.dkr.ecr.example.amazonaws.com/aa:1"])
def test_stage1_script_drives_srun_per_node_with_mlflow_run_and_auto_resume(tmp_path, image):
    bin_dir, record = tmp_path / "bin", tmp_path / "srun.log"
    _fake_slurm(bin_dir, record)
    script = tmp_path / "stage1.sbatch"
    script.write_text(_render("stage1.sbatch"))
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": "n[7-8]",
           "SLURM_JOB_NUM_NODES": "2", "SLURM_CPUS_PER_TASK": "4", "AA_OUTPUT_DIR": str(tmp_path / "out"),
           "AA_EXP_NAME": "sweep-00-abc", "AA_RUN_KEY": "t/stage1/sweep-00-abc", "AA_MANIFEST": "/fsx/m.json",
           "AA_MLFLOW_TRACKING_URI": "http://mlflow:5000", "AA_IMAGE": image, "AA_AUTO_RESUME": "on",
           "AA_VENV": "/venv"}
    result = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    calls = record.read_text().splitlines()
    launch_call = next(c for c in calls if c.endswith("-m reelforge_aa launch"))
    assert "--nodes=2 --ntasks-per-node=1" in launch_call and "--auto-resume=1" in launch_call
    assert "--cpus-per-task=4" in launch_call
    assert ("--container-image=" + image in launch_call) == bool(image)
    assert ("/venv/bin/python" in launch_call) == (not image)
    assert "MLFLOW_RUN_ID=0123456789abcdef0123456789abcdef" in calls
    assert "MLFLOW_TRACKING_URI=http://mlflow:5000" in calls
    assert "AA_MASTER_ADDR=10.1.2.3" in calls and "AA_MASTER_PORT=24242" in calls
    assert (tmp_path / "out" / "sweep-00-abc").is_dir()

    off = subprocess.run(["bash", str(script)], env={**env, "AA_AUTO_RESUME": "auto"}, capture_output=True, text=True)
    assert off.returncode == 0
    last_launch = [c for c in record.read_text().splitlines() if c.endswith("launch")][-1]
    assert "--auto-resume" not in last_launch  # auto: only on HyperPod (/opt/sagemaker_cluster)


def test_smoke_payload_trains_checkpoints_and_resumes(tmp_path):
    manifest = tmp_path / "m.json"
    manifest.write_text(json.dumps([{"video_path": "a.mp4", "kps_path": "a_kps.mp4"}]))
    base = config.render(TEMPLATES["stage1"], {**VARS, "AA_MANIFEST": str(manifest), "AA_OUTPUT_DIR": str(tmp_path)},
                         {"solver.max_train_steps": 6, "checkpointing_steps": 3, "data.train_bs": 4,
                          "save_model_epoch_interval": 1, "smoke.samples_per_entry": 16})
    cfg = tmp_path / "c.yaml"
    cfg.write_text(config.dump(base))
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    run = [sys.executable, str(PKG / "smoke" / "train.py"), "--config", str(cfg)]
    first = subprocess.run(run, env=env, capture_output=True, text=True, timeout=120)
    assert first.returncode == 0, first.stderr
    run_dir = tmp_path / "sweep-00-abc"
    assert checkpoints.newest_checkpoint(run_dir)[0] == 6
    assert checkpoints.weight_steps(run_dir, checkpoints.STAGE_WEIGHTS["stage1"])[-1] == 6
    base["solver"]["max_train_steps"] = 9
    base["resume_from_checkpoint"] = str(run_dir)
    cfg.write_text(config.dump(base))
    second = subprocess.run(run, env=env, capture_output=True, text=True, timeout=120)
    assert second.returncode == 0, second.stderr
    assert "Resuming from checkpoint checkpoint-6" in second.stdout and "steps 6->9" in second.stdout
    assert checkpoints.newest_checkpoint(run_dir)[0] == 9


def test_deepspeed_configs_by_name(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "template_path", lambda stage: TEMPLATES[stage])
    plan = launch.prepare(_env(tmp_path, AA_LAUNCHER="accelerate", AA_DEEPSPEED_CONFIG="zero3"))
    path = Path(plan["argv"][plan["argv"].index("--deepspeed_config_file") + 1])
    assert path == PKG / "configs" / "zero3.json"
    assert json.loads(path.read_text())["zero_optimization"]["stage"] == 3
