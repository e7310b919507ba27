"""ReelForge personalised avatars: selfie preprocessing, DreamBooth+LoRA fine-tuning, Triton LoRA serving."""

__version__ = "0.1.0"
