"""Smoke payload for the AnimateAnyone pipeline: real (tiny) PyTorch training, Moore's conventions.

It reads the same rendered stage config as ``train_stage_1.py`` / ``train_stage_2.py`` and behaves
like them where the pipeline depends on it:

* ``<output_dir>/<exp_name>/checkpoint-<global_step>/`` every ``checkpointing_steps`` (model,
  optimizer, RNG state; written to a temporary name and renamed, ``reelforge.complete`` last),
  keeping the two newest; weight files ``<module>-<step>.pth`` at epoch ends
  (``save_model_epoch_interval``) and at the last step.
* ``resume_from_checkpoint``: ``latest`` or a directory whose highest ``checkpoint-*`` is loaded;
  ``global_step`` continues from it.
* Stage 1 trains ``reference_unet``, ``denoising_unet`` and ``pose_guider`` stand-ins; stage 2 loads
  them from ``stage1_ckpt_dir``/``stage1_ckpt_step`` (frozen) and trains a ``motion_module``.
* MLflow: attaches to ``MLFLOW_RUN_ID`` (as accelerate's tracker does), logs ``train_loss`` per step,
  ``val_loss`` at checkpoints and at the end, the config as ``config.yaml``; only rank 0 logs.
* Distributed: under ``torchrun`` (``WORLD_SIZE`` > 1) it uses DDP over gloo.

Extra keys (``smoke.*``): ``step_seconds`` (sleep per step, to make a run last long enough to be
killed in a test), ``hidden`` (width), ``samples_per_entry`` (synthetic samples per manifest entry).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import os
import pickle
import re
import shutil
import sys
import time
from pathlib import Path

import torch
import yaml
from torch import nn

STAGE1_MODULES = ("reference_unet", "denoising_unet", "pose_guider")


def cfg_get(cfg: dict, dotted: str, default=None):
    node = cfg
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return default
        node = node[part]
    return node


class Net(nn.Module):
    def __init__(self, dim: int, hidden: int, stage: str) -> None:
        super().__init__()
        self.stage = stage
        self.pose_guider = nn.Linear(dim, hidden)
        self.reference_unet = nn.Linear(dim, hidden)
        self.denoising_unet = nn.Sequential(nn.Tanh(), nn.Linear(hidden, dim))
        self.motion_module = nn.Linear(dim, dim) if stage == "stage2" else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.pose_guider(x) + self.reference_unet(x)
        out = self.denoising_unet(h)
        if self.motion_module is not None:
            out = out + self.motion_module(out)
        return out


def dataset(manifest_paths: list[str], per_entry: int, dim: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Synthetic pairs, one block per manifest entry (its path seeds it): a fixed target function."""
    entries = []
    for path in manifest_paths:
        data = json.loads(Path(path).read_text())
        entries += data if isinstance(data, list) else data.get("entries", [])
    if not entries:
        raise SystemExit(f"no entries in {manifest_paths}")
    xs = []
    for entry in entries:
        digest = hashlib.sha256(json.dumps(entry, sort_keys=True).encode()).digest()
        g = torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") ^ seed)
        xs.append(torch.randn(per_entry, dim, generator=g))
    x = torch.cat(xs)
    teacher = torch.Generator().manual_seed(1234)
    w = torch.randn(dim, dim, generator=teacher) / math.sqrt(dim)
    return x, torch.tanh(x @ w)


def newest_checkpoint_dir(resume: str, save_dir: Path) -> Path | None:
    """Moore's rule: the highest-numbered ``checkpoint-*`` in the directory."""
    resume_dir = save_dir if resume == "latest" else Path(resume)
    if re.fullmatch(r"checkpoint-\d+", resume_dir.name):
        return resume_dir
    names = [d for d in os.listdir(resume_dir) if re.fullmatch(r"checkpoint-\d+", d)]
    if not names:
        return None
    return resume_dir / sorted(names, key=lambda n: int(n.split("-")[1]))[-1]


def save_checkpoint(save_dir: Path, step: int, model: nn.Module, optimizer: torch.optim.Optimizer) -> Path:
    final = save_dir / f"checkpoint-{step}"
    tmp = save_dir / f".tmp-checkpoint-{step}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    torch.save(model.state_dict(), tmp / "model.pt")
    torch.save(optimizer.state_dict(), tmp / "optimizer.pt")
    with (tmp / "random_states_0.pkl").open("wb") as fh:
        pickle.dump({"torch": torch.get_rng_state(), "step": step}, fh)
    (tmp / "reelforge.complete").write_text(f"{step}\n")
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    # like delete_additional_ckpt(save_dir, 1) before saving: keep the two newest
    old = sorted((int(p.name.split("-")[1]), p) for p in save_dir.glob("checkpoint-*") if p.is_dir())
    for _, path in old[:-2]:
        shutil.rmtree(path, ignore_errors=True)
    return final


