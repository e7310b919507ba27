"""Turn a run's form values and trigger into one deterministic SR job specification."""

from __future__ import annotations

import math
from typing import Any

from reelforge.settings import SRSettings
from reelforge.storage import S3Object, job_id, source_extension, sr_output_prefix, sr_workdir

#: Form fields that change the result, hence the job id. Anything else (priority, force) does not.
RESULT_SETTINGS: dict[str, tuple[type, tuple[Any, ...] | None]] = {
    "model": (str, ("auto", "anime", "live-action")),
    "scale": (int, (2, 3, 4)),
    "container": (str, ("mp4", "mkv")),
    "codec": (str, ("libx264", "libx265")),
    "crf": (int, None),
    "ten_bit": (str, ("auto", "on", "off")),
    "deinterlace": (str, ("auto", "on", "off")),
    "sar": (str, ("square", "keep")),
    "segment_seconds": (int, None),
    "preview_seconds": (int, None),
}
PRIORITY_NICE = {"high": 0, "normal": 100, "low": 1000}


class InvalidSettingsError(ValueError):
    """A form value is out of range; retrying will not help."""


def result_settings(params: dict[str, Any]) -> dict[str, Any]:
    """The validated settings that define the output (and so enter the job id)."""
    out: dict[str, Any] = {}
    for name, (kind, allowed) in RESULT_SETTINGS.items():
        try:
            value = kind(params[name])
        except (KeyError, TypeError, ValueError) as err:
            raise InvalidSettingsError(f"setting {name!r} is missing or not a {kind.__name__}") from err
        if allowed is not None and value not in allowed:
            raise InvalidSettingsError(f"setting {name!r}={value!r}; allowed: {allowed}")
        out[name] = value
    if not 0 <= out["crf"] <= 51:
        raise InvalidSettingsError("crf must be within 0..51")
    if not 1 <= out["segment_seconds"] <= 600:
        raise InvalidSettingsError("segment_seconds must be within 1..600")
    if out["preview_seconds"] < 0:
        raise InvalidSettingsError("preview_seconds must be ≥ 0 (0 = the whole video)")
    return out


def build_job(source: S3Object, params: dict[str, Any], settings: SRSettings) -> dict[str, Any]:
    """The JSON-safe job spec every later task reads from XCom."""
    values = result_settings(params)
    ext = source_extension(source.key)
    jid = job_id(source, values)
    output_prefix = sr_output_prefix(settings.output_prefix, source.key, jid)
    workdir = sr_workdir(settings.cluster_work_root, jid)
    return {
        "job_id": jid,
        "source": {
            "bucket": source.bucket,
            "key": source.key,
            "version_id": source.version_id,
            "etag": source.etag,
            "size": source.size,
            "uri": source.uri,
        },
        "source_ext": ext,
        "settings": values,
        "workdir": workdir,
        "output_bucket": settings.output_bucket,
        "output_prefix": output_prefix,
        "output_uri": f"s3://{settings.output_bucket}/{output_prefix}",
        "nice": PRIORITY_NICE.get(str(params.get("priority", "normal")), 100),
    }


def worker_env(job: dict[str, Any], settings: SRSettings) -> dict[str, str]:
    """Environment for the sbatch scripts (the operator quotes every value)."""
    s = job["settings"]
    return {
        "WORKDIR": job["workdir"],
        "SOURCE_URI": job["source"]["uri"],
        "SOURCE_VERSION_ID": job["source"]["version_id"] or "",
        "SOURCE_EXT": job["source_ext"],
        "DEST_URI": job["output_uri"],
        "SR_MODEL": s["model"],
        "SR_SCALE": str(s["scale"]),
        "SR_CONTAINER": s["container"],
        "SR_CODEC": s["codec"],
        "SR_CRF": str(s["crf"]),
        "SR_TEN_BIT": s["ten_bit"],
        "SR_DEINTERLACE": s["deinterlace"],
        "SR_SAR": s["sar"],
        "SR_SEGMENT_SECONDS": str(s["segment_seconds"]),
        "SR_PREVIEW_SECONDS": str(s["preview_seconds"]),
        "SR_MODEL_DIR": settings.model_dir,
        "SR_VENV": settings.worker_venv,
        "SR_IMAGE": settings.container_image,
    }


def segment_time_limit(plan: dict[str, Any], mpix_per_second: float, safety: float = 4.0) -> int:
    """Slurm ``--time`` (minutes) for one upscale task: the longest segment's input megapixels at the
    cluster's measured rate, times a safety factor, plus 5 minutes for start-up and encoding."""
    video = (plan.get("probe") or {}).get("video") or {}
    pixels = int(video.get("width") or 0) * int(video.get("height") or 0)
    longest = max((s["end_frame"] - s["start_frame"] for s in plan.get("segments") or []), default=0)
    seconds = longest * pixels / 1e6 / max(mpix_per_second, 1e-6) * safety
    return int(math.ceil(seconds / 60)) + 5


def array_spec(plan: dict[str, Any]) -> str:
    """Slurm ``--array`` indices for a plan: one task per segment."""
    n = len(plan.get("segments") or [])
    if n == 0:
        raise ValueError("the plan has no segments")
    return f"0-{n - 1}" if n > 1 else "0"
