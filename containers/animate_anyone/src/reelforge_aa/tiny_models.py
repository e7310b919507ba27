"""Tiny random-initialised stand-ins for the pretrained weights Moore's trainers load (CPU payload only).

SD/VAE/CLIP/ControlNet/AnimateDiff weights cannot be downloaded here, so ``moore-cpu`` writes models
of the same *kind* and file layout, with tiny dimensions and a fixed seed, where the rendered config
points (``base_model_path``, ``vae_model_path``, ``image_encoder_path``, ``controlnet_openpose_path``,
``mm_path``); Moore's own ``from_pretrained`` / ``from_pretrained_2d`` / ``torch.load`` then read them.

The one dimension that cannot be tiny: Moore builds ``PoseGuider(conditioning_embedding_channels=320,
block_out_channels=(16, 32, 96, 256))`` in code, and its output is added to the UNet's ``conv_in``
output, so the UNet's first block has 320 channels (the deeper three have 32). ``from_pretrained_2d``
forces SD's four-level block layout, which the 2D config below matches.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

SEED = 20240101
MARKER = "reelforge-tiny-models.json"
#: UNet config (diffusers format, SD 1.5 layout) with tiny widths; see the module docstring for the 320.
UNET_CONFIG: dict[str, Any] = {
    "sample_size": 8,
    "in_channels": 4,
    "out_channels": 4,
    "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"],
    "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
    "block_out_channels": [320, 32, 32, 32],
    "layers_per_block": 1,
    "norm_num_groups": 8,  # 32 would leave one value per group at the 1x1 bottom level
    "cross_attention_dim": 32,
    "attention_head_dim": 8,
}
VAE_CONFIG: dict[str, Any] = {
    "in_channels": 3,
    "out_channels": 3,
    "down_block_types": ["DownEncoderBlock2D"] * 4,  # 3 downsamplings: latents are 1/8 of the image, as in SD
    "up_block_types": ["UpDecoderBlock2D"] * 4,
    "block_out_channels": [16, 16, 16, 16],
    "layers_per_block": 1,
    "norm_num_groups": 8,
    "latent_channels": 4,
    "sample_size": 64,
}
#: Moore's datasets feed ``CLIPImageProcessor()`` output (224 px) to the encoder; its embedding is the
#: UNets' cross-attention context (``projection_dim`` = ``cross_attention_dim``).
CLIP_CONFIG: dict[str, Any] = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "image_size": 224,
    "patch_size": 32,
    "projection_dim": 32,
}
POSE_GUIDER_CHANNELS = (16, 32, 96, 256)  # what train_stage_1/2.py construct


KEYS = ("base_model_path", "vae_model_path", "image_encoder_path", "controlnet_openpose_path", "mm_path")


def _write(key: str, target: Path) -> None:
    """Write the tiny model for one config key at ``target`` (each kind has its own fixed seed)."""
    import torch

    torch.manual_seed(SEED + KEYS.index(key))
    if key == "base_model_path":
        # Stage 1's sd-image-variations and stage 2's SD 1.5 UNets share one architecture, as the real ones
        # do: stage 2 loads stage 1's UNet weights into its own.
        from diffusers import UNet2DConditionModel

        UNet2DConditionModel(**UNET_CONFIG).save_pretrained(target / "unet")
    elif key == "vae_model_path":
        from diffusers import AutoencoderKL

        AutoencoderKL(**VAE_CONFIG).save_pretrained(target)
    elif key == "image_encoder_path":
        from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

        CLIPVisionModelWithProjection(CLIPVisionConfig(**CLIP_CONFIG)).save_pretrained(target)
    elif key == "controlnet_openpose_path":
        # A ControlNet checkpoint's condition embedding: the part Moore copies into the pose guider.
        from diffusers.models.controlnet import ControlNetConditioningEmbedding

        embedding = ControlNetConditioningEmbedding(320, block_out_channels=POSE_GUIDER_CHANNELS)
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.save({f"controlnet_cond_embedding.{k}": v for k, v in embedding.state_dict().items()}, target)
    elif key == "mm_path":
        target.parent.mkdir(parents=True, exist_ok=True)
        torch.save(_motion_module_state(), target)


def _motion_module_state() -> dict[str, Any]:
    """AnimateDiff-style motion-module weights for the tiny UNet, from Moore's own UNet3D (cwd = code dir)."""
    from omegaconf import OmegaConf
    from src.models.unet_3d import UNet3DConditionModel

    extra = OmegaConf.to_container(OmegaConf.load("./configs/inference/inference_v2.yaml").unet_additional_kwargs)
    config = {**UNET_CONFIG, "down_block_types": ["CrossAttnDownBlock3D"] * 3 + ["DownBlock3D"],
              "up_block_types": ["UpBlock3D"] + ["CrossAttnUpBlock3D"] * 3, **extra}
    model = UNet3DConditionModel(**config)
    return {k: v for k, v in model.state_dict().items() if "motion_modules" in k}


def model_root(cfg: Mapping[str, Any]) -> Path:
    """The common directory of every pretrained path in the config (what ``AA_MODEL_DIR`` was)."""
    return Path(os.path.commonpath([str(cfg[k]) for k in KEYS if cfg.get(k)]))


def ensure(cfg: Mapping[str, Any]) -> Path:
    """Create the tiny models the config names that are not there yet (locked; safe from several processes).

    A directory holding anything without our marker is refused: real weights are never overwritten.
    """
    root = model_root(cfg)
    root.mkdir(parents=True, exist_ok=True)
    lock_path = root / ".reelforge-tiny-models.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        marker = root / MARKER
        if marker.is_file():
            done = json.loads(marker.read_text())["written"]
        elif any(p != lock_path for p in root.iterdir()):
            raise RuntimeError(f"{root} holds files that are not ReelForge's tiny models; refusing to write there")
        else:
            done = {}
        for key in KEYS:
            if not cfg.get(key) or str(cfg[key]) in done.values():
                continue
            target = Path(cfg[key])
            staging = target.with_name(f".staging-{target.name}-{os.getpid()}")
            shutil.rmtree(staging, ignore_errors=True)
            _write(key, staging)
            if target.is_dir() and staging.is_dir():  # e.g. image_encoder/ inside a base model written later
                for child in staging.iterdir():
                    child.replace(target / child.name)
                staging.rmdir()
            else:
                staging.replace(target)
            done[f"{key}:{target.relative_to(root)}"] = str(target)
            marker.write_text(json.dumps({"seed": SEED, "written": done, "unet": UNET_CONFIG, "vae": VAE_CONFIG,
                                          "clip": CLIP_CONFIG}, indent=1))
    return root
