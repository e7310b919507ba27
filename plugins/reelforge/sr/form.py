"""Every SR setting, defined once: its default, choices or range, form text and the variable the
cluster's sbatch scripts read.

The SR DAG's trigger form (:func:`form_params`), the validation of a run's values
(``job.result_settings``), the environment of the Slurm jobs (``job.worker_env``), the backfill's
settings and the upload settings all come from :data:`FIELDS`. The sbatch scripts' own fallbacks
and the worker CLI's defaults are pinned equal to it by ``tests/plugins/sr/test_form_contract.py``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

#: Output frame rates the form offers: the source's own times, its nominal rate, or a broadcast rate.
FRAME_RATES = ("source", "constant", "24000/1001", "24", "25", "30000/1001", "30", "50", "60000/1001", "60")
PRIORITY_NICE = {"high": 0, "normal": 100, "low": 1000}


@dataclass(frozen=True)
class Field:
    default: Any
    title: str
    description: str
    choices: tuple[Any, ...] | None = None
    minimum: int | None = None
    maximum: int | None = None
    #: the sbatch variable; ``None`` for fields that do not change the output (nor the job id)
    env: str | None = None
    #: added after jobs were first delivered: at its default it stays out of the job id
    later: bool = False
    #: values that name the same job as the default (an earlier default, whose deliveries keep their ids)
    same_job_as_default: tuple[Any, ...] = ()

    @property
    def kind(self) -> type:
        return type(self.default)

    def names_default_job(self, value: Any) -> bool:
        """Whether ``value`` names the same job as the default (a later field then stays out of the job id)."""
        return value == self.default or value in self.same_job_as_default


FIELDS: dict[str, Field] = {
    "model": Field("auto", "Model", "auto picks anime (realesr-animevideov3) or live action "
                   "(realesr-general-x4v3) from sampled frames.", choices=("auto", "anime", "live-action"),
                   env="SR_MODEL"),
    "scale": Field(4, "Scale", "Output size = input size × scale.", choices=(2, 3, 4), env="SR_SCALE"),
    "container": Field("mp4", "Container", "Output container.", choices=("mp4", "mkv"), env="SR_CONTAINER"),
    "codec": Field("libx264", "Codec", "Video encoder.", choices=("libx264", "libx265"), env="SR_CODEC"),
    "crf": Field(18, "CRF", "Constant rate factor: lower is better quality and bigger files.", minimum=0,
                 maximum=51, env="SR_CRF"),
    "ten_bit": Field("auto", "10-bit output", "auto keeps the source's bit depth (10-bit in → 10-bit out).",
                     choices=("auto", "on", "off"), env="SR_TEN_BIT"),
    "deinterlace": Field("auto", "Deinterlace", "auto deinterlaces (bwdif) sources flagged as interlaced.",
                         choices=("auto", "on", "off"), env="SR_DEINTERLACE"),
    "sar": Field("square", "Pixel aspect", "square resamples anamorphic video to square pixels; keep carries "
                 "the SAR.", choices=("square", "keep"), env="SR_SAR"),
    "frame_rate": Field("source", "Frame rate", "source keeps every frame at its source time (variable-rate "
                        "stays variable). constant or a rate gives constant-rate output: whole frames are "
                        "dropped or repeated to fill the grid, never retimed; constant uses the source's "
                        "nominal rate.", choices=FRAME_RATES, env="SR_FRAME_RATE", later=True),
    "ivtc": Field("auto", "Inverse telecine", "auto detects 3:2 pulldown in 29.97/30 fps sources (film or anime "
                  "on NTSC DVDs) and restores the 23.976 fps frames: a fifth fewer frames to upscale, no "
                  "deinterlacing blur. on requires it; off treats the source as it is flagged.",
                  choices=("auto", "on", "off"), env="SR_IVTC", later=True),
    "reuse_held": Field("auto", "Reuse held frames", "on upscales a frame that repeats the previous one (animation "
                        "drawn on twos and threes, still shots) once and reuses the result; cuts and fades are "
                        "never reused. auto does so on drawn content (the verdict the auto model uses), not on "
                        "live action. off runs the model on every frame.",
                        choices=("auto", "on", "off"), env="SR_REUSE_HELD", later=True,
                        same_job_as_default=("on",)),  # the default until auto; same output on drawn content
    "segment_seconds": Field(10, "Segment length (s)", "Target seconds per Slurm array task (cut at keyframes).",
                             minimum=1, maximum=600, env="SR_SEGMENT_SECONDS"),
    "preview_seconds": Field(0, "Preview only (s)", "Process only the first N seconds to check the look. 0 = all.",
                             minimum=0, env="SR_PREVIEW_SECONDS"),
    "priority": Field("normal", "Priority", "Slurm scheduling priority (nice) of this run's jobs.",
                      choices=tuple(PRIORITY_NICE)),
    "force": Field(False, "Force", "Redo a job even if the same source and settings were delivered."),
}
#: Fields that change the output, hence the job id.
RESULT_FIELDS = {name: f for name, f in FIELDS.items() if f.env}


def defaults() -> dict[str, Any]:
    """The form's default values."""
    return {name: f.default for name, f in FIELDS.items()}


def form_params() -> dict[str, Any]:
    """The SR DAG's trigger form: one ``Param`` per field, with its title and description."""
    from airflow.sdk import Param

    params: dict[str, Any] = {}
    for name, f in FIELDS.items():
        schema: dict[str, Any] = {"title": f.title, "description": f.description}
        if f.choices is not None:
            schema["enum"] = list(f.choices)
        else:
            schema["type"] = {bool: "boolean", int: "integer", str: "string"}[f.kind]
        if f.minimum is not None:
            schema["minimum"] = f.minimum
        if f.maximum is not None:
            schema["maximum"] = f.maximum
        params[name] = Param(f.default, **schema)
    return params
