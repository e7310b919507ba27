"""Issue 10, bad-input corpus: each input gets a correct plan or an early, clear error.

Level A goes through what the DAG does before and in ``plan_segments`` (prepare's HEAD checks, its
ffprobe preflight over a presigned URL and the job spec, then ``reelforge-sr plan`` with the arguments
01-plan.sbatch passes), in process. Every unusable input is refused by prepare: no Slurm job at all.
Level B uploads the unprocessable inputs under the ingest prefix and lets the real DAG fail them.
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path

import pytest

from reelforge.operators.slurm import slurm_job_name
from reelforge.sr.job import build_job, worker_env
from reelforge.sr.preflight import preflight
from reelforge.storage import InvalidSourceError, S3Object
from reelforge.uploads import head_source
from tests.e2e.test_sr_dag import DAG_ID, FORM_DEFAULTS, INGEST, local_settings, sr_dag  # noqa: F401
from tests.reliability.e2e_helpers import (
    claiming_run,
    delete_versions,
    runs_of_key,
    slurm_job_names,
    task_log,
    wait_for_runs,
)

pytestmark = [pytest.mark.stack]

#: input → (stage that refuses it, message) for the unprocessable ones; None = must plan correctly.
REFUSED: dict[str, tuple[str, str] | None] = {
    "zero_byte": ("prepare", r"is empty \(0 bytes\)"),
    "non_video": ("prepare", r"does not have a video file extension"),
    "random_bytes": ("prepare", r"not a media file or corrupt"),
    "truncated_no_moov": ("prepare", r"truncated: no 'moov' box \(the MP4 index"),
    "audio_only": ("prepare", r"no video stream \(streams: audio\)"),
    "declared_16k": ("prepare", r"15360x8640, beyond the limit"),
    "long_duration_few_frames": ("prepare", r"inconsistent with 24 frames"),
    "one_by_one": None,
    "vfr": None,
    "rotated": None,
    "odd_dimensions": None,
    "ten_bit": None,
    "interlaced": None,
}
#: processable input → (frames, output size at x4 with square pixels, extra plan facts)
PLANNED = {
    "one_by_one": (12, (4, 4), {}),
    "vfr": (48, (256, 144), {"timing.vfr": True}),
    "rotated": (12, (144, 256), {"probe.video.rotation": 90}),
    "odd_dimensions": (12, (252, 140), {}),
    "ten_bit": (24, (256, 144), {"decode.ten_bit": True}),
    "interlaced": (24, (256, 192), {"decode.deinterlace": True}),
}


def _dig(d: dict, dotted: str):
    for part in dotted.split("."):
        d = d[part]
    return d


def plan_like_the_dag(aws, path: Path, workdir: Path, key_prefix: str) -> dict:
    """prepare's checks + job spec, then `reelforge-sr plan` as 01-plan.sbatch runs it; returns plan.json."""
    from reelforge_sr.cli import main

    key = f"{key_prefix}{path.name}"
    aws.s3.put_object(Bucket=INGEST, Key=key, Body=path.read_bytes())
    source = head_source(aws.s3, S3Object(INGEST, key), 1 << 40)
    job = build_job(source, FORM_DEFAULTS, local_settings())
    preflight(aws.s3, source)
    env = worker_env(job, local_settings())
    workdir.mkdir()
    argv = ["-q", "plan", "--source", str(path), "--workdir", str(workdir)]
    for flag, var in [("--model", "SR_MODEL"), ("--scale", "SR_SCALE"), ("--container", "SR_CONTAINER"),
                      ("--codec", "SR_CODEC"), ("--crf", "SR_CRF"), ("--ten-bit", "SR_TEN_BIT"),
                      ("--deinterlace", "SR_DEINTERLACE"), ("--sar", "SR_SAR"),
                      ("--segment-seconds", "SR_SEGMENT_SECONDS"), ("--preview-seconds", "SR_PREVIEW_SECONDS")]:
        argv += [flag, env[var]]
    if main(argv) != 0:
        raise RuntimeError((workdir / "failure").read_text())
    return json.loads((workdir / "plan.json").read_text())


@pytest.fixture(scope="module")
def key_prefix(aws):
    """A prefix outside the notified one (no runs start); every version under it is removed after."""
    prefix = f"manual/reliability/{uuid.uuid4().hex[:8]}/"
    yield prefix
    delete_versions(aws.s3, prefix)


