"""Dataset prep on the shared sample images (plus broken ones) under a temporary /opt/ml."""

from __future__ import annotations

import io
import json
import shutil
import zipfile

import pytest
from PIL import Image
from reelforge_stylegan2.cli import main
from reelforge_stylegan2.prep import prepare_dataset


def _png(size: tuple[int, int], colour=(200, 40, 40, 255), mode: str = "RGBA") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, colour[: len(mode)]).save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture
def image_input(shared_data, opt_ml):
    """Shared anime + face images, a corrupt JPEG, a non-image, a tiny image, a duplicate and a zip."""
    src = opt_ml.processing / "input" / "images"
    src.mkdir(parents=True)
    originals = sorted([*(shared_data / "images" / "anime").iterdir(), *(shared_data / "images" / "faces").iterdir()])
    for path in originals:
        shutil.copy(path, src / path.name)
    jpeg = (shared_data / "images" / "faces" / "fr_obama.jpg").read_bytes()
    (src / "broken.jpg").write_bytes(jpeg[: len(jpeg) // 3])  # cut short: decodes partly, then fails
    (src / "notes.txt").write_text("not an image")
    (src / "icon.png").write_bytes(_png((12, 12)))
    (src / "copy-of-astronaut.png").write_bytes((shared_data / "images" / "faces" / "astronaut.png").read_bytes())
    with zipfile.ZipFile(src / "more.zip", "w") as z:
        z.writestr("nested/transparent.png", _png((80, 60), (10, 200, 10, 0)))
        z.writestr("nested/garbage.png", b"\x89PNG\r\n\x1a\n" + b"\x00" * 50)
    return src, len(originals)


def test_prep_builds_the_stylegan2_dataset_zip_and_reports_skips(image_input, opt_ml):
    src, originals = image_input
    out = opt_ml.processing / "output" / "dataset"
    code = main(["prep", "--input", str(src), "--output", str(out), "--resolution", "64", "--workers", "2"])
    assert code == 0

    report = json.loads((out / "report.json").read_text())
    assert report["accepted"] == originals + 1  # the shared images and the transparent PNG in the zip
    assert report["skipped"] == {"not_image": 1, "corrupt": 2, "tiny": 1, "duplicate": 1}
    reasons = {item["file"]: item["reason"] for item in report["skipped_files"]}
    assert reasons == {"broken.jpg": "corrupt", "more.zip!nested/garbage.png": "corrupt", "notes.txt": "not_image",
                       "icon.png": "tiny", "copy-of-astronaut.png": "duplicate"}
    assert report["sources"] == originals + 6

    with zipfile.ZipFile(out / "dataset.zip") as z:
        names = z.namelist()
        assert json.loads(z.read("dataset.json")) == {"labels": None}
        images = sorted(n for n in names if n.endswith(".png"))
        assert images[0] == "00000/img00000000.png" and len(images) == report["accepted"]
        for name in images:
            img = Image.open(io.BytesIO(z.read(name)))
            assert img.size == (64, 64) and img.mode == "RGB"
        # transparency was composited over white, not left black
        last = Image.open(io.BytesIO(z.read(images[-1])))
        assert last.getpixel((32, 32))[1] > 150 and min(last.getpixel((32, 32))) > 150

    message = (opt_ml.output / "message").read_text()
    assert message.startswith(f"prep: {report['accepted']} images at 64px") and "corrupt 2" in message
    assert not (opt_ml.output / "failure").exists()


def test_prep_is_deterministic(image_input, tmp_path):
    src, _ = image_input
    a = prepare_dataset(src, tmp_path / "a", resolution=32, workers=1)
    b = prepare_dataset(src, tmp_path / "b", resolution=32, workers=2)
    assert a == b
    assert (tmp_path / "a" / "dataset.zip").read_bytes() == (tmp_path / "b" / "dataset.zip").read_bytes()


def test_prep_without_usable_images_fails_with_a_failure_file(opt_ml):
    src = opt_ml.processing / "input" / "images"
    src.mkdir(parents=True)
    (src / "a.txt").write_text("nothing")
    (src / "b.png").write_bytes(_png((8, 8)))
    out = opt_ml.processing / "output" / "dataset"
    assert main(["prep", "--input", str(src), "--output", str(out), "--resolution", "64"]) == 2
    failure = (opt_ml.output / "failure").read_text()
    assert "only 0 usable images" in failure
    assert not (out / "dataset.zip").exists() and not (out / "dataset.zip.partial").exists()
    assert json.loads((out / "report.json").read_text())["skipped"]["tiny"] == 1


def test_prep_refuses_a_resolution_stylegan2_cannot_train(opt_ml, tmp_path):
    assert main(["prep", "--input", str(tmp_path), "--output", str(tmp_path / "o"), "--resolution", "100"]) == 2
    assert "resolution must be one of" in (opt_ml.output / "failure").read_text()
