"""Selfie preprocessing on the shared face images plus broken inputs; the too-few-faces rejection."""

from __future__ import annotations

import io
import json
import os
import shutil
import struct
import zlib

import pytest
from PIL import Image, ImageOps
from reelforge_avatar.cli import main
from reelforge_avatar.errors import UserError
from reelforge_avatar.faces import decode, detect_faces
from reelforge_avatar.preprocess import preprocess

FACES = ["astronaut.png", "fr_biden.jpg", "fr_biden2.jpg", "fr_obama.jpg", "fr_obama3.jpg", "fr_obama_small.jpg",
         "fr_two_people.jpg"]


def _png_declaring(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width``×``height`` (a decompression-bomb shape) with almost no data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00")) + chunk(b"IEND", b"")


def _exif_rotated(source: bytes) -> bytes:
    """The picture stored rotated 90° with EXIF orientation 6 ("rotate 90° CW to view"): upright once honoured."""
    img = Image.open(io.BytesIO(source)).convert("RGB")
    stored = img.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    buf = io.BytesIO()
    stored.save(buf, format="JPEG", exif=exif.tobytes(), quality=92)
    return buf.getvalue()


@pytest.fixture
def selfies(shared_data, tmp_path):
    """The seven shared face photos, three mirrored copies, an EXIF-rotated one and six bad files."""
    faces = shared_data / "images" / "faces"
    src = tmp_path / "opt" / "ml" / "processing" / "input" / "selfies"
    src.mkdir(parents=True)
    for name in FACES:
        shutil.copy(faces / name, src / name)
    for name in ("astronaut.png", "fr_obama.jpg", "fr_biden2.jpg"):
        ImageOps.mirror(Image.open(faces / name).convert("RGB")).save(src / f"mirrored_{name}.png")
    (src / "rotated_exif.jpg").write_bytes(_exif_rotated((faces / "astronaut.png").read_bytes()))
    (src / "zero.jpg").write_bytes(b"")
    (src / "random.jpg").write_bytes(os.urandom(4096))
    (src / "notes.txt").write_text("these are not the selfies you are looking for")
    (src / "bomb.png").write_bytes(_png_declaring(50_000, 50_000))
    shutil.copy(shared_data / "images" / "anime" / "waifu2x_miku_CC_BY-NC.jpg", src / "no_face.jpg")
    jpeg = (faces / "fr_obama.jpg").read_bytes()
    (src / "truncated.jpg").write_bytes(jpeg[: len(jpeg) // 3])
    return src


def test_exif_orientation_is_what_makes_the_rotated_face_detectable(selfies):
    data = (selfies / "rotated_exif.jpg").read_bytes()
    assert Image.open(io.BytesIO(data)).size == (512, 512)  # square: only the face detector can tell
    raw = Image.open(io.BytesIO(data)).convert("RGB")
    assert detect_faces(raw) == []  # as stored (sideways) the frontal cascade finds nothing
    assert detect_faces(decode(data))  # decoded with exif_transpose it is upright


def test_preprocess_crops_the_largest_face_and_reports_every_rejection(selfies, tmp_path):
    out = tmp_path / "crops"
    report = preprocess(selfies, out, min_faces=10)
    assert report["accepted"] == 11 and report["usable"]
    assert report["rejected_by_reason"] == {"corrupt": 1, "empty": 1, "no_face": 1, "not_image": 2,
                                            "too_large": 1}
    reasons = {item["file"]: item["reason"] for item in report["rejected_files"]}
    assert reasons == {"zero.jpg": "empty", "random.jpg": "not_image", "notes.txt": "not_image",
                       "bomb.png": "too_large", "no_face.jpg": "no_face", "truncated.jpg": "corrupt"}
    accepted = {item["file"]: item for item in report["accepted_files"]}
    assert set(accepted) >= {*FACES, "rotated_exif.jpg"}
    assert accepted["fr_two_people.jpg"]["faces_found"] >= 2
    on_disk = json.loads((out / "report.json").read_text())
    assert on_disk == report
    crops = sorted(out.glob("face_*.png"))
    assert len(crops) == 11
    for crop in crops:
        with Image.open(crop) as img:
            assert img.size == (512, 512) and img.mode == "RGB"
    # the crop is centred on a face: the detector finds one again, large, in the middle
    with Image.open(out / accepted["astronaut.png"]["crop"]) as img:
        face = detect_faces(img.convert("RGB"))[0]
    assert face.w > 150 and abs(face.x + face.w / 2 - 256) < 64 and abs(face.y + face.h / 2 - 256) < 64


def test_two_people_keeps_the_largest_face(selfies, tmp_path):
    img = decode((selfies / "fr_two_people.jpg").read_bytes())
    faces = detect_faces(img)
    assert len(faces) >= 2 and faces[0].area >= faces[1].area


def test_byte_and_pixel_limits(selfies, tmp_path):
    report = preprocess(selfies, tmp_path / "small", min_faces=1, max_bytes=100_000, max_pixels=300_000)
    reasons = {item["file"]: item["reason"] for item in report["rejected_files"]}
    assert reasons["fr_obama3.jpg"] == "too_large"  # 595 kB on disk
    assert reasons["fr_biden2.jpg"] == "too_large"  # 1200x1200 pixels > 300000 (and 270 kB)


def test_too_few_faces_rejects_the_set_with_a_clear_error(selfies, tmp_path):
    out = tmp_path / "crops"
    with pytest.raises(UserError, match=r"only 11 usable face images \(need 12\)"):
        preprocess(selfies, out, min_faces=12)
    report = json.loads((out / "report.json").read_text())
    assert report["usable"] is False and report["accepted"] == 11
    assert not list(out.glob("face_*.png"))  # no half-usable set is left for training


def test_processing_entry_writes_exit_message_and_fails_with_code_2(selfies, tmp_path, monkeypatch):
    opt_ml = selfies.parents[2]
    monkeypatch.setenv("REELFORGE_OPT_ML", str(opt_ml))
    out = opt_ml / "processing" / "output" / "crops"
    assert main(["preprocess", "--min-faces", "10"]) == 0
    assert (out / "report.json").is_file() and len(list(out.glob("face_*.png"))) == 11
    assert "accepted" in (opt_ml / "output" / "message").read_text()
    assert main(["preprocess", "--min-faces", "50", "--output", str(tmp_path / "o2")]) == 2
    assert "need 50" in (opt_ml / "output" / "failure").read_text()
