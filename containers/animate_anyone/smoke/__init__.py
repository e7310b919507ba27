"""Smoke payload: a tiny real PyTorch training job with Moore-AnimateAnyone's config, checkpoint,
weights and MLflow conventions, so the whole HyperPod/Slurm path can be exercised in seconds on CPUs.
"""
