"""Export the chosen weights to S3: the best stage-1 run's modules, stage 2's motion module, configs.

Runs on the cluster (the checkpoints are on shared storage and can be large; the node's instance
role grants the upload). Objects go under ``<dest>/stage1/`` and ``<dest>/stage2/``; ``manifest.json``
(sizes, SHA-256, MLflow runs) is uploaded last, so its presence means the export is complete.
Re-running overwrites the same keys (idempotent).
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from reelforge_aa import checkpoints


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def parse_dest(uri: str) -> tuple[str, str]:
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise ValueError(f"export destination must be s3://bucket/prefix/, not {uri!r}")
    bucket, _, prefix = uri[5:].partition("/")
    return bucket, prefix.rstrip("/") + "/"


def plan_files(stage1_dir: Path, stage1_step: int, stage2_dir: Path) -> list[tuple[Path, str, str]]:
    """``(local path, key under dest, role)`` of everything to upload (manifest excluded)."""
    files: list[tuple[Path, str, str]] = []
    for module in checkpoints.STAGE_WEIGHTS["stage1"]:
        path = stage1_dir / f"{module}-{stage1_step}.pth"
        if not path.is_file():
            raise FileNotFoundError(f"stage-1 weights missing: {path}")
        files.append((path, f"stage1/{path.name}", "stage1-weights"))
    steps = checkpoints.weight_steps(stage2_dir, checkpoints.STAGE_WEIGHTS["stage2"])
    if not steps:
        raise FileNotFoundError(f"no stage-2 weights (motion_module-<step>.pth) in {stage2_dir}")
    for module in checkpoints.STAGE_WEIGHTS["stage2"]:
        path = stage2_dir / f"{module}-{steps[-1]}.pth"
        files.append((path, f"stage2/{path.name}", "stage2-weights"))
    for stage, run_dir in (("stage1", stage1_dir), ("stage2", stage2_dir)):
        cfg = run_dir / ".reelforge" / "config.yaml"
        if cfg.is_file():
            files.append((cfg, f"{stage}/config.yaml", "config"))
    return files


def export(env: Mapping[str, str] = os.environ, s3: Any = None) -> dict[str, Any]:
    bucket, prefix = parse_dest(env["AA_EXPORT_DEST"])
    stage1_dir = Path(env["AA_STAGE1_CKPT_DIR"])
    stage2_dir = Path(env["AA_STAGE2_DIR"])
    stage1_step = int(env["AA_STAGE1_CKPT_STEP"])
    if s3 is None:
        import boto3

        s3 = boto3.client("s3")
    objects = []
    for path, rel, role in plan_files(stage1_dir, stage1_step, stage2_dir):
        key = prefix + rel
        sha = _sha256(path)
        s3.upload_file(str(path), bucket, key, ExtraArgs={"Metadata": {"sha256": sha}})
        objects.append({"key": key, "uri": f"s3://{bucket}/{key}", "size": path.stat().st_size, "sha256": sha,
                        "role": role})
        print(f"[reelforge] uploaded {path} → s3://{bucket}/{key}", flush=True)
    manifest = {
        "training_id": env.get("AA_TRAINING_ID", ""),
        "stage1": {"mlflow_run_id": env.get("AA_STAGE1_RUN_ID", ""), "dir": str(stage1_dir), "step": stage1_step},
        "stage2": {"mlflow_run_id": env.get("AA_STAGE2_RUN_ID", ""), "dir": str(stage2_dir)},
        "objects": objects,
    }
    body = json.dumps(manifest, indent=1, sort_keys=True).encode()
    s3.put_object(Bucket=bucket, Key=prefix + "manifest.json", Body=body, ContentType="application/json")
    manifest["manifest_uri"] = f"s3://{bucket}/{prefix}manifest.json"
    out = Path(env.get("AA_EXPORT_RECORD") or "export.json")
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    tmp.replace(out)
    return manifest
