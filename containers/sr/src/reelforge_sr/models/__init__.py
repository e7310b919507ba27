"""Model registry, Compact architecture, ncnn reader and weight lookup."""

from reelforge_sr.models.compact import SRVGGNetCompact, build_compact
from reelforge_sr.models.registry import DEFAULT_FOR_KIND, MODELS, ModelSpec, resolve
from reelforge_sr.models.weights import LoadedModel, load_model, model_dirs, tensor_sha256

__all__ = ["DEFAULT_FOR_KIND", "MODELS", "LoadedModel", "ModelSpec", "SRVGGNetCompact", "build_compact",
           "load_model", "model_dirs", "resolve", "tensor_sha256"]
