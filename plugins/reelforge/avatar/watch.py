"""What counts as an avatar upload: ``<ingest prefix><user id>/<set>/_READY`` after the set's selfies.

The personalization DAG's first task (``claim_upload``) and its reconciler (``dags/upload_reconcilers.py``)
both read :data:`WATCH`; ``plan_run`` reads :func:`selfies_from_marker` for a notification's upload.
"""

from __future__ import annotations

from pathlib import PurePosixPath
from typing import Any

from reelforge.avatar.plan import MARKER, USER_ID_RE
from reelforge.avatar.settings import DAG_ID, MAX_ACTIVE_RUNS, TOPIC_VARIABLE, artifacts_location, ingest_location
from reelforge.storage import S3Object
from reelforge.upload_watch import ConfFor, UploadWatch, WatchConfig, timings


def selfies_from_marker(bucket: str, key: str, ingest_bucket: str, ingest_prefix: str) -> tuple[str, str] | None:
    """An upload of ``<ingest prefix><user id>/<set>/_READY`` → ``(user id, s3://…/<set>/)``; else None."""
    path = PurePosixPath(key)
    if path.name != MARKER or bucket != ingest_bucket or not key.startswith(ingest_prefix):
        return None
    parts = PurePosixPath(key[len(ingest_prefix):]).parts
    if len(parts) != 3 or not USER_ID_RE.fullmatch(parts[0]):
        return None
    return parts[0], f"s3://{bucket}/{path.parent.as_posix()}/"


def selfie_set_conf(ingest_bucket: str, ingest_prefix: str) -> ConfFor:
    """The run conf a selfie set's marker starts: ``{"user_id": …, "selfies_uri": …}``; else None."""

    def conf_for(obj: S3Object) -> dict[str, Any] | None:
        found = selfies_from_marker(obj.bucket, obj.key, ingest_bucket, ingest_prefix)
        return {"user_id": found[0], "selfies_uri": found[1]} if found else None

    return conf_for


def watch_config() -> WatchConfig:
    """Selfie sets land under the ingest location; the ledger lives beside the avatar artifacts."""
    ingest_bucket, ingest_prefix = ingest_location()
    state_bucket, state_prefix = artifacts_location()
    return WatchConfig(what="a selfie set's _READY marker", ingest_bucket=ingest_bucket, ingest_prefix=ingest_prefix,
                       state_bucket=state_bucket, state_prefix=state_prefix,
                       conf_for=selfie_set_conf(ingest_bucket, ingest_prefix), **timings("avatar"))


WATCH = UploadWatch(name="avatar", dag_id=DAG_ID, max_active_runs=MAX_ACTIVE_RUNS, config=watch_config,
                    tag="avatar", topic_variable=TOPIC_VARIABLE)
