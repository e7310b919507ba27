"""Checkpoints and saved weights of one training run directory (``<output_dir>/<exp_name>``).

Layout (Moore-AnimateAnyone's): ``checkpoint-<step>/`` directories written by
``accelerator.save_state`` every ``checkpointing_steps``, and weight files
``<module>-<step>.pth`` written every ``save_model_epoch_interval`` epochs. The trainer resumes
from the *highest-numbered* ``checkpoint-*`` in ``resume_from_checkpoint``; a job killed while
saving leaves a partial one there, so before every start :func:`quarantine_incomplete` moves
incomplete directories aside and the run resumes from its newest *complete* checkpoint.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

CHECKPOINT = re.compile(r"^checkpoint-(\d+)$")
#: Written last into a checkpoint directory by the smoke payload and by the patched trainers.
COMPLETE_MARKER = "reelforge.complete"
#: What ``accelerator.save_state`` writes last (RNG states) — completeness of unpatched checkpoints.
ACCELERATE_LAST_FILE = "random_states_0.pkl"
STAGE_WEIGHTS = {
    "stage1": ("denoising_unet", "reference_unet", "pose_guider"),
    "stage2": ("motion_module",),
}


def is_complete(path: str | Path) -> bool:
    path = Path(path)
    return (path / COMPLETE_MARKER).is_file() or (path / ACCELERATE_LAST_FILE).is_file()


def checkpoints(save_dir: str | Path) -> list[tuple[int, Path]]:
    """Every ``checkpoint-<step>`` directory, oldest first."""
    save_dir = Path(save_dir)
    if not save_dir.is_dir():
        return []
    found = []
    for entry in save_dir.iterdir():
        match = CHECKPOINT.match(entry.name)
        if match and entry.is_dir():
            found.append((int(match.group(1)), entry))
    return sorted(found)


def newest_checkpoint(save_dir: str | Path) -> tuple[int, Path] | None:
    """The newest complete checkpoint, or ``None``."""
    complete = [(step, path) for step, path in checkpoints(save_dir) if is_complete(path)]
    return complete[-1] if complete else None


def quarantine_incomplete(save_dir: str | Path) -> list[Path]:
    """Move incomplete ``checkpoint-*`` directories aside (the trainer would pick the newest name).

    Safe to run on several nodes at once: a directory another node moved first is skipped.
    """
    moved = []
    for step, path in checkpoints(save_dir):
        if is_complete(path):
            continue
        target = path.with_name(f".incomplete-checkpoint-{step}.{int(time.time() * 1000)}.{os.getpid()}")
        try:
            path.rename(target)
        except FileNotFoundError:
            continue
        moved.append(target)
    return moved


def weight_steps(save_dir: str | Path, modules: tuple[str, ...]) -> list[int]:
    """Steps for which every module's ``<module>-<step>.pth`` exists, oldest first."""
    save_dir = Path(save_dir)
    if not save_dir.is_dir():
        return []
    per_module: list[set[int]] = []
    names = [p.name for p in save_dir.iterdir() if p.is_file()]
    for module in modules:
        pattern = re.compile(rf"^{re.escape(module)}-(\d+)\.pth$")
        per_module.append({int(m.group(1)) for n in names if (m := pattern.match(n))})
    return sorted(set.intersection(*per_module)) if per_module else []
