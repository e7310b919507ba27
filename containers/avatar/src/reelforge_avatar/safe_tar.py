"""Safe ``tar.gz`` packing and unpacking: relative regular files and folders only, bounded in size and count.

Refused: absolute names, ``..`` components, links, devices, FIFOs, members past ``max_members`` or a total
past ``max_bytes``. Both directions go through :func:`check_member_name` so what we pack we can unpack.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path, PurePosixPath

MAX_MEMBERS = 1000
MAX_BYTES = 8 * 1024**3


class UnsafeArchive(ValueError):
    """The archive holds a member that must not be written to disk."""


def check_member_name(name: str) -> str:
    """The normalised relative POSIX name, or :class:`UnsafeArchive`."""
    if not name or "\x00" in name or "\\" in name:
        raise UnsafeArchive(f"bad member name {name!r}")
    path = PurePosixPath(name)
    if path.is_absolute() or name.startswith("/"):
        raise UnsafeArchive(f"absolute member name {name!r}")
    parts = [p for p in path.parts if p != "."]
    if not parts or any(p == ".." for p in parts):
        raise UnsafeArchive(f"member name escapes the target: {name!r}")
    return "/".join(parts)


def pack(source: Path, archive: Path, *, max_members: int = MAX_MEMBERS, max_bytes: int = MAX_BYTES) -> list[str]:
    """Write every regular file under ``source`` (sorted, names relative to it) to ``archive``; return the names.

    The archive is written to ``<archive>.partial`` and renamed when complete.
    """
    files = sorted(p for p in source.rglob("*") if p.is_file() or p.is_symlink())
    if len(files) > max_members:
        raise UnsafeArchive(f"{len(files)} files > {max_members}")
    names, total = [], 0
    partial = archive.with_name(archive.name + ".partial")
    with tarfile.open(partial, "w:gz") as tar:
        for path in files:
            if path.is_symlink() or not path.is_file():
                raise UnsafeArchive(f"not a regular file: {path}")
            name = check_member_name(path.relative_to(source).as_posix())
            total += path.stat().st_size
            if total > max_bytes:
                raise UnsafeArchive(f"content over {max_bytes} bytes")
            info = tar.gettarinfo(str(path), arcname=name)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mode = 0o644
            with path.open("rb") as fh:
                tar.addfile(info, fh)
            names.append(name)
    os.replace(partial, archive)
    return names


def extract(archive: Path, target: Path, *, max_members: int = MAX_MEMBERS, max_bytes: int = MAX_BYTES) -> list[str]:
    """Unpack ``archive`` into ``target`` after checking every member; return the file names."""
    target.mkdir(parents=True, exist_ok=True)
    root = target.resolve()
    try:
        with tarfile.open(archive, "r:*") as tar:
            members = tar.getmembers()
            if len(members) > max_members:
                raise UnsafeArchive(f"{len(members)} members > {max_members}")
            total = 0
            for member in members:
                name = check_member_name(member.name)
                if not (member.isfile() or member.isdir()):
                    raise UnsafeArchive(f"member {member.name!r} is not a regular file or folder")
                total += member.size
                if total > max_bytes:
                    raise UnsafeArchive(f"content over {max_bytes} bytes")
                if not (root / name).resolve().is_relative_to(root):
                    raise UnsafeArchive(f"member {member.name!r} escapes the target")
            names = []
            for member in members:
                name = check_member_name(member.name)
                dest = root / name
                if member.isdir():
                    dest.mkdir(parents=True, exist_ok=True)
                    continue
                dest.parent.mkdir(parents=True, exist_ok=True)
                src = tar.extractfile(member)
                if src is None:
                    raise UnsafeArchive(f"member {member.name!r} has no data")
                with src, dest.open("wb") as out:
                    while chunk := src.read(1 << 20):
                        out.write(chunk)
                names.append(name)
    except tarfile.TarError as err:
        raise UnsafeArchive(f"{archive} is not a readable tar archive: {err}") from err
    return names
