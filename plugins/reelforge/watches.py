"""What counts as an upload for each training workflow, where it lands and where its ledger lives.

Each :class:`~reelforge.upload_watch.UploadWatch` here feeds one workflow from plain S3 uploads (its
reconciler DAG in ``dags/upload_reconcilers.py``) and tells that workflow's first task which upload a
run is for (``claim_upload``). A shared module imports no workflow package, so the rules and the
Variables (names and defaults) are restated here; ``tests/plugins/test_upload_watch.py`` holds them
equal to each workflow's own (``dataset_from_events``, ``selfies_from_marker``, its settings).
Settings are read inside tasks (Variables), never at parse time.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import PurePosixPath
from typing import Any

from reelforge.settings import setting
from reelforge.storage import S3Object
from reelforge.upload_watch import ConfFor, UploadWatch, WatchConfig, timings

MARKER = "_READY"
#: A user id as the avatar workflow accepts it (``reelforge.avatar.plan.USER_ID_RE``).
USER_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def reconcile_interval() -> timedelta:
    """How often the training workflows' reconcilers list their prefixes (parse time, env).

    ``REELFORGE_UPLOAD_RECONCILE_SECONDS``, default 300: an upload without a notification starts its run
    within this period plus the grace period.
    """
    return timedelta(seconds=int(os.environ.get("REELFORGE_UPLOAD_RECONCILE_SECONDS", 300)))


def _folder(value: str) -> str:
    return value if not value or value.endswith("/") else value + "/"


def dataset_conf(obj: S3Object) -> dict[str, Any] | None:
    """StyleGAN2: ``<folder>/_READY`` (the folder is the dataset) or a ``.zip`` of images, as ``plan`` reads them."""
    path = PurePosixPath(obj.key)
    if path.name == MARKER:
        return {"dataset_uri": f"s3://{obj.bucket}/{path.parent.as_posix()}/"}
    if path.suffix.lower() == ".zip":
        return {"dataset_uri": obj.uri}
    return None


def selfie_set_conf(bucket: str, prefix: str) -> ConfFor:
    """Avatar: ``<prefix><user id>/<set>/_READY`` in ``bucket`` → the set's folder and its user."""

    def conf_for(obj: S3Object) -> dict[str, Any] | None:
        path = PurePosixPath(obj.key)
        if path.name != MARKER or obj.bucket != bucket or not obj.key.startswith(prefix):
            return None
        parts = PurePosixPath(obj.key[len(prefix):]).parts
        if len(parts) != 3 or not USER_ID_RE.fullmatch(parts[0]):
            return None
        return {"user_id": parts[0], "selfies_uri": f"s3://{obj.bucket}/{path.parent.as_posix()}/"}

    return conf_for


def stylegan2_config() -> WatchConfig:
    """Datasets land under ``reelforge_stylegan2_dataset_bucket``/``_prefix``; the ledger is beside the artifacts."""
    return WatchConfig(
        what="a dataset (a .zip of images or a _READY marker)",
        ingest_bucket=setting("reelforge_stylegan2_dataset_bucket", "reelforge-ingest"),
        ingest_prefix=_folder(setting("reelforge_stylegan2_dataset_prefix", "stylegan2/datasets/")),
        state_bucket=setting("reelforge_stylegan2_artifacts_bucket", "reelforge-artifacts"),
        state_prefix=_folder(setting("reelforge_stylegan2_artifacts_prefix", "stylegan2/")),
        conf_for=dataset_conf, **timings("stylegan2"))


def avatar_config() -> WatchConfig:
    """Selfie sets land under the avatar ingest prefix; the ledger is beside the avatar artifacts."""
    bucket = setting("reelforge_avatar_ingest_bucket", "reelforge-ingest")
    prefix = _folder(setting("reelforge_avatar_ingest_prefix", "avatar/incoming/"))
    return WatchConfig(
        what="a selfie set's _READY marker", ingest_bucket=bucket, ingest_prefix=prefix,
        state_bucket=setting("reelforge_avatar_artifacts_bucket", "reelforge-artifacts"),
        state_prefix=_folder(setting("reelforge_avatar_artifacts_prefix", "avatar/")),
        conf_for=selfie_set_conf(bucket, prefix), **timings("avatar"))


def animate_anyone_config() -> WatchConfig:
    """Every object under ``reelforge_animate_anyone_manifest_bucket``/``_prefix`` is a training-data manifest."""
    return WatchConfig(
        what="a training-data manifest",
        ingest_bucket=setting("reelforge_animate_anyone_manifest_bucket", "reelforge-ingest"),
        ingest_prefix=_folder(setting("reelforge_animate_anyone_manifest_prefix", "animate-anyone/manifests/")),
        state_bucket=setting("reelforge_animate_anyone_output_bucket", "reelforge-output"),
        state_prefix=_folder(setting("reelforge_animate_anyone_output_prefix", "animate-anyone/")),
        conf_for=lambda obj: {"manifest_uri": obj.uri}, **timings("animate_anyone"))


# max_active_runs: the DAG's own (tests/plugins/test_upload_watch.py holds them equal).
STYLEGAN2 = UploadWatch(name="stylegan2", dag_id="stylegan2_training", max_active_runs=4, config=stylegan2_config)
AVATAR = UploadWatch(name="avatar", dag_id="avatar_personalization", max_active_runs=8, config=avatar_config)
ANIMATE_ANYONE = UploadWatch(name="animate_anyone", dag_id="animate_anyone_training", max_active_runs=4,
                             config=animate_anyone_config)
WATCHES = (STYLEGAN2, AVATAR, ANIMATE_ANYONE)
