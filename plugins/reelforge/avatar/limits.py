"""What one avatar run may ask of SageMaker: the fine-tune must finish within one async invocation, each
sample within one real-time invocation. Pure functions: the plan refuses a form that cannot fit, with why.

* ``InvokeEndpointAsync``: ``InvocationTimeoutSeconds`` is at most 3600 s; a fine-tune still running then is
  cut off and written to the failure path. Its time is estimated as setup + class images + training steps,
  with per-instance-type rates set in the Variables (measure them on your instance type).
* ``InvokeEndpoint`` (the Triton MME): the container must answer within 60 s. Each sample avatar is its own
  request, so the limit bounds the sample's denoising steps, not the number of samples.
"""

from __future__ import annotations

import math
from typing import Any

#: SageMaker's maximum ``InvocationTimeoutSeconds`` of an asynchronous invocation.
ASYNC_INVOCATION_LIMIT_S = 3600
#: SageMaker's limit for a real-time endpoint (and a multi-model endpoint) to answer an invocation.
REALTIME_INVOCATION_LIMIT_S = 60


def finetune_seconds(*, steps: int, class_images: int, settings: Any) -> float:
    """Estimated seconds of one fine-tune invocation on ``settings.finetune_instance_type``."""
    return (settings.finetune_setup_s + class_images * settings.finetune_class_image_s
            + steps * settings.gradient_accumulation_steps * settings.finetune_step_s)


def max_steps(*, class_images: int, settings: Any) -> int:
    """The most training steps that fit one async invocation with ``class_images`` prior images."""
    left = ASYNC_INVOCATION_LIMIT_S - settings.finetune_setup_s - class_images * settings.finetune_class_image_s
    return max(0, math.floor(left / (settings.gradient_accumulation_steps * settings.finetune_step_s)))


def sample_seconds(settings: Any) -> float:
    """Estimated seconds of one sample avatar on ``settings.mme_instance_type``."""
    return settings.sample_overhead_s + settings.sample_steps * settings.sample_step_s


def limit_problems(*, steps: int, class_images: int, settings: Any) -> list[str]:
    """Why the run cannot fit SageMaker's invocation limits (empty: it fits)."""
    problems = []
    need = finetune_seconds(steps=steps, class_images=class_images, settings=settings)
    if need > ASYNC_INVOCATION_LIMIT_S:
        fit = max_steps(class_images=class_images, settings=settings)
        problems.append(
            f"steps={steps} with class_images={class_images} would take about {need:.0f} s on "
            f"{settings.finetune_instance_type} ({settings.finetune_setup_s:g} s setup + "
            f"{settings.finetune_class_image_s:g} s per class image + {settings.finetune_step_s:g} s per step × "
            f"{settings.gradient_accumulation_steps} accumulation), but an async invocation must finish within "
            f"{ASYNC_INVOCATION_LIMIT_S} s: at most {fit} steps with {class_images} class images")
    per_sample = sample_seconds(settings)
    if per_sample > REALTIME_INVOCATION_LIMIT_S:
        problems.append(
            f"one sample avatar ({settings.sample_steps} steps) would take about {per_sample:.0f} s on "
            f"{settings.mme_instance_type}, but the multi-model endpoint must answer within "
            f"{REALTIME_INVOCATION_LIMIT_S} s: lower reelforge_avatar_sample_steps")
    return problems
