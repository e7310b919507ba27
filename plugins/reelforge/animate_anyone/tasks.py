"""Task bodies of ``animate_anyone_training`` that run in Airflow (S3 metadata, SFTP, MLflow REST).

Names and paths are derived here, once per DAG run, and handed to the Slurm jobs as ``AA_*``
variables (``include/slurm/animate_anyone/``). Layout on shared storage::

    <work root>/animate-anyone/<training id>/
        data/manifest.json                     the staged training-data manifest
        stage1/sweep-<i>-<hash>/               one sweep run: checkpoints, weights, logs/, .slurm/
        stage2/main/                           stage 2 from the best stage-1 run
        export/export.json                     what was uploaded to S3
"""

from __future__ import annotations

import json
import logging
import posixpath
import re
from typing import Any

from reelforge.animate_anyone.manifest import parse_manifest
from reelforge.animate_anyone.mlflow_rest import MlflowRest, pick_best, summarize
from reelforge.animate_anyone.settings import AASettings, aa_manifest_queue_url, aa_settings
from reelforge.animate_anyone.sweep import (
    SweepError,
    exp_name,
    expand_grid,
    merged,
    training_id,
    validate_overrides,
)
from reelforge.animate_anyone.watch import watch_config
from reelforge.settings import AWS_CONN_ID, HYPERPOD_CONN_ID
from reelforge.storage import InvalidSourceError

log = logging.getLogger(__name__)
STAGE1_MODULES = ("denoising_unet", "reference_unet", "pose_guider")
#: animate-anyone: Moore's trainers on the GPUs; smoke: a tiny PyTorch job with Moore's conventions;
#: moore-cpu: Moore's real trainers on one CPU process per node, tiny random models (reelforge_aa.moore_cpu).
PAYLOADS = ("animate-anyone", "smoke", "moore-cpu")


def _s3_client() -> Any:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=AWS_CONN_ID).get_conn()


def _hook(conn_id: str) -> Any:
    from reelforge.hooks.slurm import SlurmHook

    return SlurmHook(conn_id)


def _fail(message: str) -> Exception:
    from airflow.sdk.exceptions import AirflowFailException

    return AirflowFailException(message)


# -- 1. stage the manifest ------------------------------------------------------------------------


def stage_manifest(*, params: dict[str, Any], dag_id: str, run_id: str, events: Any,
                   conn_id: str = HYPERPOD_CONN_ID, conf: dict[str, Any] | None = None) -> dict[str, Any]:
    """Resolve the manifest (form or S3 notification), pin its version, validate, copy to the cluster.

    A run the upload reconciler started reads the version it claimed (``conf``), not a newer one.
    """
    from airflow.sdk.exceptions import AirflowSkipException

    from reelforge.upload_watch import upload_from_conf
    from reelforge.uploads import further_sources, hand_back, head_source, resolve_source

    settings = aa_settings()
    if further := further_sources(params.get("manifest_uri"), events):
        from airflow.providers.amazon.aws.hooks.sqs import SqsHook

        hand_back(SqsHook(aws_conn_id=AWS_CONN_ID).get_conn(), aa_manifest_queue_url(), further, run_id=run_id)
    try:
        source = resolve_source(params.get("manifest_uri"), events)
        if source is None:
            raise AirflowSkipException("the notification names no object (e.g. s3:TestEvent): nothing to do")
        claimed = upload_from_conf(conf)
        if claimed and claimed.uri == source.uri and claimed.version_id:
            source = claimed
        s3 = _s3_client()
        source = head_source(s3, source, settings.max_manifest_bytes)
        kwargs = {"Bucket": source.bucket, "Key": source.key}
        if source.version_id:
            kwargs["VersionId"] = source.version_id
        data = s3.get_object(**kwargs)["Body"].read()
        entries = parse_manifest(data, source.uri)
    except InvalidSourceError as err:
        raise _fail(f"invalid manifest: {err}") from err

    tid = training_id(dag_id, run_id)
    root = posixpath.join(settings.cluster_work_root.rstrip("/"), "animate-anyone", tid)
    path = posixpath.join(root, "data", "manifest.json")
    provenance = {"uri": source.uri, "version_id": source.version_id, "etag": source.etag, "size": source.size,
                  "entries": len(entries), "dag_id": dag_id, "run_id": run_id}
    with _hook(conn_id) as hook:
        hook.put_text(path, json.dumps(entries, indent=1) + "\n")
        hook.put_text(posixpath.join(root, "data", "manifest.source.json"), json.dumps(provenance, indent=1) + "\n")
    log.info("staged %s (%d entries, version %s) at %s", source.uri, len(entries), source.version_id, path)
    return {"training_id": tid, "root": root, "manifest_path": path, "manifest_uri": source.uri,
            "manifest_version": source.version_id, "entries": len(entries)}


