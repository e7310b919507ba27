"""What counts as a StyleGAN2 upload: a ``.zip`` of images, or a folder of images followed by ``_READY``.

The training DAG's first task (``claim_upload``) and its reconciler (``dags/upload_reconcilers.py``) both
read :data:`WATCH`; ``plan_run`` reads :func:`dataset_uri` for a notification's upload.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from reelforge.storage import S3Object
from reelforge.stylegan2.settings import (
    DAG_ID,
    MAX_ACTIVE_RUNS,
    TOPIC_VARIABLE,
    artifacts_location,
    dataset_location,
)
from reelforge.upload_watch import UploadWatch, WatchConfig, timings

MARKER = "_READY"


def dataset_uri(obj: S3Object) -> str | None:
    """``<folder>/_READY`` → the folder (the dataset); ``….zip`` → the archive; anything else → None."""
    path = PurePosixPath(obj.key)
    if path.name == MARKER:
        return f"s3://{obj.bucket}/{path.parent.as_posix()}/"
    if path.suffix.lower() == ".zip":
        return obj.uri
    return None


def dataset_conf(obj: S3Object) -> dict[str, Any] | None:
    """The run conf an upload starts: ``{"dataset_uri": …}``, or None when the object is not a dataset."""
    uri = dataset_uri(obj)
    return {"dataset_uri": uri} if uri else None


def watch_config() -> WatchConfig:
    """Datasets land under the dataset location; the ledger lives beside the artifacts."""
    ingest_bucket, ingest_prefix = dataset_location()
    state_bucket, state_prefix = artifacts_location()
    return WatchConfig(what="a dataset (a .zip of images or a _READY marker)", ingest_bucket=ingest_bucket,
                       ingest_prefix=ingest_prefix, state_bucket=state_bucket, state_prefix=state_prefix,
                       conf_for=dataset_conf, **timings("stylegan2"))


WATCH = UploadWatch(name="stylegan2", dag_id=DAG_ID, max_active_runs=MAX_ACTIVE_RUNS, config=watch_config,
                    tag="stylegan2", topic_variable=TOPIC_VARIABLE)
