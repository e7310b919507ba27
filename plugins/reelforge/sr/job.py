"""Turn a run's form values and trigger into one deterministic SR job specification."""

from __future__ import annotations

import math
from typing import Any

from reelforge.sr.form import PRIORITY_NICE, RESULT_FIELDS
from reelforge.sr.settings import SRSettings
from reelforge.storage import (
    S3Object,
    ascii_sr_output_prefix,
    job_id,
    source_extension,
    sr_output_name,
    sr_output_prefix,
    sr_workdir,
)


class InvalidSettingsError(ValueError):
    """A form value is out of range; retrying will not help."""


def result_settings(params: dict[str, Any]) -> dict[str, Any]:
    """The validated settings that define the output (and so enter the job id): ``form.RESULT_FIELDS``.

    A field added later (``Field.later``) that a run omits (an older run's conf) takes its default.
    """
    out: dict[str, Any] = {}
    for name, f in RESULT_FIELDS.items():
        try:
            value = f.kind(params[name] if name in params or not f.later else f.default)
        except (KeyError, TypeError, ValueError) as err:
            raise InvalidSettingsError(f"setting {name!r} is missing or not a {f.kind.__name__}") from err
        if f.choices is not None and value not in f.choices:
            raise InvalidSettingsError(f"setting {name!r}={value!r}; allowed: {f.choices}")
        if f.minimum is not None and value < f.minimum or f.maximum is not None and value > f.maximum:
            limit = f"within {f.minimum}..{f.maximum}" if f.maximum is not None else f"≥ {f.minimum}"
            raise InvalidSettingsError(f"{name} must be {limit}, not {value}")
        out[name] = value
    return out


def _identity(values: dict[str, Any]) -> dict[str, Any]:
    """The settings that name a job: a later field at its default stays out, so earlier ids hold."""
    return {k: v for k, v in values.items() if not (RESULT_FIELDS[k].later and RESULT_FIELDS[k].names_default_job(v))}


def build_job(source: S3Object, params: dict[str, Any], settings: SRSettings) -> dict[str, Any]:
    """The JSON-safe job spec every later task reads from XCom."""
    values = result_settings(params)
    ext = source_extension(source.key)
    jid = job_id(source, _identity(values))
    output_prefix = sr_output_prefix(settings.output_prefix, source.key, jid)
    # a job is done when its report is under its prefix (or under the ASCII-only one earlier versions used)
    done_markers = list(dict.fromkeys(f"{p}report.json" for p in (
        output_prefix, ascii_sr_output_prefix(settings.output_prefix, source.key, jid))))
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
        "output_name": sr_output_name(source.key, values["scale"], values["container"], values["preview_seconds"] > 0),
        "done_markers": done_markers,
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
        "OUTPUT_NAME": job["output_name"],
        **{f.env: str(s.get(name, f.default)) for name, f in RESULT_FIELDS.items()},
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


def model_estimate(plan: dict[str, Any], mpix_per_second: float, parallel: int, startup_seconds: float = 0.0,
                   full_speed_tasks: float | None = None) -> dict[str, float]:
    """What the upscale array will take, from the cluster's calibrated figures: each task ``startup_seconds``
    (Python, torch, weights, ffmpeg) plus its frames' input megapixels at ``mpix_per_second`` (one task
    running alone); ``model_seconds`` is that work without the start-ups. Up to ``parallel`` tasks run at
    once (segments in plan order, each on the next free slot), but the cluster only has the throughput of
    ``full_speed_tasks`` tasks (default ``parallel``: each task on its own GPU or cores); when more run, they
    share it and each goes slower. ``task_seconds`` (the tasks' elapsed times added up) and ``wall_seconds``
    come from that schedule. Frames the plan drops (inverse telecine, a lower constant rate) are not
    counted; held frames the workers reuse are."""
    geo = plan.get("geometry") or {}
    mpx = int(geo.get("decode_width") or 0) * int(geo.get("decode_height") or 0) / 1e6
    rows = (plan.get("frame_map") or {}).get("repeats")
    counts = [v for v, n in rows for _ in range(n)] if rows else None
    seconds = []
    for seg in plan.get("segments") or []:
        frames = seg["end_frame"] - seg["start_frame"]
        if counts is not None:
            frames = sum(1 for c in counts[seg["start_frame"]:seg["end_frame"]] if c > 0)
        seconds.append(frames * mpx / max(mpix_per_second, 1e-9))
    slots = max(1, parallel)
    capacity = min(float(full_speed_tasks), slots) if full_speed_tasks and full_speed_tasks > 0 else float(slots)
    pending = [startup_seconds + s for s in seconds]  # full-speed seconds of each task, in plan order
    running: list[list[float]] = []  # [work left, started at]
    now = task_total = 0.0
    while pending or running:
        while pending and len(running) < slots:
            running.append([pending.pop(0), now])
        speed = min(1.0, capacity / len(running))
        step = min(r[0] for r in running) / speed
        now += step
        for r in running:
            r[0] -= step * speed
        task_total += sum(now - r[1] for r in running if r[0] <= 1e-9)
        running = [r for r in running if r[0] > 1e-9]
    return {"model_seconds": round(sum(seconds), 1), "task_seconds": round(task_total, 1),
            "wall_seconds": round(now, 1), "mpix_per_second": mpix_per_second,
            "startup_seconds": startup_seconds, "parallel": slots, "full_speed_tasks": round(capacity, 2)}


def array_spec(plan: dict[str, Any]) -> str:
    """Slurm ``--array`` indices for a plan: one task per segment."""
    n = len(plan.get("segments") or [])
    if n == 0:
        raise ValueError("the plan has no segments")
    return f"0-{n - 1}" if n > 1 else "0"