# -- 2. plan the sweep ----------------------------------------------------------------------------


def _common_env(settings: AASettings, payload: str) -> dict[str, str]:
    smoke, cpu = payload == "smoke", payload != "animate-anyone"
    return {
        "AA_PAYLOAD": payload,
        "AA_LAUNCHER": "torchrun" if smoke else "accelerate" if cpu else settings.launcher,
        "AA_GPUS_PER_NODE": "1" if cpu else str(settings.gpus_per_node),
        "AA_DEEPSPEED_CONFIG": "" if cpu else settings.deepspeed_config,
        "AA_VENV": settings.venv,
        "AA_IMAGE": settings.container_image,
        "AA_CONTAINER_MOUNTS": settings.container_mounts,
        "AA_AUTO_RESUME": settings.auto_resume,
        "AA_CODE_DIR": settings.code_dir,
        "AA_MODEL_DIR": settings.model_dir,
        "AA_MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "AA_MLFLOW_EXPERIMENT": settings.mlflow_experiment,
    }


def _slurm_kwargs(settings: AASettings, nodes: int, time_limit: str) -> dict[str, Any]:
    return {
        "partition": settings.partition or None,
        "gres": settings.gres or None,
        "cpus_per_task": settings.cpus_per_task,
        "time_limit": time_limit,
        "extra_args": [f"--nodes={nodes}", *settings.sbatch_args],
    }


def _nodes(value: Any, settings: AASettings, what: str) -> int:
    try:
        nodes = int(value)
    except (TypeError, ValueError) as err:
        raise _fail(f"{what} must be an integer, not {value!r}") from err
    if not 1 <= nodes <= settings.max_nodes:
        raise _fail(f"{what} must be between 1 and {settings.max_nodes} (setting max_nodes), not {nodes}")
    return nodes


def plan_sweep(*, staged: dict[str, Any], params: dict[str, Any], dag_id: str, run_id: str) -> list[dict[str, Any]]:
    """One stage-1 Slurm job per sweep point: its ``SlurmJobOperator`` kwargs (``expand_kwargs``)."""
    settings = aa_settings()
    payload = params.get("payload") or "animate-anyone"
    if payload not in PAYLOADS:
        raise _fail(f"payload must be one of {PAYLOADS}")
    try:
        common = validate_overrides(params.get("config_overrides"))
        stage1 = validate_overrides(params.get("stage1_overrides"), "stage-1 overrides")
        points = expand_grid(params.get("sweep_grid") or {}, settings.max_sweep_runs)
    except SweepError as err:
        raise _fail(str(err)) from err
    nodes = _nodes(params.get("nodes", 1), settings, "nodes")
    if payload == "moore-cpu" and (nodes != 1 or int(params.get("stage2_nodes") or 1) != 1):
        # accelerate would be asked for --multi_gpu; the CPU payload is one process on one node.
        raise _fail("payload moore-cpu runs on one node: nodes and stage2_nodes must be 1")
    tid = staged["training_id"]
    output_dir = posixpath.join(staged["root"], "stage1")
    jobs = []
    for index, point in enumerate(points):
        name = exp_name(index, point)
        run_key = f"{tid}/stage1/{name}"
        tags = {"reelforge.training_id": tid, "reelforge.stage": "stage1", "reelforge.sweep_index": str(index),
                "reelforge.dag_id": dag_id, "reelforge.dag_run_id": run_id,
                "reelforge.manifest_uri": staged["manifest_uri"], "reelforge.payload": payload}
        env = {
            **_common_env(settings, payload),
            "AA_OUTPUT_DIR": output_dir,
            "AA_EXP_NAME": name,
            "AA_RUN_KEY": run_key,
            "AA_MANIFEST": staged["manifest_path"],
            "AA_OVERRIDES": json.dumps(merged(common, stage1, point), sort_keys=True),
            "AA_MLFLOW_TAGS": json.dumps(tags, sort_keys=True),
            "AA_MLFLOW_PARAMS": json.dumps({**point, "reelforge.nodes": nodes}, sort_keys=True),
            "AA_SWEEP_POINT": json.dumps(point, sort_keys=True),
        }
        workdir = posixpath.join(output_dir, name)
        jobs.append({"workdir": workdir, "env": env, "job_name": f"aa-s1-{index:02d}",
                     **_slurm_kwargs(settings, nodes, settings.time_limit_stage1)})
    log.info("stage 1: %d sweep run(s) of %d node(s) each under %s", len(points), nodes, output_dir)
    return jobs