def save_weights(save_dir: Path, step: int, model: Net, modules: tuple[str, ...]) -> None:
    for name in modules:
        path = save_dir / f"{name}-{step}.pth"
        tmp = path.with_name(path.name + ".tmp")
        torch.save(getattr(model, name).state_dict(), tmp)
        tmp.replace(path)
        # keep the three newest per module (Moore's total_limit=3)
        steps = sorted(int(m.group(1)) for p in save_dir.glob(f"{name}-*.pth")
                       if (m := re.fullmatch(rf"{name}-(\d+)\.pth", p.name)))
        for s in steps[:-3]:
            (save_dir / f"{name}-{s}.pth").unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    cfg = yaml.safe_load(Path(args.config).read_text())

    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    if world > 1:
        torch.distributed.init_process_group("gloo")
    main_process = rank == 0
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))

    stage = "stage2" if "stage1_ckpt_dir" in cfg else "stage1"
    save_dir = Path(cfg["output_dir"]) / cfg["exp_name"]
    save_dir.mkdir(parents=True, exist_ok=True)
    seed = int(cfg.get("seed") or 0)
    torch.manual_seed(seed)
    dim, hidden = 8, int(cfg_get(cfg, "smoke.hidden", 16))
    model = Net(dim, hidden, stage)
    trainable: list[nn.Parameter]
    if stage == "stage2":
        ckpt_dir, ckpt_step = Path(cfg["stage1_ckpt_dir"]), int(cfg["stage1_ckpt_step"])
        for name in STAGE1_MODULES:
            state = torch.load(ckpt_dir / f"{name}-{ckpt_step}.pth", map_location="cpu", weights_only=True)
            getattr(model, name).load_state_dict(state)
            getattr(model, name).requires_grad_(False)
        if main_process:
            print(f"[smoke] stage 2 initialised from {ckpt_dir} step {ckpt_step}", flush=True)
        trainable = list(model.motion_module.parameters())
    else:
        trainable = [p for n, p in model.named_parameters() if not n.startswith("motion_module")]

    lr = float(cfg_get(cfg, "solver.learning_rate"))
    optimizer = torch.optim.AdamW(trainable, lr=lr, weight_decay=float(cfg_get(cfg, "solver.adam_weight_decay", 0.0)))
    ddp = torch.nn.parallel.DistributedDataParallel(model) if world > 1 else model

    x, y = dataset(list(cfg_get(cfg, "data.meta_paths")), int(cfg_get(cfg, "smoke.samples_per_entry", 16)), dim, seed)
    n_val = max(1, len(x) // 8)
    x_val, y_val, x_train, y_train = x[:n_val], y[:n_val], x[n_val:], y[n_val:]
    bs = int(cfg_get(cfg, "data.train_bs", 4))
    shard = torch.arange(rank, len(x_train), world)
    steps_per_epoch = max(1, math.ceil(len(shard) / bs))
    max_steps = int(cfg_get(cfg, "solver.max_train_steps"))
    ckpt_every = int(cfg.get("checkpointing_steps") or max_steps)
    epoch_interval = int(cfg.get("save_model_epoch_interval") or 1)
    step_seconds = float(cfg_get(cfg, "smoke.step_seconds", 0.0))
    modules = STAGE1_MODULES if stage == "stage1" else ("motion_module",)

    global_step = 0
    resume = cfg.get("resume_from_checkpoint") or ""
    if resume:
        path = newest_checkpoint_dir(str(resume), save_dir)
        if path is not None:
            model.load_state_dict(torch.load(path / "model.pt", map_location="cpu", weights_only=True))
            optimizer.load_state_dict(torch.load(path / "optimizer.pt", map_location="cpu", weights_only=True))
            with (path / "random_states_0.pkl").open("rb") as fh:
                torch.set_rng_state(pickle.load(fh)["torch"])  # noqa: S301 - our own checkpoint
            global_step = int(path.name.split("-")[1])
            if main_process:
                print(f"Resuming from checkpoint {path.name}", flush=True)

    mlflow = None
    if main_process and os.environ.get("MLFLOW_RUN_ID"):
        import mlflow  # noqa: PLC0415

        mlflow.start_run(run_id=os.environ["MLFLOW_RUN_ID"])
        mlflow.log_dict(cfg, "config.yaml")
        mlflow.set_tag("reelforge.resumed_from_step", str(global_step))
        mlflow.set_tag("reelforge.save_dir", str(save_dir))

    def val_loss() -> float:
        with torch.no_grad():
            return float(nn.functional.mse_loss(model(x_val), y_val))

    first_epoch = global_step // steps_per_epoch
    skip = global_step % steps_per_epoch
    num_epochs = math.ceil(max_steps / steps_per_epoch)
    print(f"[smoke] rank {rank}/{world} {stage}: steps {global_step}->{max_steps}, lr {lr}", flush=True)
    for epoch in range(first_epoch, num_epochs):
        g = torch.Generator().manual_seed(seed * 1000 + epoch)
        order = shard[torch.randperm(len(shard), generator=g)]
        for i in range(steps_per_epoch):
            if epoch == first_epoch and i < skip:
                continue
            idx = order[i * bs : (i + 1) * bs]
            loss = nn.functional.mse_loss(ddp(x_train[idx]), y_train[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            global_step += 1
            loss = loss.detach().clone()
            if world > 1:
                torch.distributed.all_reduce(loss)
                loss /= world
            if mlflow is not None:
                mlflow.log_metric("train_loss", float(loss), step=global_step)
            if global_step % ckpt_every == 0 and main_process:
                path = save_checkpoint(save_dir, global_step, model, optimizer)
                print(f"[smoke] step {global_step}: saved {path.name}", flush=True)
                if mlflow is not None:
                    mlflow.log_metric("val_loss", val_loss(), step=global_step)
            if step_seconds:
                time.sleep(step_seconds)
            if global_step >= max_steps:
                break
        if main_process and ((epoch + 1) % epoch_interval == 0 or global_step >= max_steps):
            save_weights(save_dir, global_step, model, modules)
        if global_step >= max_steps:
            break
    if world > 1:
        torch.distributed.barrier()
    if main_process:
        final_val = val_loss()
        print(f"[smoke] done at step {global_step}: val_loss {final_val:.6f}", flush=True)
        if mlflow is not None:
            mlflow.log_metric("val_loss", final_val, step=global_step)
            mlflow.set_tag("reelforge.final_step", str(global_step))
            mlflow.end_run()
    if world > 1:
        torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
