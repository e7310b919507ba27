"""The AnimateAnyone DAG end to end on the local stack, with the smoke payload (real PyTorch training).

Real Airflow (scheduler + triggerer), real Slurm over SSH (the ``hyperpod_ssh`` connection points at
the local cluster), a real MLflow tracking server, moto for S3/SNS. A sweep of 3 stage-1 runs, one of
which is cancelled mid-run (as a node failure would end it) and resumed by the task's retry; then the
best run by ``val_loss`` feeds stage 2 on 2 nodes (DDP over gloo), the export lands in S3 and SNS.
"""

from __future__ import annotations

import json
import os
import re
import time
import uuid
from pathlib import Path

import pytest
import requests

from reelforge.animate_anyone.sweep import exp_name, training_id
from reelforge.operators.slurm import slurm_job_name

pytestmark = [pytest.mark.stack, pytest.mark.slow]
DAG_ID = "animate_anyone_training"
INGEST = "reelforge-ingest"
GRID = {"solver.learning_rate": [0.003, 0.03, 0.3]}
KILLED = 1  # sweep index whose job is cancelled mid-run
MAX_STEPS = 24
CKPT_EVERY = 4


def _mlflow_runs(url: str, tid: str) -> list[dict]:
    exp = requests.get(f"{url}/api/2.0/mlflow/experiments/get-by-name",
                       params={"experiment_name": "reelforge-animate-anyone"}, timeout=10).json()["experiment"]
    body = {"experiment_ids": [exp["experiment_id"]], "filter": f"tags.`reelforge.training_id` = '{tid}'",
            "max_results": 100}
    runs = requests.post(f"{url}/api/2.0/mlflow/runs/search", json=body, timeout=10).json().get("runs", [])
    out = []
    for r in runs:
        out.append({
            "run_id": r["info"]["run_id"],
            "status": r["info"]["status"],
            "tags": {t["key"]: t["value"] for t in r["data"].get("tags", [])},
            "metrics": {m["key"]: m["value"] for m in r["data"].get("metrics", [])},
        })
    return out


def _history(url: str, run_id: str, key: str) -> list[dict]:
    return requests.get(f"{url}/api/2.0/mlflow/metrics/get-history", params={"run_id": run_id, "metric_key": key},
                        timeout=10).json().get("metrics", [])


def _wait_for(predicate, timeout: float, what: str, interval: float = 0.2):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out waiting for {what}")


