"""Safe tar packing/unpacking: round trip, and refusal of traversal, absolute, link, device and oversize members."""

from __future__ import annotations

import io
import os
import tarfile

import pytest
from reelforge_avatar.safe_tar import UnsafeArchive, check_member_name, extract, pack


def _tar_with(path, *members: tarfile.TarInfo, data: bytes = b"x") -> None:
    with tarfile.open(path, "w:gz") as tar:
        for info in members:
            tar.addfile(info, io.BytesIO(data) if info.isfile() else None)


def _file(name: str, size: int = 1) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.size = size
    return info


def test_pack_and_extract_round_trip(tmp_path):
    src = tmp_path / "src"
    (src / "m" / "1").mkdir(parents=True)
    (src / "m" / "config.pbtxt").write_text("name: m")
    (src / "m" / "1" / "w.bin").write_bytes(os.urandom(1000))
    names = pack(src, tmp_path / "a.tar.gz")
    assert names == ["m/1/w.bin", "m/config.pbtxt"]
    assert not (tmp_path / "a.tar.gz.partial").exists()
    out = tmp_path / "out"
    assert sorted(extract(tmp_path / "a.tar.gz", out)) == names
    assert (out / "m" / "1" / "w.bin").read_bytes() == (src / "m" / "1" / "w.bin").read_bytes()


@pytest.mark.parametrize("name", ["../evil.txt", "a/../../evil.txt", "/etc/evil", "", "a\\..\\b"])
def test_bad_names_are_refused(name):
    with pytest.raises(UnsafeArchive):
        check_member_name(name)


@pytest.mark.parametrize("name", ["../escape.txt", "/abs/escape.txt", "ok/../../escape.txt"])
def test_extract_refuses_traversal_members_and_writes_nothing(tmp_path, name):
    archive = tmp_path / "bad.tar.gz"
    _tar_with(archive, _file("fine.txt"), _file(name))
    with pytest.raises(UnsafeArchive):
        extract(archive, tmp_path / "out")
    assert not (tmp_path / "escape.txt").exists()
    assert not (tmp_path / "out" / "fine.txt").exists()  # members are all checked before any is written


@pytest.mark.parametrize("kind", [tarfile.SYMTYPE, tarfile.LNKTYPE, tarfile.CHRTYPE, tarfile.FIFOTYPE])
def test_extract_refuses_links_and_devices(tmp_path, kind):
    info = tarfile.TarInfo("thing")
    info.type = kind
    info.linkname = "/etc/passwd"
    archive = tmp_path / "bad.tar.gz"
    _tar_with(archive, info)
    with pytest.raises(UnsafeArchive, match="not a regular file"):
        extract(archive, tmp_path / "out")


def test_extract_enforces_member_count_and_size(tmp_path):
    archive = tmp_path / "many.tar.gz"
    _tar_with(archive, *[_file(f"f{i}") for i in range(5)])
    with pytest.raises(UnsafeArchive, match="members"):
        extract(archive, tmp_path / "o1", max_members=4)
    with pytest.raises(UnsafeArchive, match="bytes"):
        extract(archive, tmp_path / "o2", max_bytes=3)
    assert len(extract(archive, tmp_path / "o3")) == 5


def test_extract_refuses_a_non_tar(tmp_path):
    (tmp_path / "x.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(UnsafeArchive, match="not a readable tar"):
        extract(tmp_path / "x.tar.gz", tmp_path / "out")


def test_pack_refuses_symlinks(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "link").symlink_to("/etc/passwd")
    with pytest.raises(UnsafeArchive, match="not a regular file"):
        pack(src, tmp_path / "a.tar.gz")
    assert not (tmp_path / "a.tar.gz").exists()
