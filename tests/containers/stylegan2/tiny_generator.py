"""A small, real generator with NVlabs' StyleGAN2 generator interface (built in tests; not NVlabs code).

Mapping MLP → ``ws``; synthesis: a learned 4×4 constant, style-modulated 3×3 convolutions with
demodulation, per-layer constant noise buffers, ×2 upsampling per block, 1×1 to RGB. Enough for
TorchScript export, generation and projection to be exercised on real tensors in well under a second.
"""

from __future__ import annotations

import torch
from torch import nn


class TinyMapping(nn.Module):
    def __init__(self, z_dim: int, c_dim: int, w_dim: int, num_ws: int) -> None:
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.embed = nn.Linear(c_dim, w_dim) if c_dim else None
        self.net = nn.Sequential(nn.Linear(z_dim + (w_dim if c_dim else 0), w_dim), nn.LeakyReLU(0.2),
                                 nn.Linear(w_dim, w_dim), nn.LeakyReLU(0.2))
        self.register_buffer("w_avg", torch.zeros(w_dim))

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None):
        x = z * (z.square().mean(dim=1, keepdim=True) + 1e-8).rsqrt()
        if self.embed is not None:
            x = torch.cat([x, self.embed(c)], dim=1)
        ws = self.net(x).unsqueeze(1).repeat(1, self.num_ws, 1)
        if truncation_psi != 1:
            ws = self.w_avg.lerp(ws, truncation_psi)
        return ws


class ModConv(nn.Module):
    def __init__(self, w_dim: int, cin: int, cout: int, resolution: int) -> None:
        super().__init__()
        self.affine = nn.Linear(w_dim, cin)
        nn.init.ones_(self.affine.bias)
        self.weight = nn.Parameter(torch.randn(cout, cin, 3, 3))
        self.bias = nn.Parameter(torch.zeros(cout))
        self.register_buffer("noise_const", torch.randn(1, 1, resolution, resolution))
        self.noise_strength = nn.Parameter(torch.full([], 0.1))

    def forward(self, x, w, noise_mode="random"):
        style = self.affine(w)  # [N, cin]
        weight = self.weight.unsqueeze(0) * style[:, None, :, None, None]  # [N, cout, cin, 3, 3]
        weight = weight * (weight.square().sum(dim=[2, 3, 4], keepdim=True) + 1e-8).rsqrt()
        n, cin, h, wd = x.shape
        out = nn.functional.conv2d(x.reshape(1, n * cin, h, wd), weight.reshape(-1, cin, 3, 3), padding=1, groups=n)
        out = out.reshape(n, -1, h, wd)
        noise = self.noise_const if noise_mode == "const" else torch.randn(n, 1, h, wd, device=x.device)
        return nn.functional.leaky_relu(out + noise * self.noise_strength + self.bias[None, :, None, None], 0.2)


class TinySynthesis(nn.Module):
    def __init__(self, w_dim: int, img_resolution: int, img_channels: int, channels: int = 16) -> None:
        super().__init__()
        self.const = nn.Parameter(torch.randn(1, channels, 4, 4))
        self.layers = nn.ModuleList()
        res = 4
        self.layers.append(ModConv(w_dim, channels, channels, res))
        while res < img_resolution:
            res *= 2
            self.layers.append(ModConv(w_dim, channels, channels, res))
        self.to_rgb = nn.Conv2d(channels, img_channels, 1)
        self.num_ws = len(self.layers)

    def forward(self, ws, noise_mode="random", force_fp32=False):
        x = self.const.repeat(ws.shape[0], 1, 1, 1)
        for index, layer in enumerate(self.layers):
            if index > 0:
                x = nn.functional.interpolate(x, scale_factor=2.0, mode="nearest")
            x = layer(x, ws[:, index], noise_mode=noise_mode)
        return torch.tanh(self.to_rgb(x))


class TinyGenerator(nn.Module):
    def __init__(self, z_dim: int = 16, c_dim: int = 0, w_dim: int = 16, img_resolution: int = 16,
                 img_channels: int = 3, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = TinySynthesis(w_dim, img_resolution, img_channels)
        self.num_ws = self.synthesis.num_ws
        self.mapping = TinyMapping(z_dim, c_dim, w_dim, self.num_ws)
        with torch.no_grad():  # what training's EMA of w would hold
            z = torch.randn(512, z_dim)
            c = torch.zeros(512, c_dim)
            if c_dim:
                c[torch.arange(512), torch.randint(c_dim, (512,))] = 1
            self.mapping.w_avg.copy_(self.mapping(z, c)[:, 0].mean(dim=0))

    def forward(self, z, c, truncation_psi=1, noise_mode="random"):
        return self.synthesis(self.mapping(z, c, truncation_psi=truncation_psi), noise_mode=noise_mode)
