"""The SR DAG end to end on the local stack: real Slurm over SSH, moto S3/SNS/SQS, real weights.

Each test uploads to the ingest prefix and lets the S3 → SQS notification start the run.
"""

from __future__ import annotations

import os
import shutil
import time
import uuid
from pathlib import Path

import pytest

from reelforge.sr.form import defaults
from reelforge.sr.job import build_job
from reelforge.sr.settings import SRSettings
from reelforge.storage import S3Object
from tests.media_utils import make_clip, probe

pytestmark = [pytest.mark.stack, pytest.mark.slow]
DAG_ID = "video_super_resolution"
SEGMENT_NAME = "segments/{index:05d}.mkv"
INGEST = "reelforge-ingest"
FORM_DEFAULTS = defaults()  # what an upload's run gets from the DAG's form


def local_settings() -> SRSettings:
    env = os.environ
    return SRSettings(
        ingest_bucket=INGEST, ingest_prefix="sr/incoming/", output_bucket="reelforge-output", output_prefix="sr/",
        topic_arn="", cluster_work_root=env["AIRFLOW_VAR_REELFORGE_CLUSTER_WORK_ROOT"], worker_venv="",
        model_dir="", container_image="", cpu_partition="cpu", gpu_partition="gpu", gpu_gres="",
        array_throttle=8, max_source_bytes=1 << 40,
    )


@pytest.fixture(scope="module")
def sr_dag(airflow):
    airflow.wait_for_dag(DAG_ID)
    airflow.unpause(DAG_ID)
    time.sleep(3)  # the triggerer picks up the asset watcher
    return airflow


def upload_and_wait_for_run(sr_dag, aws, clip: Path, key: str, *, claims: bool = True) -> tuple[str, dict]:
    """Upload ``clip`` to ``key``; the run that claimed it, or (``claims=False``) the first run of it."""
    from tests.reliability.e2e_helpers import runs_of_key, wait_for_runs

    known = {r["dag_run_id"] for r in sr_dag.runs(DAG_ID)}
    put = aws.s3.put_object(Bucket=INGEST, Key=key, Body=clip.read_bytes())
    if claims:
        return claimed(sr_dag, key, known), put
    return runs_of_key(wait_for_runs(sr_dag, known, lambda f: bool(runs_of_key(f, key)), timeout=240), key)[0], put


def claimed(sr_dag, key: str, known: set[str]) -> str:
    """The notification's run that claimed ``key`` (a duplicate delivery's run, if any, skips at the claim)."""
    from tests.reliability.e2e_helpers import claiming_run

    return claiming_run(sr_dag, key, known, timeout=240)


def job_for(key: str, put: dict) -> dict:
    source = S3Object(INGEST, key, version_id=put.get("VersionId"), etag=put["ETag"].strip('"'))
    return build_job(source, FORM_DEFAULTS, local_settings())


def test_upload_is_upscaled_delivered_and_announced(sr_dag, aws, sns_inbox, shared_data, tmp_path):
    clip = make_clip(shared_data / "video" / "moviepy_doc_example2_bbb.mp4", tmp_path / "clip.mp4")
    # a key with spaces, quotes and shell metacharacters travels through S3 events, SSH and Slurm
    key = f"sr/incoming/e2e/{uuid.uuid4().hex[:6]} bunny's; $(touch pwned) `id`.mp4"
    run_id, put = upload_and_wait_for_run(sr_dag, aws, clip, key)
    assert sr_dag.wait_for_run(DAG_ID, run_id, timeout=600) == "success", sr_dag.task_states(DAG_ID, run_id)

    job = job_for(key, put)
    listed = aws.s3.list_objects_v2(Bucket="reelforge-output", Prefix=job["output_prefix"])["Contents"]
    keys = {o["Key"][len(job["output_prefix"]):] for o in listed}
    assert "report.json" in keys and any(k.startswith("previews/") for k in keys), keys
    video_key = next(o["Key"] for o in listed if o["Key"].endswith(".mp4"))
    out = tmp_path / "out.mp4"
    aws.s3.download_file("reelforge-output", video_key, str(out))

    src, dst = probe(clip), probe(out)
    sv = next(s for s in src["streams"] if s["codec_type"] == "video")
    dv = next(s for s in dst["streams"] if s["codec_type"] == "video")
    assert (int(dv["width"]), int(dv["height"])) == (4 * int(sv["width"]), 4 * int(sv["height"]))
    assert dv["nb_read_frames"] == sv["nb_read_frames"]
    audio = [s for s in dst["streams"] if s["codec_type"] == "audio"]
    assert len(audio) == 1
    assert abs(float(audio[0]["duration"]) - float(dv["duration"])) <= 1 / 24 + 1e-3
    assert not Path("/home/reelforge/pwned").exists() and not Path("pwned").exists()

    messages = sns_inbox()
    success = [m for m in messages if m.get("event") == "sr_succeeded"]
    assert success and success[0]["job_id"] == job["job_id"] and success[0]["output"].endswith(".mp4")
    # The e2e Airflow sets a 5 s deadline: this run (longer than that) is reported late. The scheduler
    # notices a missed deadline on its own loop, so the alert may come after a run that ends soon after.
    deadline = time.monotonic() + 60
    while not any(m.get("event") == "deadline_missed" and m.get("run_id") == run_id for m in messages):
        assert time.monotonic() < deadline, messages
        time.sleep(2)
        messages += sns_inbox()

    # The same bytes uploaded again: a run starts from the notification but does no work.
    run2, _ = upload_and_wait_for_run(sr_dag, aws, clip, key, claims=False)
    assert sr_dag.wait_for_run(DAG_ID, run2, timeout=120) == "success"
    states = sr_dag.task_states(DAG_ID, run2)
    assert states["prepare"] == "skipped" and states["plan_segments"] == "skipped", states


