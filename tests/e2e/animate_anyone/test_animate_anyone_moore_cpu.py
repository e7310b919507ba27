"""The AnimateAnyone DAG end to end with Moore-AnimateAnyone's real trainers (payload ``moore-cpu``).

Like the smoke test (real Airflow, the local Slurm over SSH, an MLflow server, moto), but every stage-1 and
stage-2 job runs the pinned, patched ``train_stage_1.py`` / ``train_stage_2.py`` through ``accelerate
launch`` on the CPU, with tiny random models (``reelforge_aa.moore_cpu``) and tiny generated clips listed
in our manifest format: a sweep of two runs → the best by Moore's ``train_loss`` → stage 2 → export.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path

import pytest
import requests

from reelforge.animate_anyone.sweep import exp_name, training_id
from tests.e2e.animate_anyone.test_animate_anyone_dag import _mlflow_runs  # the same MLflow search

pytestmark = [pytest.mark.stack, pytest.mark.slow]
DAG_ID = "animate_anyone_training"
INGEST = "reelforge-ingest"
RATES = [1.0e-5, 1.0e-3]
STEPS = 2  # two clips, batch size 1: one epoch, whose end writes the <module>-2.pth weights


def _steps(url: str, run_id: str) -> list[int]:
    history = requests.get(f"{url}/api/2.0/mlflow/metrics/get-history",
                           params={"run_id": run_id, "metric_key": "train_loss"}, timeout=10).json()
    return sorted(m["step"] for m in history.get("metrics", []))


def test_moore_trainers_sweep_best_run_stage2_export(airflow, aws, aa_cluster, aa_inbox):
    from tests.e2e.animate_anyone.cluster_env import CODE_DIR, make_clips

    mlflow_url = aa_cluster
    work_root = Path(os.environ["AIRFLOW_VAR_REELFORGE_CLUSTER_WORK_ROOT"])
    data = work_root / "animate-anyone-test-data" / uuid.uuid4().hex[:8]
    manifest = make_clips(data, 2)
    airflow.wait_for_dag(DAG_ID)
    airflow.unpause(DAG_ID)
    key = f"animate-anyone/manifests/moore-cpu-{uuid.uuid4().hex[:8]}.json"
    aws.s3.put_object(Bucket=INGEST, Key=key, Body=manifest.read_bytes())
    run_id = f"aa_moore_cpu__{uuid.uuid4().hex[:10]}"
    conf = {
        "manifest_uri": f"s3://{INGEST}/{key}",
        "payload": "moore-cpu",
        "nodes": 1,
        "stage2_nodes": 1,
        "sweep_grid": {"solver.learning_rate": RATES},
        "config_overrides": {"solver.max_train_steps": STEPS, "checkpointing_steps": STEPS,
                             "save_model_epoch_interval": 1},
        "selection_metric": "train_loss",
        "selection_mode": "min",
    }
    airflow.trigger(DAG_ID, conf, run_id=run_id)
    tid = training_id(DAG_ID, run_id)
    root = work_root / "animate-anyone" / tid
    state = airflow.wait_for_run(DAG_ID, run_id, timeout=900)
    assert state == "success", airflow.task_states(DAG_ID, run_id)

    # 1. Every sweep run ran Moore's stage-1 trainer to its step count: checkpoint (completed by the patch)
    #    and the three modules' weights, in its own directory.
    run_dirs = [root / "stage1" / exp_name(i, {"solver.learning_rate": lr}) for i, lr in enumerate(RATES)]
    for d, lr in zip(run_dirs, RATES, strict=True):
        log = "\n".join(p.read_text() for p in (d / "logs").glob("*.out"))
        assert f"running {CODE_DIR / 'train_stage_1.py'}" in log and "Device: cpu" in log, log[-3000:]
        assert (d / f"checkpoint-{STEPS}" / "reelforge.complete").is_file()
        for module in ("denoising_unet", "reference_unet", "pose_guider"):
            assert (d / f"{module}-{STEPS}.pth").is_file(), sorted(p.name for p in d.iterdir())
        cfg = __import__("yaml").safe_load((d / ".reelforge" / "config.yaml").read_text())
        assert cfg["solver"]["learning_rate"] == lr and cfg["weight_dtype"] == "fp32"
        assert cfg["base_model_path"].startswith(str(root / "tiny-models"))

    # 2. Moore's accelerate tracker logged train_loss into each sweep run's MLflow run; the lowest won.
    runs = _mlflow_runs(mlflow_url, tid)
    stage1 = [r for r in runs if r["tags"].get("reelforge.stage") == "stage1"]
    assert len(stage1) == len(RATES) and all(r["status"] == "FINISHED" for r in stage1), runs
    for r in stage1:
        assert _steps(mlflow_url, r["run_id"]) == list(range(1, STEPS + 1))
    best = min(stage1, key=lambda r: r["metrics"]["train_loss"])
    (stage2,) = [r for r in runs if r["tags"].get("reelforge.stage") == "stage2"]
    assert stage2["tags"]["reelforge.stage1_run_id"] == best["run_id"]
    assert _steps(mlflow_url, stage2["run_id"]) == list(range(1, STEPS + 1))

    # 3. Stage 2 ran Moore's stage-2 trainer from the best run's weights.
    stage2_dir = root / "stage2" / "main"
    log = "\n".join(p.read_text() for p in (stage2_dir / "logs").glob("*.out"))
    assert f"running {CODE_DIR / 'train_stage_2.py'}" in log and "Load motion module params" in log, log[-3000:]
    cfg = __import__("yaml").safe_load((stage2_dir / ".reelforge" / "config.yaml").read_text())
    assert cfg["stage1_ckpt_dir"] == str(run_dirs[int(best["tags"]["reelforge.sweep_index"])])
    assert cfg["stage1_ckpt_step"] == STEPS
    assert (stage2_dir / f"motion_module-{STEPS}.pth").is_file()

    # 4. Exported to S3 (manifest last) and announced.
    prefix = f"animate-anyone/{tid}/"
    listed = aws.s3.list_objects_v2(Bucket="reelforge-output", Prefix=prefix).get("Contents", [])
    keys = {o["Key"][len(prefix):] for o in listed}
    assert {"manifest.json", f"stage1/denoising_unet-{STEPS}.pth", f"stage1/reference_unet-{STEPS}.pth",
            f"stage1/pose_guider-{STEPS}.pth", f"stage2/motion_module-{STEPS}.pth"} <= keys, keys
    exported = json.loads(aws.s3.get_object(Bucket="reelforge-output", Key=prefix + "manifest.json")["Body"].read())
    assert exported["stage1"]["mlflow_run_id"] == best["run_id"]
    done = [m for m in aa_inbox() if m.get("event") == "animate_anyone_trained"]
    assert done and done[0]["training_id"] == tid

    shutil.rmtree(root, ignore_errors=True)  # ~1.3 GB of checkpoints
    shutil.rmtree(data, ignore_errors=True)
