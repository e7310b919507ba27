"""The MLflow run of one sweep run: found by its ``reelforge.run_key`` tag, created the first time.

A retried or requeued job finds the run its earlier attempts created, so metrics of the resumed
training continue in the same run. The trainer attaches to it through ``MLFLOW_RUN_ID`` (accelerate's
``MLflowTracker`` and the smoke payload both honour it) — nothing is written to a local ``./mlruns``.
The tracking URI is an MLflow server (``http(s)://``) or a SageMaker managed MLflow tracking server
ARN (needs the ``sagemaker-mlflow`` plugin, in the image).
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)
RUN_KEY_TAG = "reelforge.run_key"
_SAFE = re.compile(r"^[A-Za-z0-9._/:-]{1,250}$")


def _client(tracking_uri: str) -> Any:
    from mlflow import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri)


def experiment_id(client: Any, name: str) -> str:
    """Get or create the experiment (several sweep jobs may race to create it)."""
    for attempt in range(5):
        exp = client.get_experiment_by_name(name)
        if exp is not None:
            return exp.experiment_id
        try:
            return client.create_experiment(name, tags={"reelforge.workflow": "animate-anyone"})
        except Exception as err:  # RESOURCE_ALREADY_EXISTS when another job won the race
            log.info("create_experiment(%s) failed (%s); looking it up again", name, err)
            time.sleep(0.5 * (attempt + 1))
    raise RuntimeError(f"could not get or create MLflow experiment {name!r}")


def ensure_run(
    *,
    tracking_uri: str,
    experiment: str,
    run_key: str,
    run_name: str,
    tags: Mapping[str, str] | None = None,
    params: Mapping[str, Any] | None = None,
) -> tuple[str, bool]:
    """Return ``(run_id, existed)`` for ``run_key``; a new run gets ``tags`` and ``params``."""
    if not _SAFE.match(run_key):
        raise ValueError(f"run key {run_key!r} must match {_SAFE.pattern}")
    client = _client(tracking_uri)
    exp_id = experiment_id(client, experiment)
    found = client.search_runs(
        [exp_id], filter_string=f"tags.`{RUN_KEY_TAG}` = '{run_key}'", max_results=10,
        order_by=["attributes.start_time ASC"],
    )
    if found:
        run_id = found[0].info.run_id
        if len(found) > 1:
            log.warning("%d MLflow runs carry run key %s; using the first, %s", len(found), run_key, run_id)
        return run_id, True
    all_tags = {str(k): str(v) for k, v in (tags or {}).items()}
    all_tags[RUN_KEY_TAG] = run_key
    run = client.create_run(exp_id, run_name=run_name, tags=all_tags)
    run_id = run.info.run_id
    if params:
        from mlflow.entities import Param

        items = [Param(str(k), json.dumps(v) if not isinstance(v, str) else v) for k, v in params.items()]
        for i in range(0, len(items), 100):
            client.log_batch(run_id, params=items[i : i + 100])
    return run_id, False


def record_attempt(tracking_uri: str, run_id: str, attempt_tags: Mapping[str, str]) -> None:
    client = _client(tracking_uri)
    for key, value in attempt_tags.items():
        client.set_tag(run_id, key, str(value))


def ensure_from_env(env: Mapping[str, str] = os.environ) -> str:
    """What the sbatch scripts call (``reelforge-aa mlflow-run``): ensure the run, tag this attempt."""
    tags = json.loads(env.get("AA_MLFLOW_TAGS") or "{}")
    params = json.loads(env.get("AA_MLFLOW_PARAMS") or "{}")
    uri = env["MLFLOW_TRACKING_URI"]
    run_id, existed = ensure_run(
        tracking_uri=uri,
        experiment=env["MLFLOW_EXPERIMENT_NAME"],
        run_key=env["AA_RUN_KEY"],
        run_name=env.get("AA_EXP_NAME") or env["AA_RUN_KEY"].rsplit("/", 1)[-1],
        tags=tags,
        params=params,
    )
    job = env.get("SLURM_JOB_ID", "")
    record_attempt(uri, run_id, {"reelforge.slurm_job_id": job, "reelforge.resumed": str(existed).lower()})
    log.info("MLflow run %s (%s) for %s", run_id, "existing" if existed else "new", env["AA_RUN_KEY"])
    return run_id
