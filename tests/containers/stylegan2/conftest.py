"""Fixtures for the StyleGAN2 container tests: import paths, a temporary /opt/ml, the tiny generator."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
SRC = HERE.parents[2] / "containers" / "stylegan2" / "src"
# The container package (not installed into the Airflow venv) and this folder's helpers: the training
# double pickles TinyGenerator as the top-level module ``tiny_generator``, so it must import as that.
for path in (str(SRC), str(HERE)):
    if path not in sys.path:
        sys.path.insert(0, path)


@pytest.fixture
def opt_ml(tmp_path, monkeypatch):
    """A fresh ``/opt/ml`` tree for one test (``REELFORGE_OPT_ML`` points the container code at it)."""
    from reelforge_stylegan2.sm import OptML

    root = tmp_path / "opt" / "ml"
    for sub in ("input/config", "input/data", "model", "checkpoints", "output", "processing"):
        (root / sub).mkdir(parents=True)
    monkeypatch.setenv("REELFORGE_OPT_ML", str(root))
    return OptML(root)


@pytest.fixture(scope="session")
def tiny_generator():
    from tiny_generator import TinyGenerator

    return TinyGenerator(seed=0).eval()
