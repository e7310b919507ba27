"""Issue 10, node failure: one Slurm node dies in the middle of an SR array; the run still delivers
every frame (Slurm requeues the task, or the operator's retry resubmits only that index)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from reelforge.operators.slurm import slurm_job_name
from reelforge.sr.job import build_job
from reelforge.storage import S3Object
from tests.e2e.conftest import ROOT
from tests.e2e.test_sr_dag import DAG_ID, FORM_DEFAULTS, INGEST, local_settings, sr_dag  # noqa: F401
from tests.media_utils import make_clip, probe
from tests.reliability.e2e_helpers import delete_versions

pytestmark = [pytest.mark.stack, pytest.mark.slow]


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    return tree


def _job_tree(job_id: str) -> list[int]:
    """The job's slurmstepd processes and everything under them."""
    steps = subprocess.run(["pgrep", "-f", rf"^slurmstepd: \[{job_id}\."], capture_output=True, text=True).stdout
    tree, todo, found = _children(), [int(p) for p in steps.split()], []
    while todo:
        pid = todo.pop()
        found.append(pid)
        todo += tree.get(pid, [])
    return found


def _signal(pids: list[int], sig: signal.Signals) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            pass


def freeze_mid_segment(array: str, segments: Path, deadline: float) -> tuple[str, int, str, str, list[int]]:
    """Stop (SIGSTOP) a running array task that is encoding its segment and has not yet published it.

    Freezing first makes the test independent of timing: a task seen mid-segment may finish before
    the kill lands on a fast machine; frozen, it cannot, and one that finished in between is thawed
    and another is looked for."""
    tried: set[str] = set()
    while time.monotonic() < deadline:
        running = subprocess.run(["squeue", "-h", "-t", "R", "-n", array, "-o", "%A %K %N %i"],
                                 capture_output=True, text=True, check=True).stdout.split("\n")
        for line in filter(None, running):
            jid, index, node, task = line.split()
            final = segments / f"{int(index):05d}.mkv"
            if task in tried or not list(segments.glob(f"{final.name}.*.tmp")):  # encoding not started
                continue
            frozen = _job_tree(jid)
            _signal(frozen, signal.SIGSTOP)
            if not final.exists() and list(segments.glob(f"{final.name}.*.tmp")):
                return jid, int(index), node, task, frozen
            _signal(frozen, signal.SIGCONT)  # it published in between: leave it be
            tried.add(task)
        time.sleep(0.2)
    raise AssertionError(f"no array task was caught mid-segment (finished before a kill: {sorted(tried)})")


def kill_node(node: str, job_id: str) -> list[int]:
    """What a node crash does: slurmd and the job's slurmstepd with everything under it die at once.
    Then mark the node DOWN, as slurmctld would after SlurmdTimeout (300 s) without heartbeats."""
    victims = [int(Path(f"/run/slurmd-{node}.pid").read_text()), *_job_tree(job_id)]
    _signal(victims, signal.SIGKILL)
    subprocess.run(["scontrol", "update", f"nodename={node}", "state=down", "reason=reliability test: node killed"],
                   check=True)
    return victims


def restore_nodes() -> None:
    subprocess.run(["bash", str(ROOT / "scripts" / "local-stack"), "up"], check=True, capture_output=True, timeout=300)


def test_a_node_dies_mid_array_and_every_frame_is_delivered(sr_dag, aws, shared_data, tmp_path):  # noqa: F811
    # two 2 s segments (48 frames each, 160x90 so one takes seconds to upscale); the victim is frozen
    # mid-segment before it is killed, so the kill cannot arrive after it published
    clip = make_clip(shared_data / "video" / "caminandes_clip_02.mp4", tmp_path / "clip.mp4", width=160, height=90,
                     tone=330, seconds=4)
    key = f"manual/reliability/node-{uuid.uuid4().hex[:6]}/clip.mp4"
    put = aws.s3.put_object(Bucket=INGEST, Key=key, Body=clip.read_bytes())
    params = {**FORM_DEFAULTS, "segment_seconds": 2, "model": "anime"}
    job = build_job(S3Object(INGEST, key, put["VersionId"], put["ETag"].strip('"')), params, local_settings())
    segments = Path(job["workdir"]) / "segments"
    try:
        run_id = sr_dag.trigger(DAG_ID, {**params, "source_uri": f"s3://{INGEST}/{key}"})
        array = slurm_job_name(DAG_ID, run_id, "upscale_segments")
        jid, index, node, task, frozen = freeze_mid_segment(array, segments, time.monotonic() + 240)
        kill_node(node, jid)
        _signal(frozen, signal.SIGKILL)  # the frozen tree, should a process have left the job's tree meanwhile
        assert not (segments / f"{index:05d}.mkv").exists(), "the killed task published its segment"
        restore_nodes()
        # Slurm requeues the task but holds it for ~121 s (BeginTime); skip that wait, as we skipped
        # SlurmdTimeout. (Had Slurm failed it instead, the operator's retry resubmits only this index.)
        end = time.monotonic() + 30
        while time.monotonic() < end:
            info = subprocess.run(["scontrol", "show", "job", task], capture_output=True, text=True).stdout
            if "Reason=BeginTime" in info:
                assert "Restarts=1" in info, info
                subprocess.run(["scontrol", "update", f"jobid={task}", "starttime=now"], check=True)
                break
            if "JobState=PENDING" not in info and "JobState=REQUEUED" not in info:
                break
            time.sleep(0.5)

        state = sr_dag.wait_for_run(DAG_ID, run_id, timeout=420)
        assert state == "success", sr_dag.task_states(DAG_ID, run_id)
    finally:
        restore_nodes()
        delete_versions(aws.s3, key)

    listed = aws.s3.list_objects_v2(Bucket="reelforge-output", Prefix=job["output_prefix"])["Contents"]
    video = next(o["Key"] for o in listed if o["Key"].endswith(".mp4"))
    out = tmp_path / "out.mp4"
    aws.s3.download_file("reelforge-output", video, str(out))
    src, dst = probe(clip)["streams"], probe(out)["streams"]
    frames = [s["nb_read_frames"] for s in src if s["codec_type"] == "video"]
    assert [s["nb_read_frames"] for s in dst if s["codec_type"] == "video"] == frames
    assert [s["codec_type"] for s in dst].count("audio") == 1
    assert (segments / f"{index:05d}.mkv").is_file() and not list(segments.glob("*.tmp"))
    down = subprocess.run(["sinfo", "-h", "-N", "-t", "down,drain,fail", "-o", "%N"], capture_output=True, text=True)
    assert down.stdout.strip() == "", f"nodes left down: {down.stdout}"
