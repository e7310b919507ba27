"""Run NVlabs' ``train.py`` unchanged on a machine without CUDA (smoke runs and the local tests).

``python -m reelforge_stylegan2.nvlabs_cpu /opt/stylegan2-ada-pytorch/train.py --outdir=… …``

NVlabs' training loop is written for GPUs. What in commit d72cc7d needs CUDA, and only that, is
replaced here, in this process only:

* ``training/training_loop.py`` line 124: ``device = torch.device('cuda', rank)`` (every network,
  tensor and the loss are put on that device) → the CPU;
* lines 213–214, 276, 294, 385–386: per-phase timing with ``torch.cuda.Event`` on
  ``torch.cuda.current_stream`` → events that time nothing (the ``Timing/*`` stats read 0);
* line 266: ``torch.from_numpy(…).pin_memory()`` → a no-op (pinned memory needs an accelerator);
* lines 164–165: ``torch.empty`` inputs of the module-summary pass → zeros (uninitialised CPU memory can
  hold NaN, which that pass would fold into ``w_avg`` for good; see ``_torch_on_cpu``);
* lines 332–333: ``torch.cuda.max_memory_allocated`` / ``reset_peak_memory_stats`` → 0 / no-op.

Three changes for time, not for CUDA, so that a CPU run is a smoke run of minutes:

* the networks are narrower (:data:`CPU_CHANNELS`: same classes, layers and resolutions, 16–64
  channels instead of up to 512); a snapshot from a CPU run therefore cannot resume a GPU run, nor
  can ``--resume`` of a full-width network (``transfer``) start a CPU run;
* the snapshot image grids (``reals.png``, ``fakes*.png``; up to 32×32 generated images each) are cut
  to 8×4;
* ``--fp32=1`` is added unless ``--fp32`` is given (NVlabs' mixed precision, float16 in the top 4
  resolutions, is a GPU speed-up; on a CPU float16 convolutions are many times slower).

Everything else is NVlabs' code as it is (on PyTorch 2.x ADA's R1 term then runs through PyTorch's
own ``grid_sample`` double backward): option parsing and the config in ``train.py``, the
dataset loader, network construction, loss, ADA, EMA, snapshots and metrics. Its custom ops
(``bias_act``, ``upfirdn2d``) run their reference implementations on the CPU; ``conv2d_gradfix`` and
``grid_sample_gradfix`` fall back to ``torch.nn.functional`` on PyTorch releases other than 1.7–1.9.
Multi-GPU runs (``--gpus`` > 1) are refused: they need NCCL/CUDA devices.
"""

from __future__ import annotations

import runpy
import sys
import types


class _Event:
    """``torch.cuda.Event`` for a loop without CUDA: records nothing, measures 0 ms."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def record(self, stream=None) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, other) -> float:
        return 0.0


def _torch_on_cpu(torch):
    """A stand-in for the ``torch`` module as ``training_loop`` sees it: CUDA devices become the CPU."""
    cuda = types.SimpleNamespace(
        Event=_Event,
        current_stream=lambda device=None: None,
        max_memory_allocated=lambda device=None: 0,
        reset_peak_memory_stats=lambda device=None: None,
        is_available=lambda: False,
    )

    def device(kind, index=None):
        if str(kind).startswith("cuda"):
            return torch.device("cpu")
        return torch.device(kind) if index is None else torch.device(kind, index)

    class TorchOnCPU(types.ModuleType):
        def __getattr__(self, name):
            return getattr(torch, name)

    def empty(*size, **kwargs):
        # Lines 164-165 feed ``torch.empty`` z and c through G, still in training mode, for the module
        # summary, and G's mapping folds that batch into ``w_avg``. Uninitialised CPU memory can hold
        # NaN/inf, and a non-finite ``w_avg`` never recovers (it is a running lerp): every truncated image
        # of the trained G is then NaN (seen here in 2 of 4 CPU runs). Zeros keep that summary pass harmless.
        return torch.zeros(*size, **kwargs)

    shim = TorchOnCPU("torch")
    shim.device = device
    shim.cuda = cuda
    shim.empty = empty
    return shim


#: Snapshot image grids on the CPU: at most this many columns and rows.
GRID_MAX = (8, 4)


def _small_grid(setup):
    """NVlabs' grid of up to 32×32 images per image snapshot, cut to :data:`GRID_MAX` (minutes on a CPU)."""

    def setup_snapshot_image_grid(training_set, random_seed=0):
        (gw, gh), images, labels = setup(training_set, random_seed=random_seed)
        gw, gh = min(gw, GRID_MAX[0]), min(gh, GRID_MAX[1])
        return (gw, gh), images[: gw * gh], labels[: gw * gh]

    return setup_snapshot_image_grid


