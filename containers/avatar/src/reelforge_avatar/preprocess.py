"""Selfie preprocessing: every image → the largest face, cropped with margin and padded to a 512² PNG.

Writes ``face_NNNN.png`` crops and ``report.json`` (accepted and rejected files with reasons, counts) to the
output folder. Fewer than ``min_faces`` usable faces rejects the whole set (:class:`UserError`), after the report
is written so the reason can be shown to the user.
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

from reelforge_avatar.errors import UserError
from reelforge_avatar.faces import CROP_SIZE, MAX_BYTES, MAX_PIXELS, Rejected, crop_square, decode, detect_faces

log = logging.getLogger(__name__)

DEFAULT_MIN_FACES = 10
REPORT = "report.json"


def _process_one(path: Path, *, max_bytes: int, max_pixels: int, min_face: int, margin: float, size: int):
    size_on_disk = path.stat().st_size
    if size_on_disk > max_bytes:
        raise Rejected("too_large", f"{size_on_disk} bytes > {max_bytes}")
    img = decode(path.read_bytes(), max_bytes=max_bytes, max_pixels=max_pixels)
    faces = detect_faces(img, min_face=min_face)
    if not faces:
        raise Rejected("no_face", f"no face found in {img.width}x{img.height}")
    face = faces[0]
    return crop_square(img, face, margin=margin, size=size), face, len(faces)


def preprocess(input_dir: Path, output_dir: Path, *, min_faces: int = DEFAULT_MIN_FACES, size: int = CROP_SIZE,
               margin: float = 0.6, min_face: int = 48, max_bytes: int = MAX_BYTES,
               max_pixels: int = MAX_PIXELS) -> dict:
    """Crop every selfie under ``input_dir`` into ``output_dir``; return the report (also in ``report.json``)."""
    if not input_dir.is_dir():
        raise UserError(f"input folder {input_dir} does not exist")
    if min_faces < 1:
        raise UserError(f"min_faces must be at least 1, not {min_faces}")
    output_dir.mkdir(parents=True, exist_ok=True)
    accepted: list[dict] = []
    rejected: list[dict] = []
    for path in sorted(p for p in input_dir.rglob("*") if p.is_file() or p.is_symlink()):
        rel = path.relative_to(input_dir).as_posix()
        if path.is_symlink():
            rejected.append({"file": rel, "reason": "not_regular", "detail": "symbolic link"})
            continue
        try:
            crop, face, count = _process_one(path, max_bytes=max_bytes, max_pixels=max_pixels, min_face=min_face,
                                             margin=margin, size=size)
        except Rejected as err:
            rejected.append({"file": rel, "reason": err.reason, "detail": err.detail})
            log.warning("rejected %s: %s (%s)", rel, err.reason, err.detail)
            continue
        name = f"face_{len(accepted):04d}.png"
        crop.save(output_dir / name, format="PNG")
        accepted.append({"file": rel, "crop": name, "face": [face.x, face.y, face.w, face.h], "faces_found": count})
    counts = Counter(item["reason"] for item in rejected)
    report = {
        "sources": len(accepted) + len(rejected),
        "accepted": len(accepted),
        "rejected": len(rejected),
        "rejected_by_reason": dict(sorted(counts.items())),
        "min_faces": min_faces,
        "crop_size": size,
        "usable": len(accepted) >= min_faces,
        "accepted_files": accepted,
        "rejected_files": rejected,
    }
    (output_dir / REPORT).write_text(json.dumps(report, indent=2))
    if not report["usable"]:
        for item in accepted:
            (output_dir / item["crop"]).unlink()
        raise UserError(f"only {len(accepted)} usable face images (need {min_faces}); "
                        f"rejected: {dict(counts) or 'none'}; see {REPORT}")
    log.info("preprocess: %d faces, %d rejected %s", len(accepted), len(rejected), dict(counts))
    return report
