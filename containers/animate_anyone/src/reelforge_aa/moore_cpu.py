"""``moore-cpu`` payload: Moore-AnimateAnyone's real ``train_stage_1.py`` / ``train_stage_2.py`` on a CPU.

``python -m reelforge_aa.moore_cpu --config <rendered yaml>`` (started by ``accelerate launch`` like the
GPU payload) runs the pinned, patched trainer script as ``__main__`` — its config loading, model
construction, ``HumanDanceDataset`` / ``HumanDanceVideoDataset`` over our manifest, the training loop,
``accelerator.save_state`` / ``load_state`` resume and ``<module>-<step>.pth`` weights — after two
redirections of what only works with CUDA, and nothing else:

1. **Device:** the trainers hard-code ``"cuda"`` (``.to("cuda")`` / ``.to(device="cuda")`` on the VAE,
   image encoder, both UNets and the pose guider; ``pose_img.to(device="cuda")`` in ``Net.forward``;
   ``clip_img.to("cuda")`` in the loop). ``torch.Tensor.to`` and ``torch.nn.Module.to`` map a CUDA
   device to ``"cpu"`` (dtypes untouched).
2. **torchvision:** the PyPI torchvision wheel for torch 2.13 is a CUDA build whose op library does
   not load next to CPU torch, and ``import torchvision`` then fails registering fake kernels for
   ``torchvision::nms`` / ``qnms``. Those two schemas are declared (no kernels), so its pure-Python
   parts (``transforms``, ``utils``), all Moore's training uses, import. Its compiled ops stay absent.

CUDA-only *features* are switched off by the payload's config (``configs/moore_cpu.json``), not patched:
fp16 mixed precision (accelerate 0.21 has no CPU autocast for it) and fp16 frozen modules (without
autocast their outputs meet the fp32 UNets: a Half/Float matmul error), xformers attention, bitsandbytes
8-bit Adam (stage 2), and the validation pass, by a ``val.validation_steps`` beyond the run (stage 1's
builds ``DWposeDetector``, which needs the DWPose ONNX weights; stage 2's runs a 20-step fp16 pipeline,
not tried here). Pretrained weights are tiny random models (:mod:`reelforge_aa.tiny_models`).
"""

from __future__ import annotations

import argparse
import os
import runpy
import sys
from pathlib import Path
from typing import Any

import yaml

from reelforge_aa import tiny_models


def _cpu_device(value: Any) -> Any:
    import torch

    if isinstance(value, str) and value.startswith("cuda"):
        return "cpu"
    if isinstance(value, torch.device) and value.type == "cuda":
        return torch.device("cpu")
    return value


def redirect_cuda_to_cpu() -> None:
    """Patch ``Tensor.to`` and ``Module.to`` so that a CUDA device means the CPU (idempotent)."""
    import torch

    for owner in (torch.Tensor, torch.nn.Module):
        original = owner.to
        if getattr(original, "_reelforge_cpu", False):
            continue

        def to(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            args = tuple(_cpu_device(a) for a in args)
            if "device" in kwargs:
                kwargs["device"] = _cpu_device(kwargs["device"])
            return _original(self, *args, **kwargs)

        to._reelforge_cpu = True  # type: ignore[attr-defined]
        owner.to = to  # type: ignore[method-assign]


_TORCHVISION_LIB: Any = None


def declare_torchvision_ops() -> bool:
    """Declare ``torchvision::nms``/``qnms`` when torchvision's own op library cannot load; True if declared."""
    global _TORCHVISION_LIB
    import importlib.util

    import torch

    spec = importlib.util.find_spec("torchvision")
    if spec is None or _TORCHVISION_LIB is not None or "torchvision" in sys.modules:
        return False
    libs = list(Path(spec.origin).parent.glob("_C.*so"))
    try:
        if libs:
            torch.ops.load_library(str(libs[0]))
            return False
    except (OSError, RuntimeError):
        pass
    _TORCHVISION_LIB = torch.library.Library("torchvision", "DEF")  # kept alive: dropping it undefines the ops
    _TORCHVISION_LIB.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _TORCHVISION_LIB.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    return True


def stage_of(cfg: dict[str, Any]) -> str:
    return "stage2" if "stage1_ckpt_dir" in cfg else "stage1"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reelforge_aa.moore_cpu", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True)
    args = parser.parse_args(argv)
    config_path = str(Path(args.config).resolve())
    cfg = yaml.safe_load(Path(config_path).read_text())
    code_dir = Path(os.environ.get("AA_CODE_DIR", "/opt/Moore-AnimateAnyone")).resolve()
    script = code_dir / f"train_{stage_of(cfg).replace('stage', 'stage_')}.py"
    if not script.is_file():
        raise SystemExit(f"Moore-AnimateAnyone trainer not found: {script} (AA_CODE_DIR)")
    os.chdir(code_dir)  # the trainers read ./configs/inference/*.yaml
    sys.path.insert(0, str(code_dir))
    redirect_cuda_to_cpu()
    shimmed = declare_torchvision_ops()
    root = tiny_models.ensure(cfg)  # every rank: it locks, and the first one writes
    if os.environ.get("RANK", "0") == "0":
        print(f"[reelforge] moore-cpu: tiny random models in {root}; cuda→cpu device redirect"
              f"{'; torchvision op schemas declared' if shimmed else ''}; running {script}", flush=True)
    sys.argv = [str(script), "--config", config_path]
    runpy.run_path(str(script), run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
