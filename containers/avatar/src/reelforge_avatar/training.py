"""DreamBooth with prior preservation + LoRA on the UNet and the text encoder (diffusers + peft).

The base pipeline is read from a local diffusers folder with ``local_files_only=True``; nothing is downloaded.
Failures raise :class:`TrainingError`: the caller must never report success for a run that did not finish.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F  # noqa: N812
from PIL import Image

from reelforge_avatar.errors import TrainingError, UserError

log = logging.getLogger(__name__)

LORA_WEIGHTS = "pytorch_lora_weights.safetensors"
UNET_TARGETS = ["to_k", "to_q", "to_v", "to_out.0"]
TEXT_TARGETS = ["q_proj", "k_proj", "v_proj", "out_proj"]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters of one fine-tune."""

    instance_prompt: str
    class_prompt: str
    max_train_steps: int = 400
    learning_rate: float = 1e-4
    lora_rank: int = 8
    gradient_accumulation_steps: int = 1
    mixed_precision: str = "no"
    seed: int = 0
    prior_loss_weight: float = 1.0
    num_class_images: int = 100
    class_inference_steps: int = 25
    train_text_encoder: bool = True
    resolution: int | None = None  # default: the UNet's sample size × the VAE's scale factor
    max_grad_norm: float = 1.0


def list_images(folder: Path | None) -> list[Path]:
    if folder is None or not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _to_tensor(path: Path, resolution: int) -> torch.Tensor:
    with Image.open(path) as img:
        img = img.convert("RGB").resize((resolution, resolution), Image.Resampling.LANCZOS)
    array = np.asarray(img, dtype=np.float32) / 127.5 - 1.0
    return torch.from_numpy(array).permute(2, 0, 1)


def generate_class_images(base_dir: Path, out_dir: Path, config: TrainConfig, device: torch.device) -> list[Path]:
    """Prior-preservation images from the base pipeline itself (when the request brings none)."""
    from diffusers import StableDiffusionPipeline

    out_dir.mkdir(parents=True, exist_ok=True)
    existing = list_images(out_dir)
    missing = config.num_class_images - len(existing)
    if missing <= 0:
        return existing[: config.num_class_images]
    dtype = torch.float16 if device.type == "cuda" and config.mixed_precision == "fp16" else torch.float32
    pipe = StableDiffusionPipeline.from_pretrained(str(base_dir), local_files_only=True, dtype=dtype,
                                                   safety_checker=None, requires_safety_checker=False).to(device)
    pipe.set_progress_bar_config(disable=True)
    generator = torch.Generator(device="cpu").manual_seed(config.seed + 1)
    for i in range(len(existing), config.num_class_images):
        image = pipe(config.class_prompt, num_inference_steps=config.class_inference_steps,
                     generator=generator).images[0]
        image.save(out_dir / f"class_{i:04d}.png")
    del pipe
    return list_images(out_dir)[: config.num_class_images]


def _optimizer(params: list[torch.nn.Parameter], lr: float, device: torch.device) -> torch.optim.Optimizer:
    """8-bit AdamW from bitsandbytes on CUDA when it is installed, else torch's AdamW."""
    if device.type == "cuda":
        try:
            import bitsandbytes as bnb
        except ImportError:
            log.info("bitsandbytes not installed: using torch AdamW")
        else:
            return bnb.optim.AdamW8bit(params, lr=lr, weight_decay=1e-2)
    return torch.optim.AdamW(params, lr=lr, weight_decay=1e-2)


def _encode_prompt(tokenizer, text_encoder, prompt: str, batch: int, device: torch.device) -> torch.Tensor:
    ids = tokenizer([prompt] * batch, padding="max_length", truncation=True, max_length=tokenizer.model_max_length,
                    return_tensors="pt").input_ids.to(device)
    return text_encoder(ids)[0]


