"""Triton Python-backend entry of the shared avatar base pipeline (one instance per GPU)."""

from reelforge_avatar.triton_models import SharedBaseModel as TritonPythonModel  # noqa: F401
