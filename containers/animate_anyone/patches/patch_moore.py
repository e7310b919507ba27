"""Patch Moore-AnimateAnyone's trainers at image build time (exact-text replacements; fails loudly).

1. ``accelerator.save_state`` is called on every rank (DeepSpeed ZeRO shards optimizer state, so a
   main-process-only call would hang or lose shards), with barriers around it.
2. After a checkpoint is fully written, ``reelforge.complete`` is put into it: the launcher resumes
   only from checkpoints that carry it (or accelerate's last-written RNG file).

Usage: python patch_moore.py /opt/Moore-AnimateAnyone
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

ORIGINAL = """                if global_step % cfg.checkpointing_steps == 0:
                    if accelerator.is_main_process:
                        save_path = os.path.join(save_dir, f"checkpoint-{global_step}")
                        delete_additional_ckpt(save_dir, 1)
                        accelerator.save_state(save_path)
"""
# What both trainers get instead (at their own indentation): the save on every rank between barriers, then
# the completion marker from the main process.
SAVE_ON_EVERY_RANK = """save_path = os.path.join(save_dir, f"checkpoint-{global_step}")
if accelerator.is_main_process:
    delete_additional_ckpt(save_dir, 1)
accelerator.wait_for_everyone()
accelerator.save_state(save_path)  # reelforge: every rank (DeepSpeed ZeRO)
accelerator.wait_for_everyone()
if accelerator.is_main_process:
    with open(os.path.join(save_path, "reelforge.complete"), "w") as fh:
        fh.write(str(global_step))
"""
PATCHED = ("                if global_step % cfg.checkpointing_steps == 0:\n"
           + textwrap.indent(SAVE_ON_EVERY_RANK, " " * 20))

# train_stage_2.py at the pinned commit saves once per epoch (no checkpointing_steps); what follows the block
# (saving the motion module) stays on the main process under the last `if` below.
ORIGINAL_STAGE2 = """        # save model after each epoch
        if accelerator.is_main_process:
            save_path = os.path.join(save_dir, f"checkpoint-{global_step}")
            delete_additional_ckpt(save_dir, 1)
            accelerator.save_state(save_path)
"""
PATCHED_STAGE2 = "        # save model after each epoch\n" + textwrap.indent(SAVE_ON_EVERY_RANK, " " * 8)
#: file name → (block at the pinned commit, its replacement); other names: the stage-1 block.
BLOCKS = {"train_stage_2.py": (ORIGINAL_STAGE2, PATCHED_STAGE2)}


def patch_text(text: str, name: str) -> str:
    original, patched = BLOCKS.get(name, (ORIGINAL, PATCHED))
    if patched in text:
        return text
    count = text.count(original)
    if count != 1:
        raise SystemExit(f"{name}: expected the checkpointing block exactly once, found {count}: "
                         "the pinned commit changed; update patch_moore.py")
    return text.replace(original, patched)


def main(root: str) -> None:
    for name in ("train_stage_1.py", "train_stage_2.py"):
        path = Path(root) / name
        path.write_text(patch_text(path.read_text(), name))
        print(f"patched {path}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else ".")
