"""SageMaker PyTorch serving entry (``SAGEMAKER_PROGRAM``): the fine-tune service's four handlers."""

from reelforge_avatar.serving import input_fn, model_fn, output_fn, predict_fn

__all__ = ["input_fn", "model_fn", "output_fn", "predict_fn"]
