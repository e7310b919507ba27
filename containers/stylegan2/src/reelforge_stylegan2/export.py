"""Export a StyleGAN2-ADA generator to TorchScript, so that inference needs no training code.

The exported module has two methods, both traced on the CPU at batch size 1 (NVlabs' custom CUDA
ops are not traceable; on the CPU the generator runs its pure-PyTorch reference ops, which trace to
ordinary aten ops that run on any device):

* ``forward(z [1, z_dim], c [1, c_dim], psi [1]) → img [1, C, R, R]`` in about [-1, 1];
* ``synthesize(ws [1, num_ws, w_dim]) → img`` (used by projection).

Noise inputs are the generator's constant buffers (``noise_mode='const'``): a seed always gives the
same image. Truncation is applied here (``w_avg + psi · (w − w_avg)``) so that ``psi`` is an input,
not a constant baked into the trace. Metadata (sizes, ``w_std`` for projection, provenance) travels
inside the file as ``reelforge.json``.

Any module with NVlabs' generator interface can be exported: ``G.mapping(z, c, truncation_psi=1)``,
``G.synthesis(ws, noise_mode='const', force_fp32=True)``, ``G.mapping.w_avg`` and the attributes
``z_dim``, ``c_dim``, ``w_dim``, ``num_ws``, ``img_resolution``, ``img_channels``.
"""

from __future__ import annotations

import copy
import json
import logging
import os
import pickle  # noqa: S403 - network snapshots are pickles written by our own training jobs
import sys
from pathlib import Path

import numpy as np
import torch

log = logging.getLogger(__name__)

META_FILE = "reelforge.json"
#: Where the Dockerfile puts NVlabs' stylegan2-ada-pytorch (needed to unpickle its snapshots).
NVLABS_DIR_ENV = "STYLEGAN2_ADA_DIR"
DEFAULT_NVLABS_DIR = "/opt/stylegan2-ada-pytorch"


class ExportError(RuntimeError):
    """The traced module does not reproduce the generator."""


class _Exportable(torch.nn.Module):
    def __init__(self, G: torch.nn.Module) -> None:
        super().__init__()
        self.mapping = G.mapping
        self.synthesis = G.synthesis
        self.register_buffer("w_avg", G.mapping.w_avg.detach().clone())

    def forward(self, z: torch.Tensor, c: torch.Tensor, psi: torch.Tensor) -> torch.Tensor:
        ws = self.mapping(z, c, truncation_psi=1)
        ws = self.w_avg + (ws - self.w_avg) * psi.reshape(-1, 1, 1)
        return self.synthesis(ws, noise_mode="const", force_fp32=True)

    def synthesize(self, ws: torch.Tensor) -> torch.Tensor:
        return self.synthesis(ws, noise_mode="const", force_fp32=True)


def load_snapshot_generator(pkl_path: Path) -> torch.nn.Module:
    """``G_ema`` from a ``network-snapshot-*.pkl`` (NVlabs' code must be importable to unpickle it)."""
    nvlabs = os.environ.get(NVLABS_DIR_ENV, DEFAULT_NVLABS_DIR)
    if os.path.isdir(nvlabs) and nvlabs not in sys.path:
        sys.path.insert(0, nvlabs)
    with open(pkl_path, "rb") as f:
        data = pickle.load(f)  # noqa: S301 - our own training output, from the job's checkpoint dir
    return data["G_ema"]


def _w_std(G: torch.nn.Module, c_dim: int, samples: int, seed: int) -> float:
    """Spread of W around w_avg (projection scales its exploration noise by it)."""
    z = torch.from_numpy(np.random.RandomState(seed).randn(samples, G.z_dim)).float()
    c = torch.zeros([samples, c_dim])
    if c_dim:
        c[torch.arange(samples), torch.from_numpy(np.random.RandomState(seed + 1).randint(c_dim, size=samples))] = 1
    with torch.no_grad():
        w = G.mapping(z, c, truncation_psi=1)[:, 0, :]
    return float(((w - G.mapping.w_avg).square().sum() / samples).sqrt())


def export_generator(G: torch.nn.Module, out_path: Path, *, source: str = "", w_std_samples: int = 10000,
                     atol: float = 1e-4) -> dict:
    """Trace ``G`` and write ``out_path``; return the metadata. Raises :class:`ExportError` on mismatch."""
    G = copy.deepcopy(G).eval().requires_grad_(False).float().cpu()
    c_dim = int(getattr(G, "c_dim", 0))
    meta = {
        "format": "reelforge-stylegan2-torchscript/1",
        "z_dim": int(G.z_dim),
        "c_dim": c_dim,
        "w_dim": int(G.w_dim),
        "num_ws": int(G.num_ws),
        "img_resolution": int(G.img_resolution),
        "img_channels": int(G.img_channels),
        "trace_batch": 1,
        "noise_mode": "const",
        "w_std": _w_std(G, c_dim, w_std_samples, seed=123),
        "source": source,
        "torch": torch.__version__,
    }
    module = _Exportable(G).eval()
    gen = torch.Generator().manual_seed(0)
    z = torch.randn([1, meta["z_dim"]], generator=gen)
    c = torch.zeros([1, c_dim])
    psi = torch.ones([1])
    ws = module.w_avg.reshape(1, 1, -1).repeat(1, meta["num_ws"], 1)
    with torch.no_grad():
        traced = torch.jit.trace_module(module, {"forward": (z, c, psi), "synthesize": (ws,)})
        # The trace must reproduce the eager module on inputs it was not traced with.
        z2 = torch.randn([1, meta["z_dim"]], generator=gen)
        psi2 = torch.full([1], 0.7)
        for name, args in (("forward", (z2, c, psi2)), ("synthesize", (ws + 0.1,))):
            expected = getattr(module, name)(*args)
            got = getattr(traced, name)(*args)
            if got.shape != expected.shape or not torch.allclose(got, expected, atol=atol, rtol=1e-4):
                diff = (got - expected).abs().max().item() if got.shape == expected.shape else "shape"
                raise ExportError(f"traced {name}() differs from the generator (max abs diff {diff})")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    partial = out_path.with_name(out_path.name + ".partial")
    torch.jit.save(traced, str(partial), _extra_files={META_FILE: json.dumps(meta)})
    os.replace(partial, out_path)
    log.info("exported generator (%dpx, z_dim %d) to %s", meta["img_resolution"], meta["z_dim"], out_path)
    return meta


def load_exported(path: Path, device: str = "cpu") -> tuple[torch.jit.ScriptModule, dict]:
    """The TorchScript generator and its metadata."""
    extra = {META_FILE: ""}
    module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    meta = json.loads(extra[META_FILE] or "{}")
    if not str(meta.get("format", "")).startswith("reelforge-stylegan2-torchscript/"):
        raise ValueError(f"{path} is not a generator exported by reelforge-stylegan2")
    return module.eval(), meta
