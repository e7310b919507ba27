"""Check a fine-tuned ``model.tar.gz`` without trusting it: safe members, sizes, manifest sha256s.

The package is what the fine-tune container writes (``reelforge_avatar.package``) and what the Triton
multi-model endpoint loads as ``TargetModel``: ONE Triton model-repository entry named after the model::

    <model_name>/config.pbtxt
    <model_name>/1/model.py
    <model_name>/1/lora/pytorch_lora_weights.safetensors
    <model_name>/1/manifest.json     model_name, base id + revision, lora_rank, max_train_steps, token,
                                     lora_weights, files: sha256 of every other file
"""

from __future__ import annotations

import hashlib
import json
import tarfile
from pathlib import PurePosixPath
from typing import IO, Any

MANIFEST = "manifest.json"
MAX_MEMBERS = 10_000
MAX_MANIFEST_BYTES = 1024 * 1024


class PackageError(ValueError):
    """The package is unsafe, incomplete or not what was asked for; retrying will not help."""


def manifest_path(model_name: str) -> str:
    """Where the manifest lies in the package of ``model_name``."""
    return f"{model_name}/1/{MANIFEST}"


def required_files(model_name: str) -> list[str]:
    """The Triton files every package must hold besides its manifest and weights."""
    return [f"{model_name}/config.pbtxt", f"{model_name}/1/model.py"]


def expected_manifest(request: dict[str, Any], *, base_model_id: str, base_model_revision: str) -> dict[str, Any]:
    """The manifest fields a package must carry for ``request`` on the serving base."""
    return {"model_name": request["model_name"], "base_model_id": base_model_id,
            "base_model_revision": base_model_revision, "lora_rank": request["lora_rank"],
            "max_train_steps": request["max_train_steps"], "token": request["token"]}


def _member_path(member: tarfile.TarInfo) -> str:
    """The member's normalised relative path; refuse absolute paths, ``..``, links and devices."""
    name = member.name
    path = PurePosixPath(name)
    if name.startswith("/") or path.is_absolute() or "\\" in name or ".." in path.parts:
        raise PackageError(f"unsafe path in the package: {name!r}")
    if member.issym() or member.islnk():
        raise PackageError(f"link in the package: {name!r} → {member.linkname!r}")
    if not (member.isfile() or member.isdir()):
        raise PackageError(f"not a regular file or folder in the package: {name!r}")
    return path.as_posix().removeprefix("./")


def inspect_package(fileobj: IO[bytes], *, model_name: str, max_unpacked_bytes: int) -> dict[str, Any]:
    """``{"manifest": ..., "files": {path: sha256}, "unpacked_bytes": n}`` of a gzipped tar stream.

    Every member is read once (streamed) and hashed; nothing is extracted to disk. Every member must lie
    under ``<model_name>/`` (the MME unpacks the package into its model repository).
    """
    files: dict[str, str] = {}
    manifest: dict[str, Any] | None = None
    wanted = manifest_path(model_name)
    unpacked = 0
    try:
        with tarfile.open(fileobj=fileobj, mode="r|gz") as tar:
            for count, member in enumerate(tar, start=1):
                if count > MAX_MEMBERS:
                    raise PackageError(f"more than {MAX_MEMBERS} members")
                path = _member_path(member)
                if path != model_name and not path.startswith(f"{model_name}/"):
                    raise PackageError(f"{path!r} is outside the model folder {model_name}/")
                if member.isdir():
                    continue
                unpacked += member.size
                if unpacked > max_unpacked_bytes:
                    raise PackageError(f"unpacks to more than {max_unpacked_bytes} bytes")
                if path in files:
                    raise PackageError(f"{path!r} appears twice")
                if path == wanted and member.size > MAX_MANIFEST_BYTES:
                    raise PackageError(f"{MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes")
                data = tar.extractfile(member)
                digest = hashlib.sha256()
                head = b""
                while chunk := data.read(1024 * 1024):
                    digest.update(chunk)
                    if path == wanted:
                        head += chunk
                files[path] = digest.hexdigest()
                if path == wanted:
                    manifest = json.loads(head)
    except (tarfile.TarError, EOFError, OSError) as err:
        raise PackageError(f"not a readable .tar.gz: {err}") from err
    except ValueError as err:
        if isinstance(err, PackageError):
            raise
        raise PackageError(f"{MANIFEST} is not JSON: {err}") from err
    if manifest is None:
        raise PackageError(f"no {wanted} in the package")
    if not isinstance(manifest, dict):
        raise PackageError(f"{wanted} is not a JSON object")
    return {"manifest": manifest, "files": files, "unpacked_bytes": unpacked}


def verify_manifest(found: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """Problems of a package against the request: sha256s, Triton files, model name, base, rank, steps, token."""
    manifest, files = found["manifest"], found["files"]
    name = expected["model_name"]
    listed = manifest.get("files")
    if not isinstance(listed, dict) or not listed:
        return [f"{MANIFEST} lists no files"]
    problems = []
    for path, sha in sorted(listed.items()):
        if path not in files:
            problems.append(f"{path!r} is in the manifest but not in the package")
        elif files[path] != sha:
            problems.append(f"{path!r}: sha256 {files[path]} ≠ manifest {sha}")
    extra = sorted(set(files) - set(listed) - {manifest_path(name)})
    if extra:
        problems.append(f"files not in the manifest: {', '.join(extra[:10])}")
    weights = manifest.get("lora_weights")
    for path in [*required_files(name), weights]:
        if path not in listed:
            problems.append(f"{path!r} (Triton model files and LoRA weights) is not in the manifest")
    for field, want in expected.items():
        if manifest.get(field) != want:
            problems.append(f"manifest {field} is {manifest.get(field)!r}, expected {want!r}")
    return problems
