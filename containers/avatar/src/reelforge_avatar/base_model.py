"""The local base pipeline: where it is and which hub id/revision it is (``reelforge_base.json`` beside it)."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from reelforge_avatar import s3io, safe_tar
from reelforge_avatar.errors import UserError

BASE_DIR_ENV = "REELFORGE_AVATAR_BASE_MODEL_DIR"
#: The stamped base pipeline folder as a tar (the fine-tune endpoint's model data), for the Triton endpoint.
BASE_URI_ENV = "REELFORGE_AVATAR_BASE_MODEL_URI"
SAGEMAKER_MODEL_DIR = "/opt/ml/model"
IDENTITY_FILE = "reelforge_base.json"
#: What production trains and serves on (512 px, epsilon prediction). Train and serve the SAME base.
PRODUCTION_BASE_ID = "stabilityai/stable-diffusion-2-1-base"
PRODUCTION_BASE_REVISION = "5ede9e4bf3e3fd1cb0ef2f7a3fff13ee514fdf06"


def base_dir(model_dir: str | os.PathLike | None = None) -> Path:
    """``$REELFORGE_AVATAR_BASE_MODEL_DIR``, else the SageMaker model dir (or the one given)."""
    return Path(os.environ.get(BASE_DIR_ENV) or model_dir or SAGEMAKER_MODEL_DIR)


def read_identity(folder: Path) -> dict[str, str]:
    """``{"base_model_id", "base_model_revision"}`` of the pipeline in ``folder``."""
    path = folder / IDENTITY_FILE
    if not (folder / "model_index.json").is_file():
        raise UserError(f"{folder} is not a diffusers pipeline folder (no model_index.json)")
    if not path.is_file():
        raise UserError(f"{path} is missing: the base model's hub id and revision must be recorded beside it")
    data = json.loads(path.read_text())
    if not isinstance(data.get("base_model_id"), str) or not isinstance(data.get("base_model_revision"), str):
        raise UserError(f"{path} must hold base_model_id and base_model_revision strings")
    return {"base_model_id": data["base_model_id"], "base_model_revision": data["base_model_revision"]}


def write_identity(folder: Path, base_model_id: str, base_model_revision: str) -> None:
    (folder / IDENTITY_FILE).write_text(json.dumps({"base_model_id": base_model_id,
                                                    "base_model_revision": base_model_revision}))


def check_same_base(identity: dict[str, str], base_model_id: str, base_model_revision: str) -> None:
    """Refuse a LoRA trained on another base (id or revision)."""
    wanted = {"base_model_id": base_model_id, "base_model_revision": base_model_revision}
    if identity != wanted:
        raise UserError(f"base model mismatch: local base is {identity['base_model_id']}@"
                        f"{identity['base_model_revision']}, the LoRA needs {base_model_id}@{base_model_revision}")


def fetch_base(folder: Path, uri: str | None = None, *, client=None) -> Path:
    """``folder`` holding the base pipeline; unless it already does, ``uri`` (``$REELFORGE_AVATAR_BASE_MODEL_URI``,
    the tar of the stamped pipeline folder) is downloaded and safely unpacked there first."""
    if (folder / "model_index.json").is_file():
        return folder
    uri = uri or os.environ.get(BASE_URI_ENV)
    if not uri:
        raise UserError(f"no base pipeline in {folder} and {BASE_URI_ENV} is not set")
    folder.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".base-", dir=folder.parent) as tmp:
        archive = s3io.download_file(uri, Path(tmp) / "base.tar.gz", client=client)
        unpacked = Path(tmp) / "base"
        safe_tar.extract(archive, unpacked)
        archive.unlink()
        read_identity(unpacked)  # a pipeline folder with its identity, or refused before it is used
        if folder.exists():
            shutil.rmtree(folder)
        unpacked.rename(folder)
    return folder