def test_sweep_kill_resume_best_run_stage2_export(airflow, aws, aa_cluster, aa_inbox):
    from reelforge.hooks.slurm import SlurmHook

    mlflow_url = aa_cluster
    airflow.wait_for_dag(DAG_ID)
    airflow.unpause(DAG_ID)

    key = f"animate-anyone/manifests/e2e-{uuid.uuid4().hex[:8]}.json"
    entries = [{"video_path": f"/fsx/data/dance/{i:03d}.mp4", "kps_path": f"/fsx/data/dance/{i:03d}_kps.mp4"}
               for i in range(2)]
    aws.s3.put_object(Bucket=INGEST, Key=key, Body=json.dumps(entries).encode())
    run_id = f"aa_e2e__{uuid.uuid4().hex[:10]}"
    conf = {
        "manifest_uri": f"s3://{INGEST}/{key}",
        "payload": "smoke",
        "nodes": 1,
        "stage2_nodes": 2,
        "sweep_grid": GRID,
        "config_overrides": {"solver.max_train_steps": MAX_STEPS, "checkpointing_steps": CKPT_EVERY,
                             "save_model_epoch_interval": 1, "data.train_bs": 4, "smoke.samples_per_entry": 16},
        "stage1_overrides": {"smoke.step_seconds": 0.4},
        "stage2_overrides": {"solver.max_train_steps": 8},
        "selection_metric": "val_loss",
        "selection_mode": "min",
    }
    airflow.trigger(DAG_ID, conf, run_id=run_id)

    tid = training_id(DAG_ID, run_id)
    root = Path(os.environ["AIRFLOW_VAR_REELFORGE_CLUSTER_WORK_ROOT"]) / "animate-anyone" / tid
    points = [{"solver.learning_rate": lr} for lr in GRID["solver.learning_rate"]]
    run_dirs = [root / "stage1" / exp_name(i, p) for i, p in enumerate(points)]

    # Cancel sweep run 1 once it has written a checkpoint past the first one, while it still runs.
    victim = run_dirs[KILLED]
    _wait_for(lambda: (victim / f"checkpoint-{2 * CKPT_EVERY}").is_dir(), 300, "a stage-1 checkpoint to cancel after")
    name = slurm_job_name(DAG_ID, run_id, "stage1", KILLED, f"aa-s1-{KILLED:02d}")
    with SlurmHook("slurm_ssh") as hook:
        jobs = hook.find_jobs(name)
        active = [j for j, tasks in jobs.items() if any(s in ("RUNNING", "PENDING") for s in tasks.values())]
        assert active, f"sweep run {KILLED} finished before it could be cancelled: {jobs}"
        hook.cancel(active[0])
    killed_at = max(int(p.name.split("-")[1]) for p in victim.glob("checkpoint-*"))
    assert killed_at < MAX_STEPS

    state = airflow.wait_for_run(DAG_ID, run_id, timeout=600)
    states = airflow.task_states(DAG_ID, run_id)
    assert state == "success", states

    # 1. Every sweep run has its own directory and config; nothing is shared.
    assert len({d.resolve() for d in run_dirs}) == 3
    for d, point in zip(run_dirs, points, strict=True):
        cfg = __import__("yaml").safe_load((d / ".reelforge" / "config.yaml").read_text())
        assert cfg["solver"]["learning_rate"] == point["solver.learning_rate"]
        assert Path(cfg["output_dir"]) / cfg["exp_name"] == d
        assert (d / f"denoising_unet-{MAX_STEPS}.pth").is_file(), sorted(p.name for p in d.iterdir())

    # 2. The cancelled run was retried and resumed from its newest checkpoint; the step count went on.
    ti = airflow.api("GET", f"/dags/{DAG_ID}/dagRuns/{run_id}/taskInstances/stage1/{KILLED}")
    assert ti["try_number"] >= 2, ti
    logs = sorted((victim / "logs").glob("*.out"), key=lambda p: p.stat().st_mtime)
    assert len(logs) >= 2, logs
    resumed = re.search(r"Resuming from checkpoint checkpoint-(\d+)", logs[-1].read_text())
    assert resumed, logs[-1].read_text()[-2000:]
    resumed_step = int(resumed.group(1))
    assert killed_at <= resumed_step < MAX_STEPS and resumed_step % CKPT_EVERY == 0
    assert f"steps {resumed_step}->{MAX_STEPS}" in logs[-1].read_text()
    assert "Resuming" not in logs[0].read_text()

    runs = _mlflow_runs(mlflow_url, tid)
    stage1 = {r["tags"]["reelforge.sweep_index"]: r for r in runs if r["tags"].get("reelforge.stage") == "stage1"}
    assert sorted(stage1) == ["0", "1", "2"], runs  # one MLflow run per sweep point, also for the retried one
    assert len({r["tags"]["reelforge.run_key"] for r in stage1.values()}) == 3
    killed_run = stage1[str(KILLED)]
    assert killed_run["tags"]["reelforge.resumed"] == "true"
    assert killed_run["tags"]["reelforge.resumed_from_step"] == str(resumed_step)
    assert killed_run["tags"]["reelforge.final_step"] == str(MAX_STEPS)
    steps = {m["step"] for m in _history(mlflow_url, killed_run["run_id"], "train_loss")}
    assert steps == set(range(1, MAX_STEPS + 1))
    assert all(r["status"] == "FINISHED" for r in stage1.values())

    # 3. The best run by val_loss was chosen, and stage 2 started from its weights.
    best = min(stage1.values(), key=lambda r: r["metrics"]["val_loss"])
    (stage2,) = [r for r in runs if r["tags"].get("reelforge.stage") == "stage2"]
    assert stage2["tags"]["reelforge.stage1_run_id"] == best["run_id"]
    best_dir = run_dirs[int(best["tags"]["reelforge.sweep_index"])]
    stage2_log = "\n".join(p.read_text() for p in (root / "stage2" / "main" / "logs").glob("*.out"))
    assert f"stage 2 initialised from {best_dir} step {MAX_STEPS}" in stage2_log
    assert "rank 1/2 stage2" in stage2_log  # two nodes, one process each
    assert (root / "stage2" / "main" / "motion_module-8.pth").is_file()

    # 4. Exported to S3, manifest last; announced on SNS.
    prefix = f"animate-anyone/{tid}/"
    listed = aws.s3.list_objects_v2(Bucket="reelforge-output", Prefix=prefix).get("Contents", [])
    keys = {o["Key"][len(prefix):] for o in listed}
    assert {"manifest.json", f"stage1/denoising_unet-{MAX_STEPS}.pth", f"stage1/reference_unet-{MAX_STEPS}.pth",
            f"stage1/pose_guider-{MAX_STEPS}.pth", "stage2/motion_module-8.pth", "stage1/config.yaml",
            "stage2/config.yaml"} <= keys, keys
    manifest = json.loads(aws.s3.get_object(Bucket="reelforge-output", Key=prefix + "manifest.json")["Body"].read())
    assert manifest["stage1"]["mlflow_run_id"] == best["run_id"]
    done = [m for m in aa_inbox() if m.get("event") == "animate_anyone_trained"]
    assert done and done[0]["training_id"] == tid and done[0]["stage1_best"]["run_id"] == best["run_id"]
