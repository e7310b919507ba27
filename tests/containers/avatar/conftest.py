"""Fixtures for the avatar container tests: import paths, a tiny local base pipeline, trained LoRA packages."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[2] / "containers" / "avatar" / "src"
for path in (str(SRC), str(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)

from tiny_pipeline import BASE_ID, BASE_REVISION  # noqa: E402 - after the path set-up


@pytest.fixture(scope="session")
def tiny_base(tmp_path_factory) -> Path:
    """A tiny random Stable Diffusion pipeline folder with its identity file (what production bakes in)."""
    from reelforge_avatar.base_model import write_identity
    from tiny_pipeline import build_tiny_pipeline

    base = build_tiny_pipeline(tmp_path_factory.mktemp("base") / "pipeline")
    write_identity(base, BASE_ID, BASE_REVISION)
    return base


@pytest.fixture(scope="session")
def instance_images(tmp_path_factory) -> Path:
    """A few small synthetic 'selfie crops' (training needs images, not faces)."""
    import numpy as np
    from PIL import Image

    folder = tmp_path_factory.mktemp("instance")
    rng = np.random.default_rng(7)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (48, 48, 3), dtype=np.uint8)).save(folder / f"face_{i:04d}.png")
    return folder