def runs_from_jobs(jobs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The identity of each planned sweep run, read back from its job kwargs."""
    return [
        {"index": index, "exp_name": job["env"]["AA_EXP_NAME"], "run_key": job["env"]["AA_RUN_KEY"],
         "save_dir": job["workdir"], "point": json.loads(job["env"]["AA_SWEEP_POINT"])}
        for index, job in enumerate(jobs)
    ]


# -- 3. pick the best stage-1 run -------------------------------------------------------------------


def _weights_step(hook: Any, save_dir: str) -> int | None:
    names = hook.sftp.listdir(save_dir)
    steps: list[set[int]] = []
    for module in STAGE1_MODULES:
        pattern = re.compile(rf"^{module}-(\d+)\.pth$")
        steps.append({int(m.group(1)) for n in names if (m := pattern.match(n))})
    common = set.intersection(*steps)
    return max(common) if common else None


def select_best(*, staged: dict[str, Any], jobs: list[dict[str, Any]], params: dict[str, Any], dag_id: str,
                run_id: str, conn_id: str = HYPERPOD_CONN_ID) -> dict[str, Any]:
    """Query MLflow for this training's stage-1 runs, rank them by the metric, plan stage 2 and export."""
    settings = aa_settings()
    metric = str(params.get("selection_metric") or "train_loss")
    mode = str(params.get("selection_mode") or "min")
    tid = staged["training_id"]
    runs = runs_from_jobs(jobs)
    client = MlflowRest(settings.mlflow_tracking_uri, aws_conn_id=AWS_CONN_ID)
    exp_id = client.experiment_id(settings.mlflow_experiment)
    if exp_id is None:
        raise _fail(f"MLflow experiment {settings.mlflow_experiment!r} does not exist: did stage 1 run?")
    found = [summarize(r) for r in client.search_runs(
        [exp_id], f"tags.`reelforge.training_id` = '{tid}' and tags.`reelforge.stage` = 'stage1'")]
    by_key = {r["tags"].get("reelforge.run_key"): r for r in found}
    planned = []
    for run in runs:
        mlrun = by_key.get(run["run_key"])
        if mlrun is None:
            log.warning("sweep run %s has no MLflow run", run["run_key"])
            continue
        planned.append({**mlrun, "plan": run})
    try:
        best, ranked = pick_best(planned, metric, mode)
    except LookupError as err:
        raise _fail(f"cannot pick the best stage-1 run of {tid}: {err}") from err
    for r in ranked:
        log.info("  %s %s=%.6g (MLflow run %s, point %s)", r["plan"]["exp_name"], metric, r["metrics"][metric],
                 r["run_id"], r["plan"]["point"])
    save_dir = best["plan"]["save_dir"]
    with _hook(conn_id) as hook:
        step = _weights_step(hook, save_dir)
    if step is None:
        raise _fail(f"best run {save_dir} has no complete set of stage-1 weights ({', '.join(STAGE1_MODULES)})")
    log.info("best stage-1 run: %s (%s %s = %.6g), weights of step %d", best["plan"]["exp_name"], mode, metric,
             best["metrics"][metric], step)

    payload = params.get("payload") or "animate-anyone"
    stage2_nodes = int(params.get("stage2_nodes") or 0) or int(params.get("nodes") or 1)
    stage2_nodes = _nodes(stage2_nodes, settings, "stage2_nodes")
    try:
        common = validate_overrides(params.get("config_overrides"))
        stage2 = validate_overrides(params.get("stage2_overrides"), "stage-2 overrides")
    except SweepError as err:
        raise _fail(str(err)) from err
    stage2_out = posixpath.join(staged["root"], "stage2")
    stage2_key = f"{tid}/stage2/main"
    tags = {"reelforge.training_id": tid, "reelforge.stage": "stage2", "reelforge.dag_id": dag_id,
            "reelforge.dag_run_id": run_id, "reelforge.stage1_run_id": best["run_id"],
            "reelforge.stage1_exp_name": best["plan"]["exp_name"], "reelforge.payload": payload,
            "reelforge.manifest_uri": staged["manifest_uri"]}
    stage2_env = {
        **_common_env(settings, payload),
        "AA_OUTPUT_DIR": stage2_out,
        "AA_EXP_NAME": "main",
        "AA_RUN_KEY": stage2_key,
        "AA_MANIFEST": staged["manifest_path"],
        "AA_STAGE1_CKPT_DIR": save_dir,
        "AA_STAGE1_CKPT_STEP": str(step),
        "AA_OVERRIDES": json.dumps(merged(common, stage2), sort_keys=True),
        "AA_MLFLOW_TAGS": json.dumps(tags, sort_keys=True),
        "AA_MLFLOW_PARAMS": json.dumps({"reelforge.stage1_run_id": best["run_id"], "reelforge.stage1_step": step,
                                        "reelforge.nodes": stage2_nodes}, sort_keys=True),
    }
    stage2_dir = posixpath.join(stage2_out, "main")
    dest = f"s3://{settings.output_bucket}/{settings.output_prefix.strip('/')}/{tid}/"
    export_env = {
        **_common_env(settings, payload),
        "AA_EXPORT_DEST": dest,
        "AA_TRAINING_ID": tid,
        "AA_STAGE1_CKPT_DIR": save_dir,
        "AA_STAGE1_CKPT_STEP": str(step),
        "AA_STAGE1_RUN_ID": best["run_id"],
        "AA_STAGE2_DIR": stage2_dir,
    }
    return {
        "training_id": tid,
        "metric": metric,
        "mode": mode,
        "best": {"run_id": best["run_id"], "exp_name": best["plan"]["exp_name"], "index": best["plan"]["index"],
                 "point": best["plan"]["point"], "value": best["metrics"][metric], "save_dir": save_dir,
                 "step": step},
        "ranking": [{"exp_name": r["plan"]["exp_name"], "run_id": r["run_id"], "value": r["metrics"][metric],
                     "point": r["plan"]["point"]} for r in ranked],
        "stage2_run_key": stage2_key,
        # flat keys: the Slurm operators take them as XComArgs (template fields)
        "stage2_workdir": stage2_dir,
        "stage2_env": stage2_env,
        **{f"stage2_{k}": v for k, v in _slurm_kwargs(settings, stage2_nodes, settings.time_limit_stage2).items()},
        "export_workdir": posixpath.join(staged["root"], "export"),
        "export_env": export_env,
        "export_partition": settings.export_partition or None,
        "export_dest": dest,
    }


# -- 4. publish -----------------------------------------------------------------------------------


def publish(*, selection: dict[str, Any], dag_id: str, run_id: str, conn_id: str = HYPERPOD_CONN_ID) -> dict:
    """Check the exported objects in S3 against export.json; compose the success message."""
    settings = aa_settings()
    record_path = posixpath.join(selection["export_workdir"], "export.json")
    with _hook(conn_id) as hook:
        record = hook.read_json(record_path)
    s3 = _s3_client()
    checked = []
    for obj in record["objects"]:
        bucket, _, key = obj["uri"][5:].partition("/")
        head = s3.head_object(Bucket=bucket, Key=key)
        if int(head["ContentLength"]) != int(obj["size"]):
            raise RuntimeError(f"{obj['uri']}: {head['ContentLength']} bytes in S3, {obj['size']} exported")
        checked.append({"uri": obj["uri"], "size": obj["size"], "role": obj["role"]})
    bucket, _, key = record["manifest_uri"][5:].partition("/")
    s3.head_object(Bucket=bucket, Key=key)

    stage2 = {}
    client = MlflowRest(settings.mlflow_tracking_uri, aws_conn_id=AWS_CONN_ID)
    exp_id = client.experiment_id(settings.mlflow_experiment)
    if exp_id:
        found = client.search_runs([exp_id], f"tags.`reelforge.run_key` = '{selection['stage2_run_key']}'")
        if found:
            stage2 = summarize(found[0])
    message = {
        "event": "animate_anyone_trained",
        "dag_id": dag_id,
        "run_id": run_id,
        "training_id": selection["training_id"],
        "metric": selection["metric"],
        "mode": selection["mode"],
        "stage1_best": selection["best"],
        "stage1_ranking": selection["ranking"],
        "stage2_mlflow_run_id": stage2.get("run_id"),
        "stage2_metrics": stage2.get("metrics", {}),
        "export_manifest": record["manifest_uri"],
        "objects": checked,
    }
    return {"message": json.dumps(message, sort_keys=True), "manifest_uri": record["manifest_uri"],
            "receipt_uri": watch_config().receipt_uri(run_id)}
