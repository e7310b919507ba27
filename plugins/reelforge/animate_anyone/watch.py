"""What counts as an AnimateAnyone upload: any object under the manifest location is a training-data manifest.

The training DAG's first task (``claim_upload``) and its reconciler (``dags/upload_reconcilers.py``) both
read :data:`WATCH`.
"""

from __future__ import annotations

from typing import Any

from reelforge.animate_anyone.settings import (
    DAG_ID,
    MAX_ACTIVE_RUNS,
    TOPIC_VARIABLE,
    manifest_location,
    output_location,
)
from reelforge.storage import S3Object
from reelforge.upload_watch import UploadWatch, WatchConfig, timings


def manifest_conf(obj: S3Object) -> dict[str, Any]:
    """The run conf an upload starts: ``{"manifest_uri": …}``."""
    return {"manifest_uri": obj.uri}


def watch_config() -> WatchConfig:
    """Manifests land under the manifest location; the ledger lives beside the outputs."""
    ingest_bucket, ingest_prefix = manifest_location()
    state_bucket, state_prefix = output_location()
    return WatchConfig(what="a training-data manifest", ingest_bucket=ingest_bucket, ingest_prefix=ingest_prefix,
                       state_bucket=state_bucket, state_prefix=state_prefix, conf_for=manifest_conf,
                       **timings("animate_anyone"))


WATCH = UploadWatch(name="animate_anyone", dag_id=DAG_ID, max_active_runs=MAX_ACTIVE_RUNS, config=watch_config,
                    tag="animate-anyone", topic_variable=TOPIC_VARIABLE)
