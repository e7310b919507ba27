"""Check a fine-tuned ``model.tar.gz`` without trusting it: safe members, sizes, manifest sha256s."""

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


def inspect_package(fileobj: IO[bytes], *, max_unpacked_bytes: int) -> dict[str, Any]:
    """``{"manifest": ..., "files": {path: sha256}, "unpacked_bytes": n}`` of a gzipped tar stream.

    Every member is read once (streamed) and hashed; nothing is extracted to disk.
    """
    files: dict[str, str] = {}
    manifest: dict[str, Any] | None = None
    unpacked = 0
    try:
        with tarfile.open(fileobj=fileobj, mode="r|gz") as tar:
            for count, member in enumerate(tar, start=1):
                if count > MAX_MEMBERS:
                    raise PackageError(f"more than {MAX_MEMBERS} members")
                path = _member_path(member)
                if member.isdir():
                    continue
                unpacked += member.size
                if unpacked > max_unpacked_bytes:
                    raise PackageError(f"unpacks to more than {max_unpacked_bytes} bytes")
                if path in files:
                    raise PackageError(f"{path!r} appears twice")
                data = tar.extractfile(member)
                digest = hashlib.sha256()
                head = b""
                while chunk := data.read(1024 * 1024):
                    digest.update(chunk)
                    if path == MANIFEST and len(head) <= MAX_MANIFEST_BYTES:
                        head += chunk
                files[path] = digest.hexdigest()
                if path == MANIFEST:
                    if member.size > MAX_MANIFEST_BYTES:
                        raise PackageError(f"{MANIFEST} is larger than {MAX_MANIFEST_BYTES} bytes")
                    manifest = json.loads(head)
    except (tarfile.TarError, EOFError, OSError) as err:
        raise PackageError(f"not a readable .tar.gz: {err}") from err
    except ValueError as err:
        if isinstance(err, PackageError):
            raise
        raise PackageError(f"{MANIFEST} is not JSON: {err}") from err
    if manifest is None:
        raise PackageError(f"no {MANIFEST} at the root of the package")
    return {"manifest": manifest, "files": files, "unpacked_bytes": unpacked}


def verify_manifest(found: dict[str, Any], expected: dict[str, Any]) -> list[str]:
    """Problems of a package against the request: sha256s, base model, LoRA rank, steps, token."""
    manifest, files = found["manifest"], found["files"]
    listed = manifest.get("files")
    if not isinstance(listed, dict) or not listed:
        return [f"{MANIFEST} lists no files"]
    problems = []
    for path, sha in sorted(listed.items()):
        if path not in files:
            problems.append(f"{path!r} is in the manifest but not in the package")
        elif files[path] != sha:
            problems.append(f"{path!r}: sha256 {files[path]} ≠ manifest {sha}")
    extra = sorted(set(files) - set(listed) - {MANIFEST})
    if extra:
        problems.append(f"files not in the manifest: {', '.join(extra[:10])}")
    for field, want in expected.items():
        if manifest.get(field) != want:
            problems.append(f"manifest {field} is {manifest.get(field)!r}, expected {want!r}")
    return problems
