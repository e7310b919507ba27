"""What ``srun`` starts on every node of a training job: resume point, config, then the launcher.

Runs once per node (``srun --ntasks-per-node=1``), again after a HyperPod auto-resume, so the
resume point is worked out here and not in the batch script: node 0 moves incomplete checkpoints
aside, every node renders the same config (``resume_from_checkpoint`` = the run's own directory
when it holds a complete checkpoint) and then ``exec``s ``accelerate launch`` or ``torchrun`` with
this node's rank. Nothing here imports torch.
"""

from __future__ import annotations

import json
import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reelforge_aa import checkpoints, config

ENTRY = {
    ("smoke", "stage1"): ("module", "reelforge_aa_smoke.train"),
    ("smoke", "stage2"): ("module", "reelforge_aa_smoke.train"),
    ("animate-anyone", "stage1"): ("script", "train_stage_1.py"),
    ("animate-anyone", "stage2"): ("script", "train_stage_2.py"),
    # Moore's real trainers on a CPU with tiny random models (reelforge_aa.moore_cpu).
    ("moore-cpu", "stage1"): ("module", "reelforge_aa.moore_cpu"),
    ("moore-cpu", "stage2"): ("module", "reelforge_aa.moore_cpu"),
}
MOORE_CPU = "moore-cpu"


def payload_overrides(payload: str, stage: str) -> dict[str, Any]:
    """What a payload sets before the run's overrides: ``moore-cpu`` switches CUDA-only features off."""
    if payload != MOORE_CPU:
        return {}
    data = json.loads(config.template_path(stage).with_name("moore_cpu.json").read_text())
    return data[stage]


def save_dir(env: Mapping[str, str]) -> Path:
    return Path(env["AA_OUTPUT_DIR"]) / env["AA_EXP_NAME"]


def resume_point(run_dir: Path, node_rank: int) -> tuple[int, Path] | None:
    if node_rank == 0:
        for moved in checkpoints.quarantine_incomplete(run_dir):
            print(f"[reelforge] moved incomplete checkpoint aside: {moved.name}", flush=True)
    return checkpoints.newest_checkpoint(run_dir)


def variables(env: Mapping[str, str], run_dir: Path, newest: tuple[int, Path] | None) -> dict[str, Any]:
    stage = env["AA_STAGE"]
    model_dir = env.get("AA_MODEL_DIR", "/fsx/models/animate-anyone")
    if env.get("AA_PAYLOAD") == MOORE_CPU:
        # Tiny random models of this training (both stages), never the deployment's real weights.
        model_dir = str(Path(env["AA_OUTPUT_DIR"]).parent / "tiny-models")
    out: dict[str, Any] = {
        "AA_MANIFEST": env["AA_MANIFEST"],
        "AA_MODEL_DIR": model_dir,
        "AA_SEED": int(env.get("AA_SEED", "12580")),
        "AA_RESUME_FROM": str(run_dir) if newest else "",
        "AA_EXP_NAME": env["AA_EXP_NAME"],
        "AA_OUTPUT_DIR": env["AA_OUTPUT_DIR"],
    }
    if stage == "stage2":
        out["AA_STAGE1_CKPT_DIR"] = env["AA_STAGE1_CKPT_DIR"]
        out["AA_STAGE1_CKPT_STEP"] = int(env["AA_STAGE1_CKPT_STEP"])
    return out