def train_lora(base_dir: Path, instance_dir: Path, class_dir: Path | None, output_dir: Path, config: TrainConfig,
               *, device: torch.device | None = None, work_dir: Path | None = None) -> Path:
    """Fine-tune and write ``pytorch_lora_weights.safetensors`` (diffusers LoRA format) to ``output_dir``."""
    from diffusers import AutoencoderKL, DDPMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from diffusers.utils import convert_state_dict_to_diffusers
    from peft import LoraConfig
    from peft.utils import get_peft_model_state_dict
    from transformers import CLIPTextModel, CLIPTokenizer

    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    instance_images = list_images(instance_dir)
    if not instance_images:
        raise UserError(f"no instance images in {instance_dir}")
    if not (base_dir / "model_index.json").is_file():
        raise UserError(f"{base_dir} is not a diffusers pipeline folder (no model_index.json)")
    use_fp16 = config.mixed_precision == "fp16" and device.type == "cuda"
    if config.mixed_precision == "fp16" and not use_fp16:
        log.warning("mixed_precision=fp16 needs CUDA; training in fp32 on %s", device)

    class_images = list_images(class_dir)
    if not class_images:
        class_images = generate_class_images(base_dir, (work_dir or output_dir) / "class_images", config, device)
    if not class_images:
        raise UserError("no class images for prior preservation")

    torch.manual_seed(config.seed)
    kwargs = {"local_files_only": True}
    tokenizer = CLIPTokenizer.from_pretrained(str(base_dir), subfolder="tokenizer", **kwargs)
    text_encoder = CLIPTextModel.from_pretrained(str(base_dir), subfolder="text_encoder", **kwargs)
    vae = AutoencoderKL.from_pretrained(str(base_dir), subfolder="vae", **kwargs)
    unet = UNet2DConditionModel.from_pretrained(str(base_dir), subfolder="unet", **kwargs)
    noise_scheduler = DDPMScheduler.from_pretrained(str(base_dir), subfolder="scheduler", **kwargs)
    vae_scale = 2 ** (len(vae.config.block_out_channels) - 1)
    resolution = config.resolution or unet.config.sample_size * vae_scale

    for module in (vae, unet, text_encoder):
        module.requires_grad_(False)
    vae.to(device, dtype=torch.float16) if use_fp16 else vae.to(device)
    unet.add_adapter(LoraConfig(r=config.lora_rank, lora_alpha=config.lora_rank, init_lora_weights="gaussian",
                                target_modules=UNET_TARGETS))
    if config.train_text_encoder:
        text_encoder.add_adapter(LoraConfig(r=config.lora_rank, lora_alpha=config.lora_rank,
                                            init_lora_weights="gaussian", target_modules=TEXT_TARGETS))
    unet.to(device)
    text_encoder.to(device)
    params = [p for m in (unet, text_encoder) for p in m.parameters() if p.requires_grad]
    optimizer = _optimizer(params, config.learning_rate, device)
    scaler = torch.amp.GradScaler("cuda") if use_fp16 else None

    instance = [_to_tensor(p, resolution) for p in instance_images]
    prior = [_to_tensor(p, resolution) for p in class_images]
    rng = np.random.default_rng(config.seed)
    unet.train()
    text_encoder.train()
    micro_steps = config.max_train_steps * config.gradient_accumulation_steps
    log.info("DreamBooth+LoRA: %d instance, %d class images, %d steps × %d accumulation, rank %d, %dpx on %s",
             len(instance), len(prior), config.max_train_steps, config.gradient_accumulation_steps,
             config.lora_rank, resolution, device)
    last_loss = math.nan
    try:
        for micro in range(micro_steps):
            pixels = torch.stack([instance[rng.integers(len(instance))], prior[rng.integers(len(prior))]]).to(device)
            with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=use_fp16):
                with torch.no_grad():
                    latents = vae.encode(pixels.to(vae.dtype)).latent_dist.sample() * vae.config.scaling_factor
                latents = latents.float()
                noise = torch.randn_like(latents)
                timesteps = torch.randint(0, noise_scheduler.config.num_train_timesteps, (latents.shape[0],),
                                          device=device).long()
                noisy = noise_scheduler.add_noise(latents, noise, timesteps)
                hidden = torch.cat([_encode_prompt(tokenizer, text_encoder, config.instance_prompt, 1, device),
                                    _encode_prompt(tokenizer, text_encoder, config.class_prompt, 1, device)])
                pred = unet(noisy, timesteps, hidden).sample
                if noise_scheduler.config.prediction_type == "v_prediction":
                    target = noise_scheduler.get_velocity(latents, noise, timesteps)
                else:
                    target = noise
                pred_inst, pred_prior = pred.float().chunk(2)
                target_inst, target_prior = target.float().chunk(2)
                loss = F.mse_loss(pred_inst, target_inst) + config.prior_loss_weight * F.mse_loss(pred_prior,
                                                                                                   target_prior)
            if not torch.isfinite(loss):
                raise TrainingError(f"loss is {loss.item()} at micro-step {micro}")
            scaled = loss / config.gradient_accumulation_steps
            (scaler.scale(scaled) if scaler else scaled).backward()
            if (micro + 1) % config.gradient_accumulation_steps == 0:
                if scaler:
                    scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
                if scaler:
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            last_loss = loss.item()
    except TrainingError:
        raise
    except (RuntimeError, ValueError) as err:
        raise TrainingError(f"training failed: {err}") from err
    log.info("training done, last loss %.5f", last_loss)

    output_dir.mkdir(parents=True, exist_ok=True)
    unet_layers = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
    text_layers = (convert_state_dict_to_diffusers(get_peft_model_state_dict(text_encoder))
                   if config.train_text_encoder else None)
    StableDiffusionPipeline.save_lora_weights(output_dir, unet_lora_layers=unet_layers,
                                              text_encoder_lora_layers=text_layers, weight_name=LORA_WEIGHTS,
                                              safe_serialization=True)
    weights = output_dir / LORA_WEIGHTS
    if not weights.is_file() or weights.stat().st_size == 0:
        raise TrainingError(f"no LoRA weights written to {weights}")
    return weights
