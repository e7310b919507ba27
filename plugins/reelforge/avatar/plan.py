"""Names, input checks and requests of one avatar run (pure functions: no AWS, no Airflow).

Names derive from the run, never from the clock: the run key is
``<run_after:%Y%m%d%H%M%S>-<6 hex of sha256(run_id)>`` and the model name hashes the user id with the
run id, so every try of a run asks for the same job, inference, model and S3 keys.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import PurePosixPath
from typing import Any

from reelforge.avatar.limits import limit_problems
from reelforge.avatar.settings import AvatarSettings
from reelforge.sagemaker_requests import (
    JOB_NAME_RE,
    PROC,
    InvalidParamsError,
    digest,
    processing_job,
    run_key,
    s3_input,
    s3_output,
    s3_uri,
    split_s3_uri,
)
from reelforge.storage import InvalidSourceError, validate_key

USER_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
MODEL_NAME_RE = re.compile(r"[a-z0-9](-?[a-z0-9])*")
TOKEN_RE = re.compile(r"[A-Za-z0-9<>_]{2,24}")
IMAGE_EXTENSIONS = frozenset({"jpg", "jpeg", "png", "webp"})
MARKER = "_READY"
CLASS_PROMPT = "a photo of a person"
ENTRYPOINT = ["reelforge-avatar", "preprocess"]
RESOLUTION = 512
#: Prior-preservation images the fine-tune generates with the base model (DreamBooth's usual 100).
DEFAULT_CLASS_IMAGES = 100


def _signature_ok(head: bytes) -> bool:
    """JPEG, PNG or WebP by their first bytes (the extension alone proves nothing)."""
    return head.startswith((b"\xff\xd8\xff", b"\x89PNG\r\n\x1a\n")) or (head[:4] == b"RIFF" and head[8:12] == b"WEBP")


def model_name(user_id: str, run_id: str) -> str:
    """``avatar-<user slug>-<10 hex>``: ``[a-z0-9-]``, at most 48 characters, the same for every try."""
    slug = re.sub(r"[^a-z0-9]+", "-", user_id.lower()).strip("-")[:24].strip("-") or "user"
    name = f"avatar-{slug}-{digest(user_id, run_id, length=10)}"
    assert MODEL_NAME_RE.fullmatch(name), name
    return name


def job_name(kind: str, key: str) -> str:
    name = f"reelforge-avatar-{kind}-{key}"
    if not JOB_NAME_RE.fullmatch(name):
        raise ValueError(f"{name!r} is not a valid SageMaker name")
    return name


def form_params(params: dict[str, Any]) -> dict[str, Any]:
    """The form's values, typed and checked."""
    try:
        p = {
            "user_id": str(params.get("user_id") or "").strip(),
            "selfies_uri": str(params.get("selfies_uri") or "").strip(),
            "steps": int(params["steps"]),
            "lora_rank": int(params["lora_rank"]),
            "token": str(params["token"]).strip(),
            "samples": int(params["samples"]),
            "class_images": int(params.get("class_images", DEFAULT_CLASS_IMAGES)),
            "prompt": str(params["prompt"]).strip(),
        }
    except (KeyError, TypeError, ValueError) as err:
        raise InvalidParamsError(f"bad parameter: {err}") from err
    if not USER_ID_RE.fullmatch(p["user_id"]):
        raise InvalidParamsError(f"user_id must match {USER_ID_RE.pattern}: {p['user_id']!r}")
    if not 50 <= p["steps"] <= 5000:
        raise InvalidParamsError("steps must be between 50 and 5000")
    if p["lora_rank"] not in (4, 8, 16, 32, 64):
        raise InvalidParamsError("lora_rank must be 4, 8, 16, 32 or 64")
    if not TOKEN_RE.fullmatch(p["token"]):
        raise InvalidParamsError(f"token must match {TOKEN_RE.pattern} (a rare word such as ohwx)")
    if not 1 <= p["samples"] <= 16:
        raise InvalidParamsError("samples must be between 1 and 16")
    if not 1 <= p["class_images"] <= 400:
        raise InvalidParamsError("class_images must be between 1 and 400")
    if "{token}" not in p["prompt"] and p["token"] not in p["prompt"]:
        raise InvalidParamsError("the prompt must contain {token} (or the token itself)")
    if p["selfies_uri"]:
        split_s3_uri(p["selfies_uri"])
        if not p["selfies_uri"].endswith("/"):
            raise InvalidParamsError("selfies_uri must be a prefix ending in '/'")
    return p