def test_an_upload_carries_its_settings_and_the_video_keeps_its_name(sr_dag, aws, sns_inbox, shared_data,
                                                                     tmp_path):
    """Folder profile x2/ (scale 2) and metadata (constant 30 fps) on a UTF-8 name, with no form at all."""
    clip = make_clip(shared_data / "video" / "moviepy_doc_example2_bbb.mp4", tmp_path / "clip.mp4",
                     width=32, height=18, seconds=0.5, tone=500)  # 12 frames at 24 fps
    name = f"Épisode {uuid.uuid4().hex[:6]} 映画"
    key = f"sr/incoming/x2/{name}.mp4"
    known = {r["dag_run_id"] for r in sr_dag.runs(DAG_ID)}
    put = aws.s3.put_object(Bucket=INGEST, Key=key, Body=clip.read_bytes(), Metadata={"reelforge-frame-rate": "30"})
    run_id = claimed(sr_dag, key, known)
    assert sr_dag.wait_for_run(DAG_ID, run_id, timeout=400) == "success", sr_dag.task_states(DAG_ID, run_id)

    source = S3Object(INGEST, key, version_id=put.get("VersionId"), etag=put["ETag"].strip('"'))
    job = build_job(source, {**FORM_DEFAULTS, "scale": 2, "frame_rate": "30"}, local_settings())
    assert job["output_prefix"] == f"sr/{name}/{job['job_id']}/"
    out = tmp_path / "out.mp4"
    aws.s3.download_file("reelforge-output", f"{job['output_prefix']}{name}.x2.mp4", str(out))
    (video,) = [s for s in probe(out)["streams"] if s["codec_type"] == "video"]
    assert (int(video["width"]), int(video["height"]), video["r_frame_rate"]) == (64, 36, "30/1")
    assert int(video["nb_read_frames"]) == 15  # 0.5 s at 30 fps: 3 of the 12 source frames shown twice
    (success,) = [m for m in sns_inbox() if m.get("event") == "sr_succeeded" and m.get("job_id") == job["job_id"]]
    assert success["output"].endswith(f"/{name}.x2.mp4"), success


def test_failed_segment_fails_the_run_then_a_retry_reuses_finished_segments(sr_dag, aws, sns_inbox,
                                                                           shared_data, tmp_path):
    clip = make_clip(shared_data / "video" / "moviepy_doc_example2_bbb.mp4", tmp_path / "clip.mp4", tone=660)
    # Outside the notified prefix: this run is started from the form, with 1 s segments.
    key = f"manual/e2e/fail-{uuid.uuid4().hex[:6]}.mp4"
    put = aws.s3.put_object(Bucket=INGEST, Key=key, Body=clip.read_bytes())
    params = {**FORM_DEFAULTS, "segment_seconds": 1}
    job = build_job(S3Object(INGEST, key, put.get("VersionId"), put["ETag"].strip('"')), params, local_settings())

    # Block segment 1's final name with a root-owned directory holding a file: the worker (user
    # reelforge) can neither rename onto it nor remove it — a real failure, no test hook.
    workdir = Path(job["workdir"])
    blocker = workdir / SEGMENT_NAME.format(index=1)
    blocker.mkdir(parents=True)
    (blocker / "keep").write_text("blocks the final name")
    for path in (workdir, blocker.parent):
        shutil.chown(path, "reelforge", "reelforge")

    run_id = sr_dag.trigger(DAG_ID, {**params, "source_uri": f"s3://{INGEST}/{key}"})
    assert sr_dag.wait_for_run(DAG_ID, run_id, timeout=600) == "failed"
    assert sr_dag.task_states(DAG_ID, run_id)["upscale_segments"] == "failed"
    failures = [m for m in sns_inbox() if m.get("event") == "sr_failed"]
    assert any(f["task_id"] == "upscale_segments" and f["run_id"] == run_id for f in failures), failures

    finished = workdir / SEGMENT_NAME.format(index=0)
    mtime = finished.stat().st_mtime_ns
    shutil.rmtree(blocker)
    sr_dag.clear_failed(DAG_ID, run_id)
    assert sr_dag.wait_for_run(DAG_ID, run_id, timeout=600) == "success", sr_dag.task_states(DAG_ID, run_id)
    assert finished.stat().st_mtime_ns == mtime, "a finished segment was encoded again"