@pytest.mark.parametrize("name", sorted(REFUSED))
def test_level_a_each_input_plans_or_fails_clearly(name, bad_inputs, aws, key_prefix, tmp_path):
    expected = REFUSED[name]
    if expected is None:
        plan = plan_like_the_dag(aws, bad_inputs[name], tmp_path / "w", key_prefix)
        frames, size, facts = PLANNED[name]
        assert plan["total_frames"] == plan["source_frames"] == frames
        assert (plan["geometry"]["out_width"], plan["geometry"]["out_height"]) == size
        assert sum(s["frames"] for s in plan["segments"]) == frames
        for dotted, value in facts.items():
            assert _dig(plan, dotted) == value, (dotted, plan)
        return
    stage, message = expected
    with pytest.raises((InvalidSourceError, RuntimeError)) as err:
        plan_like_the_dag(aws, bad_inputs[name], tmp_path / "w", key_prefix)
    assert re.search(message, str(err.value)), err.value
    # prepare refuses before any worker step runs; the worker's errors name the file, no traceback
    assert isinstance(err.value, InvalidSourceError) is (stage == "prepare")
    assert "Traceback" not in str(err.value)


def test_level_a_smallest_and_odd_frames_really_upscale(bad_inputs, pipeline, tmp_path):
    """Planning is not enough for the geometry edge cases: the model, encoder and muxer must cope too."""
    for name in ("one_by_one", "odd_dimensions", "rotated"):
        report = pipeline(bad_inputs[name], tmp_path / name)
        frames, size, _ = PLANNED[name]
        assert report["frames"] == frames, report
        out = report["output"]["video"]
        assert (out["width"], out["height"]) == size


# ------------------------------------------------------------------------------------- Level B

UNPROCESSABLE = [n for n, e in REFUSED.items() if e is not None]


@pytest.mark.slow
def test_level_b_unprocessable_uploads_fail_early_with_reason_and_sns(sr_dag, aws, sns_inbox, bad_inputs):  # noqa: F811
    prefix = f"sr/incoming/reliability/bad-{uuid.uuid4().hex[:6]}/"
    known = {r["dag_run_id"] for r in sr_dag.runs(DAG_ID)}
    keys = {f"{prefix}{bad_inputs[name].name}": name for name in UNPROCESSABLE}
    for key, name in keys.items():
        aws.s3.put_object(Bucket=INGEST, Key=key, Body=bad_inputs[name].read_bytes())

    found = wait_for_runs(sr_dag, known, lambda f: all(runs_of_key(f, k) for k in keys))
    # a duplicate delivery's run fails at prepare too, or skips at the claim of the run that got through
    runs = {name: (claiming_run(sr_dag, key, known) if REFUSED[name][0] == "plan" else runs_of_key(found, key)[0])
            for key, name in keys.items()}

    for name, run_id in runs.items():
        assert sr_dag.wait_for_run(DAG_ID, run_id, timeout=150) == "failed", (name, sr_dag.task_states(DAG_ID, run_id))
    names = slurm_job_names()
    failures = {m["run_id"]: m for m in sns_inbox() if m.get("event") == "sr_failed"}
    for name, run_id in runs.items():
        stage, message = REFUSED[name]
        states = sr_dag.task_states(DAG_ID, run_id)
        failed_task = "prepare" if stage == "prepare" else "plan_segments"
        assert states[failed_task] == "failed", (name, states)
        assert states["upscale_segments"] == "upstream_failed", (name, states)
        assert re.search(message, task_log(run_id, failed_task)), (name, failed_task)
        assert run_id in failures, (name, sorted(failures))
        assert failures[run_id]["task_id"] == failed_task
        assert re.search(message, failures[run_id]["reason"]), (name, failures[run_id]["reason"])
        assert failures[run_id]["try_number"] == 1, "a bad input must not be retried"
        # no cluster time: prepare refuses every unusable upload before the first Slurm job
        assert slurm_job_name(DAG_ID, run_id, "upscale_segments") not in names, name
        plan_jobs = names.count(slurm_job_name(DAG_ID, run_id, "plan_segments"))
        assert plan_jobs == (1 if stage == "plan" else 0), (name, plan_jobs)