def check_selfies(objects: list[dict[str, Any]], heads: dict[str, bytes], settings: AvatarSettings) -> list[str]:
    """The selfie keys, or :class:`InvalidParamsError` naming every refused object and why.

    ``heads`` holds the first bytes of each object (a ranged GET) to check the image signature.
    """
    files = [o for o in objects if not o["Key"].endswith("/") and PurePosixPath(o["Key"]).name != MARKER]
    problems: list[str] = []
    if len(files) > settings.max_selfies:
        raise InvalidParamsError(f"{len(files)} objects: at most {settings.max_selfies} selfies per set")
    total = sum(int(o.get("Size", 0)) for o in files)
    if total > settings.max_total_bytes:
        raise InvalidParamsError(f"the set holds {total} bytes: at most {settings.max_total_bytes}")
    for o in files:
        key, size, name = o["Key"], int(o.get("Size", 0)), PurePosixPath(o["Key"]).name
        try:
            validate_key(key)
        except InvalidSourceError as err:
            problems.append(str(err))
            continue
        if ".." in PurePosixPath(key).parts or not key.isascii():
            problems.append(f"{key!r}: odd key (non-ASCII or '..')")
        elif PurePosixPath(key).suffix.lower().lstrip(".") not in IMAGE_EXTENSIONS:
            problems.append(f"{name!r}: not an image ({', '.join(sorted(IMAGE_EXTENSIONS))})")
        elif not 0 < size <= settings.max_selfie_bytes:
            problems.append(f"{name!r}: {size} bytes (1..{settings.max_selfie_bytes} allowed)")
        elif not _signature_ok(heads.get(key, b"")):
            problems.append(f"{name!r}: content is not JPEG, PNG or WebP")
    if problems:
        raise InvalidParamsError(f"refused {len(problems)} of {len(files)} objects: " + "; ".join(problems))
    if len(files) < settings.min_selfies:
        raise InvalidParamsError(f"{len(files)} selfies: at least {settings.min_selfies} are needed")
    return sorted(o["Key"] for o in files)


def plan_avatar(*, p: dict[str, Any], run_id: str, run_after: datetime, settings: AvatarSettings) -> dict[str, Any]:
    """Names, S3 locations, the preprocessing job and the fine-tune request of one run."""
    if settings.mixed_precision not in ("no", "fp16"):
        raise InvalidParamsError("reelforge_avatar_mixed_precision must be 'no' or 'fp16'")
    problems = limit_problems(steps=p["steps"], class_images=p["class_images"], settings=settings)
    if problems:
        raise InvalidParamsError("; ".join(problems))
    key = run_key(run_after, run_id)
    name = model_name(p["user_id"], run_id)
    base = f"{settings.artifacts_prefix}runs/{key}/"
    crops_uri = s3_uri(settings.artifacts_bucket, f"{base}crops/")
    output_s3_uri = s3_uri(settings.artifacts_bucket, f"{base}model/model.tar.gz")
    prep = processing_job(
        job_name("prep", key), role_arn=settings.role_arn, image_uri=settings.image_uri, entrypoint=ENTRYPOINT,
        args=["--input", f"{PROC}/input/selfies", "--output", f"{PROC}/output/crops",
              "--size", str(RESOLUTION), "--min-faces", str(settings.min_selfies)],
        inputs=[s3_input("selfies", p["selfies_uri"], f"{PROC}/input/selfies")],
        outputs=[s3_output("crops", crops_uri, f"{PROC}/output/crops")],
        instance_type=settings.prep_instance_type, volume_gb=settings.processing_volume_gb, max_runtime_s=3600,
        run_id=run_id, workflow="avatar",
    )
    request = {
        "job_name": job_name("ft", key),
        "instance_data_uri": crops_uri,
        "class_data_uri": None,
        "output_s3_uri": output_s3_uri,
        "model_name": name,
        "token": p["token"],
        "class_prompt": CLASS_PROMPT,
        "base_model_id": settings.base_model_id,
        "base_model_revision": settings.base_model_revision,
        "max_train_steps": p["steps"],
        "lora_rank": p["lora_rank"],
        "learning_rate": settings.learning_rate,
        "gradient_accumulation_steps": settings.gradient_accumulation_steps,
        "mixed_precision": settings.mixed_precision,
        "seed": settings.seed,
        "num_class_images": p["class_images"],
    }
    return {
        "key": key,
        "run_id": run_id,
        "user_id": p["user_id"],
        "params": p,
        "model_name": name,
        "target_model": f"{name}.tar.gz",
        "selfies_uri": p["selfies_uri"],
        "crops_uri": crops_uri,
        "prep_config": prep,
        "request": request,
        "plan_uri": s3_uri(settings.artifacts_bucket, f"{base}plan.json"),
        "request_uri": s3_uri(settings.artifacts_bucket, f"{base}finetune/request.json"),
        "inference_id": job_name("ft", key),
        "finetune_endpoint": settings.finetune_endpoint,
        "finetune_timeout_s": settings.finetune_timeout_s,
        "poll_interval_s": settings.poll_interval_s,
        "mme_endpoint": settings.mme_endpoint,
        "registered_uri": s3_uri(settings.mme_bucket, f"{settings.mme_prefix}{name}.tar.gz"),
        "samples_uri": s3_uri(settings.output_bucket, f"{settings.output_prefix}users/{p['user_id']}/{key}/"),
    }


def generation_requests(plan: dict[str, Any], settings: AvatarSettings) -> list[dict[str, Any]]:
    """The MME request bodies of the sample avatars: the prompt with the token, one seed each."""
    p = plan["params"]
    prompt = p["prompt"].replace("{token}", p["token"])
    return [{"prompt": prompt, "negative_prompt": settings.negative_prompt, "seed": settings.seed + i,
             "steps": settings.sample_steps, "guidance": settings.guidance} for i in range(p["samples"])]