#: Network width on the CPU (``channel_base``, ``channel_max`` of G's synthesis network and of D). NVlabs'
#: ``--cfg=auto`` at 64 px uses 16384 / 512: about 23 M parameters in D and some 150 GFLOP per training image,
#: hours per kimg on a CPU. With these the same architecture has 16 to 64 channels per layer.
CPU_CHANNELS = {"channel_base": 1024, "channel_max": 64}


def _narrow_networks(loop):
    """``training_loop`` with G and D built at :data:`CPU_CHANNELS` (the rest of ``train.py``'s config kept)."""

    def training_loop(**kwargs):
        kwargs["G_kwargs"].synthesis_kwargs.update(CPU_CHANNELS)
        kwargs["D_kwargs"].update(CPU_CHANNELS)
        print(f"nvlabs_cpu: networks built with {CPU_CHANNELS} (CPU smoke run; see reelforge_stylegan2.nvlabs_cpu)",
              flush=True)
        return loop(**kwargs)

    return training_loop


def install(nvlabs_dir: str) -> bool:
    """Import NVlabs' training loop from ``nvlabs_dir`` and point its CUDA uses at the CPU.

    ``False`` when ``nvlabs_dir`` holds no NVlabs training loop (a stand-in script): nothing to patch.
    """
    import os

    import torch

    if not os.path.isfile(os.path.join(nvlabs_dir, "training", "training_loop.py")):
        return False
    if nvlabs_dir not in sys.path:
        sys.path.insert(0, nvlabs_dir)
    from training import training_loop

    training_loop.torch = _torch_on_cpu(torch)
    training_loop.setup_snapshot_image_grid = _small_grid(training_loop.setup_snapshot_image_grid)
    training_loop.training_loop = _narrow_networks(training_loop.training_loop)
    torch.Tensor.pin_memory = lambda self, *args, **kwargs: self  # this process only
    _newer_pytorch_compat(torch)
    return True


def _newer_pytorch_compat(torch) -> None:
    """What NVlabs' code (written for PyTorch 1.7–1.9) needs from the PyTorch of the local image (2.x).

    ``torch_utils/misc.py`` ``InfiniteSampler`` calls ``Sampler.__init__(dataset)``; PyTorch 2.2 dropped
    that argument. The NGC image's PyTorch 1.8 still takes it, so this is only installed here.
    """
    sampler = torch.utils.data.Sampler
    if "__init__" not in vars(sampler):  # PyTorch >= 2.2: object.__init__, which takes no argument
        sampler.__init__ = lambda self, data_source=None: None


def main(argv: list[str]) -> None:
    import os

    if not argv:
        raise SystemExit("usage: python -m reelforge_stylegan2.nvlabs_cpu TRAIN_PY [train.py options]")
    script, options = argv[0], argv[1:]
    if any(o.startswith("--gpus=") and o != "--gpus=1" for o in options):
        raise SystemExit("nvlabs_cpu: only --gpus=1 runs without CUDA")
    if install(os.path.dirname(os.path.abspath(script))) and not any(o.startswith("--fp32") for o in options):
        # Mixed precision is a GPU speed-up; float16 convolutions on a CPU are many times slower than float32.
        options.append("--fp32=1")
    sys.argv = [script, *options]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main(sys.argv[1:])
