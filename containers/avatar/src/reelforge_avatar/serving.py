"""SageMaker PyTorch serving contract of the fine-tune ASYNC endpoint: ``model_fn``/``input_fn``/``predict_fn``/
``output_fn``.

One invocation = one user's DreamBooth+LoRA fine-tune: download the crops (and class images) from S3, train,
pack ``model.tar.gz`` (LoRA + Triton files + manifest), upload it to ``output_s3_uri`` (temporary key, then
copy), answer ``{"status": "succeeded", "model_uri": …, "manifest": …}``. Any failure raises, so the async
endpoint writes its failure object and the ErrorTopic notification fires; no success body is ever returned
for a job that did not finish.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from reelforge_avatar import __version__, s3io
from reelforge_avatar.base_model import base_dir, check_same_base, read_identity
from reelforge_avatar.errors import RequestError
from reelforge_avatar.package import build_model_dir, pack_model
from reelforge_avatar.request import FineTuneRequest, parse_request
from reelforge_avatar.training import TrainConfig, train_lora

log = logging.getLogger(__name__)

JSON = "application/json"
#: Denoising steps of each prior-preservation image the service generates (when the request brings none).
CLASS_STEPS_ENV = "REELFORGE_AVATAR_CLASS_STEPS"


@dataclass
class ServiceContext:
    """What ``model_fn`` prepares once per worker: the local base pipeline folder and its identity."""

    base_dir: Path
    identity: dict[str, str]
    work_root: Path | None = None
    s3_client: Any = None
    class_inference_steps: int = 25


def model_fn(model_dir: str, context: Any = None) -> ServiceContext:
    """The base model folder (``$REELFORGE_AVATAR_BASE_MODEL_DIR`` or the SageMaker model dir)."""
    folder = base_dir(model_dir)
    return ServiceContext(base_dir=folder, identity=read_identity(folder),
                          class_inference_steps=int(os.environ.get(CLASS_STEPS_ENV, "25")))


def input_fn(request_body: bytes | str, request_content_type: str = JSON, context: Any = None) -> FineTuneRequest:
    """Decode and validate the request object (JSON only)."""
    if (request_content_type or JSON).split(";")[0].strip() != JSON:
        raise RequestError(f"content type must be {JSON}, not {request_content_type!r}")
    return parse_request(request_body)


def predict_fn(request: FineTuneRequest, service: ServiceContext, context: Any = None) -> dict:
    """Train, package, upload; return the success body. Raises on any failure."""
    check_same_base(service.identity, request.base_model_id, request.base_model_revision)
    with tempfile.TemporaryDirectory(prefix=f"avatar-{request.model_name}-", dir=service.work_root) as tmp:
        work = Path(tmp)
        instance_dir = work / "instance"
        s3io.download_prefix(request.instance_data_uri, instance_dir, client=service.s3_client)
        class_dir = None
        if request.class_data_uri is not None:
            class_dir = work / "class"
            s3io.download_prefix(request.class_data_uri, class_dir, client=service.s3_client)
        config = TrainConfig(
            instance_prompt=request.instance_prompt, class_prompt=request.class_prompt,
            max_train_steps=request.max_train_steps, learning_rate=request.learning_rate,
            lora_rank=request.lora_rank, gradient_accumulation_steps=request.gradient_accumulation_steps,
            mixed_precision=request.mixed_precision, seed=request.seed, num_class_images=request.num_class_images,
            class_inference_steps=service.class_inference_steps)
        weights = train_lora(service.base_dir, instance_dir, class_dir, work / "lora", config, work_dir=work)
        manifest = build_model_dir(work / "package", model_name=request.model_name, lora_weights=weights,
                                   manifest_fields={
                                       **service.identity, "lora_rank": request.lora_rank,
                                       "max_train_steps": request.max_train_steps, "token": request.token,
                                       "instance_prompt": request.instance_prompt,
                                       "class_prompt": request.class_prompt, "seed": request.seed,
                                       "learning_rate": request.learning_rate, "job_name": request.job_name,
                                       "reelforge_avatar_version": __version__})
        archive = work / "model.tar.gz"
        pack_model(work / "package", archive)
        uri = s3io.upload_atomic(archive, request.output_s3_uri, client=service.s3_client)
    log.info("%s: model uploaded to %s", request.job_name, uri)
    return {"status": "succeeded", "model_uri": uri, "manifest": manifest}


def output_fn(prediction: dict, accept: str = JSON, context: Any = None) -> tuple[str, str]:
    """The JSON response body (only ever a success body: failures raised before this)."""
    if prediction.get("status") != "succeeded":
        raise RuntimeError(f"refusing to answer a non-success prediction: {prediction!r}")
    return json.dumps(prediction), JSON