def launcher_argv(env: Mapping[str, str], config_path: Path, python: str = sys.executable) -> tuple[list[str], str]:
    """``(argv, cwd)`` of the distributed launcher for this node."""
    stage, payload = env["AA_STAGE"], env.get("AA_PAYLOAD", "animate-anyone")
    kind, entry = ENTRY[(payload, stage)]
    code_dir = env.get("AA_CODE_DIR", "/opt/Moore-AnimateAnyone")
    cwd = code_dir if kind == "script" else str(save_dir(env))
    target = [entry]
    nnodes = int(env.get("SLURM_NNODES") or env.get("SLURM_JOB_NUM_NODES") or 1)
    rank = int(env.get("SLURM_NODEID", "0"))
    gpus = int(env.get("AA_GPUS_PER_NODE") or 1)
    addr = env.get("AA_MASTER_ADDR") or "127.0.0.1"
    port = str(env.get("AA_MASTER_PORT") or 29500)
    launcher = env.get("AA_LAUNCHER", "accelerate")
    if launcher == "torchrun":
        argv = [python, "-m", "torch.distributed.run", "--nnodes", str(nnodes), "--nproc_per_node", str(gpus)]
        if nnodes == 1:
            argv += ["--standalone"]
        else:
            argv += ["--node_rank", str(rank), "--master_addr", addr, "--master_port", port]
        if kind == "module":
            argv += ["-m"]
        argv += target
    elif launcher == "accelerate":
        argv = [python, "-m", "accelerate.commands.launch", "--num_machines", str(nnodes),
                "--num_processes", str(nnodes * gpus), "--machine_rank", str(rank),
                "--main_process_ip", addr, "--main_process_port", port]
        deepspeed = env.get("AA_DEEPSPEED_CONFIG", "")
        if deepspeed in ("zero2", "zero3"):  # the packaged ZeRO configs, by name
            deepspeed = str(config.template_path("stage1").with_name(f"{deepspeed}.json"))
        if deepspeed:
            argv += ["--use_deepspeed", "--deepspeed_config_file", deepspeed,
                     "--deepspeed_multinode_launcher", "standard"]
        elif nnodes * gpus > 1:
            argv += ["--multi_gpu"]
        if kind == "module":
            argv += ["-m"]
        argv += target
    else:
        raise ValueError(f"AA_LAUNCHER must be accelerate or torchrun, not {launcher!r}")
    return argv + ["--config", str(config_path)], cwd


def prepare(env: Mapping[str, str]) -> dict[str, Any]:
    """Resume point + rendered config for this node; returns what :func:`main` executes."""
    run_dir = save_dir(env)
    run_dir.mkdir(parents=True, exist_ok=True)
    rank = int(env.get("SLURM_NODEID", "0"))
    newest = resume_point(run_dir, rank)
    overrides = {**payload_overrides(env.get("AA_PAYLOAD", "animate-anyone"), env["AA_STAGE"]),
                 **json.loads(env.get("AA_OVERRIDES") or "{}")}
    template = env.get("AA_CONFIG_TEMPLATE") or str(config.template_path(env["AA_STAGE"]))
    rendered = config.render(template, variables(env, run_dir, newest), overrides)
    meta = run_dir / ".reelforge"
    meta.mkdir(exist_ok=True)
    job, step = env.get("SLURM_JOB_ID", "local"), env.get("SLURM_STEP_ID", "0")
    path = meta / f"{env['AA_STAGE']}-{job}.{step}-node{rank}.yaml"
    text = config.dump(rendered)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    if rank == 0:
        latest = meta / "config.yaml"
        (meta / "config.yaml.tmp").write_text(text)
        (meta / "config.yaml.tmp").replace(latest)
    argv, cwd = launcher_argv(env, path)
    return {"argv": argv, "cwd": cwd, "config": str(path), "resume_step": newest[0] if newest else None}


def main(dry_run: bool = False) -> int:
    env = dict(os.environ)
    plan = prepare(env)
    where = f"checkpoint-{plan['resume_step']}" if plan["resume_step"] is not None else "scratch"
    node = env.get("SLURM_NODEID", "0")
    print(f"[reelforge] node {node}: starting from {where}; config {plan['config']}", flush=True)
    print(f"[reelforge] exec (cwd {plan['cwd']}): {shlex.join(plan['argv'])}", flush=True)
    if dry_run:
        print(json.dumps(plan))
        return 0
    cpus = env.get("SLURM_CPUS_PER_TASK")
    if cpus and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, int(cpus) // max(1, int(env.get("AA_GPUS_PER_NODE") or 1))))
    os.chdir(plan["cwd"])
    os.execvpe(plan["argv"][0], plan["argv"], env)  # noqa: S606 - argv list, no shell
    return 1  # not reached
