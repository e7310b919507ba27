"""Dataset prep: a folder of images (and zip archives of images) → StyleGAN2-ADA's dataset zip.

Output, in the layout ``dataset_tool.py`` writes and ``training.dataset.ImageFolderDataset`` reads:

* ``dataset.zip`` — ``00000/img00000000.png`` … (square RGB PNGs, all ``resolution``²) and
  ``dataset.json`` (``{"labels": null}``: unconditional);
* ``report.json`` — how many sources were seen, accepted and skipped (per reason), and each skipped
  file with why. Reasons: ``not_image``, ``corrupt``, ``tiny`` (shorter side below ``min_size``),
  ``duplicate`` (same bytes as an earlier file).

Files are visited in sorted order and the zip carries fixed timestamps: the same input gives the same
bytes, so a re-run of a prep job is a no-op for anything downstream that hashes it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import multiprocessing
import os
import zipfile
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

from reelforge_stylegan2.images import ImageRejected, decode, png_bytes, square, to_rgb
from reelforge_stylegan2.sm import UserError

log = logging.getLogger(__name__)

RESOLUTIONS = (32, 64, 128, 256, 512, 1024)
REASONS = ("not_image", "corrupt", "tiny", "duplicate")
_FIXED_TIME = (1980, 1, 1, 0, 0, 0)
_MAX_MEMBER_BYTES = 256 * 1024 * 1024


def iter_sources(input_dir: Path) -> Iterator[tuple[str, bytes | None, str]]:
    """``(name, bytes, error)`` for every file under ``input_dir``, zip members included, sorted."""
    for path in sorted(p for p in input_dir.rglob("*") if p.is_file()):
        rel = path.relative_to(input_dir).as_posix()
        if path.suffix.lower() == ".zip" and zipfile.is_zipfile(path):
            try:
                with zipfile.ZipFile(path) as archive:
                    for info in sorted(archive.infolist(), key=lambda i: i.filename):
                        if info.is_dir():
                            continue
                        name = f"{rel}!{info.filename}"
                        if info.file_size > _MAX_MEMBER_BYTES:
                            yield name, None, f"corrupt: member of {info.file_size} bytes"
                            continue
                        try:
                            yield name, archive.read(info), ""
                        except (zipfile.BadZipFile, OSError, ValueError) as err:
                            yield name, None, f"corrupt: {err}"
            except (zipfile.BadZipFile, OSError) as err:
                yield rel, None, f"corrupt: unreadable zip ({err})"
            continue
        yield rel, path.read_bytes(), ""


def _convert(job: tuple[str, bytes, int, int]) -> tuple[str, bytes | None, str, str]:
    """Worker: source bytes → ``(name, png, reason, detail)``; png is None when rejected."""
    name, data, resolution, min_size = job
    try:
        img = decode(data)
        if min(img.size) < min_size:
            raise ImageRejected("tiny", f"{img.size[0]}x{img.size[1]} < {min_size} px")
        return name, png_bytes(square(to_rgb(img), resolution)), "", ""
    except ImageRejected as err:
        return name, None, err.reason, err.detail


def _jobs(input_dir: Path, resolution: int, min_size: int, skipped: list[dict], seen: dict[str, str]):
    for name, data, error in iter_sources(input_dir):
        if data is None:
            reason, _, detail = error.partition(": ")
            skipped.append({"file": name, "reason": reason, "detail": detail})
            continue
        digest = hashlib.sha256(data).hexdigest()
        if digest in seen:
            skipped.append({"file": name, "reason": "duplicate", "detail": f"same bytes as {seen[digest]}"})
            continue
        seen[digest] = name
        yield name, data, resolution, min_size


def prepare_dataset(input_dir: Path, output_dir: Path, *, resolution: int, min_size: int | None = None,
                    min_images: int = 1, workers: int = 1) -> dict:
    """Build ``dataset.zip`` and ``report.json`` in ``output_dir``; return the report."""
    if resolution not in RESOLUTIONS:
        raise UserError(f"resolution must be one of {RESOLUTIONS}, not {resolution}")
    if not input_dir.is_dir():
        raise UserError(f"input folder {input_dir} does not exist")
    min_size = resolution // 2 if min_size is None else min_size
    output_dir.mkdir(parents=True, exist_ok=True)
    zip_path, partial = output_dir / "dataset.zip", output_dir / "dataset.zip.partial"

    skipped: list[dict] = []
    seen: dict[str, str] = {}
    accepted = 0
    jobs = _jobs(input_dir, resolution, min_size, skipped, seen)
    pool = multiprocessing.Pool(workers) if workers > 1 else None
    try:
        results = pool.imap(_convert, jobs, chunksize=16) if pool else map(_convert, jobs)
        with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED) as archive:
            for name, png, reason, detail in results:
                if png is None:
                    skipped.append({"file": name, "reason": reason, "detail": detail})
                    continue
                index = f"{accepted:08d}"
                info = zipfile.ZipInfo(f"{index[:5]}/img{index}.png", date_time=_FIXED_TIME)
                archive.writestr(info, png)
                accepted += 1
            archive.writestr(zipfile.ZipInfo("dataset.json", date_time=_FIXED_TIME), json.dumps({"labels": None}))
    finally:
        if pool:
            pool.close()
            pool.join()

    counts = Counter(item["reason"] for item in skipped)
    report = {
        "resolution": resolution,
        "min_size": min_size,
        "sources": accepted + len(skipped),
        "accepted": accepted,
        "skipped": {reason: counts.get(reason, 0) for reason in REASONS},
        "skipped_files": sorted(skipped, key=lambda item: item["file"]),
        "dataset": "dataset.zip",
    }
    (output_dir / "report.json").write_text(json.dumps(report, indent=2))
    for item in report["skipped_files"]:
        log.warning("skipped %s: %s (%s)", item["file"], item["reason"], item["detail"])
    if accepted < min_images:
        partial.unlink()
        raise UserError(f"only {accepted} usable images in {input_dir} (need {min_images}); see report.json")
    os.replace(partial, zip_path)
    log.info("dataset: %d images at %dpx, %d skipped %s", accepted, resolution, len(skipped), dict(counts))
    return report


def summary(report: dict) -> str:
    """One line for the processing job's ExitMessage."""
    skipped = ", ".join(f"{k} {v}" for k, v in report["skipped"].items() if v) or "none"
    return f"prep: {report['accepted']} images at {report['resolution']}px; skipped: {skipped}"
