"""SRVGGNetCompact (Real-ESRGAN "Compact"), written with plain ``torch.nn``.

Same module names as the original so that official ``.pth`` state dicts load with ``strict=True``:
``body.0`` conv, ``body.1`` PReLU, ... ``body.<2n+2>`` last conv, then pixel shuffle, plus the input
upsampled with nearest neighbour added back.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F  # noqa: N812
from torch import nn


class SRVGGNetCompact(nn.Module):
    """conv → (PReLU → conv) × num_conv → PReLU → conv → pixel shuffle, + nearest-upsampled input."""

    def __init__(self, num_in_ch: int = 3, num_out_ch: int = 3, num_feat: int = 64, num_conv: int = 16,
                 upscale: int = 4) -> None:
        super().__init__()
        self.upscale = upscale
        self.num_conv = num_conv
        body: list[nn.Module] = [nn.Conv2d(num_in_ch, num_feat, 3, 1, 1), nn.PReLU(num_parameters=num_feat)]
        for _ in range(num_conv):
            body += [nn.Conv2d(num_feat, num_feat, 3, 1, 1), nn.PReLU(num_parameters=num_feat)]
        body.append(nn.Conv2d(num_feat, num_out_ch * upscale * upscale, 3, 1, 1))
        self.body = nn.ModuleList(body)
        self.upsampler = nn.PixelShuffle(upscale)

    @property
    def receptive_radius(self) -> int:
        """Input pixels each side that one output pixel depends on (one per 3×3 conv)."""
        return self.num_conv + 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = x
        for layer in self.body:
            out = layer(out)
        out = self.upsampler(out)
        return out + F.interpolate(x, scale_factor=self.upscale, mode="nearest")


def compact_hparams(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """Read num_feat/num_conv/upscale from a Compact state dict (raises ValueError if it isn't one)."""
    convs = sorted(int(k.split(".")[1]) for k in state if k.startswith("body.") and k.endswith(".weight")
                    and state[k].dim() == 4)
    if not convs or convs[0] != 0:
        raise ValueError("not an SRVGGNetCompact state dict (no body.0 conv)")
    first, last = state["body.0.weight"], state[f"body.{convs[-1]}.weight"]
    num_in, num_feat = int(first.shape[1]), int(first.shape[0])
    out_ch = int(last.shape[0])
    upscale = math.isqrt(out_ch // num_in)
    if upscale * upscale * num_in != out_ch:
        raise ValueError(f"last conv has {out_ch} channels: not {num_in}·s² for an integer scale")
    return {"num_in_ch": num_in, "num_out_ch": num_in, "num_feat": num_feat, "num_conv": len(convs) - 2,
            "upscale": upscale}


def build_compact(state: dict[str, torch.Tensor]) -> SRVGGNetCompact:
    """An eval-mode network with ``state`` loaded strictly."""
    net = SRVGGNetCompact(**compact_hparams(state))
    net.load_state_dict(state, strict=True)
    return net.eval().requires_grad_(False)
