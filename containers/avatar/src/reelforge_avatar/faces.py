"""Face detection and square crops with OpenCV's Haar cascade (shipped inside ``opencv-python-headless``)."""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

CROP_SIZE = 512
#: Faces are searched on a copy at most this many pixels on its longer side (speed; Haar works at ~30 px faces).
DETECT_MAX_SIDE = 640
MAX_PIXELS = 40_000_000
MAX_BYTES = 30 * 1024 * 1024
CASCADE = "haarcascade_frontalface_default.xml"


class Rejected(Exception):
    """One image is not usable; ``reason`` is a short code for the report."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason, self.detail = reason, detail


@dataclass(frozen=True)
class Face:
    """A face box in the (EXIF-oriented) image's pixels."""

    x: int
    y: int
    w: int
    h: int

    @property
    def area(self) -> int:
        return self.w * self.h


@lru_cache(maxsize=1)
def _cascade() -> cv2.CascadeClassifier:
    path = os.path.join(cv2.data.haarcascades, CASCADE)
    classifier = cv2.CascadeClassifier(path)
    if classifier.empty():
        raise RuntimeError(f"cannot load the face cascade {path}")
    return classifier


def decode(data: bytes, *, max_bytes: int = MAX_BYTES, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Bytes → RGB image with EXIF orientation applied, or :class:`Rejected`."""
    if not data:
        raise Rejected("empty", "zero-byte file")
    if len(data) > max_bytes:
        raise Rejected("too_large", f"{len(data)} bytes > {max_bytes}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if width * height > max_pixels:
                raise Rejected("too_large", f"{width}x{height} pixels > {max_pixels}")
            img.load()
            img = ImageOps.exif_transpose(img)
    except Rejected:
        raise
    except UnidentifiedImageError as err:
        raise Rejected("not_image", str(err)) from err
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
        raise Rejected("too_large", str(err)) from err
    except (OSError, ValueError, SyntaxError) as err:
        raise Rejected("corrupt", str(err)) from err
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(background, rgba)
    return img.convert("RGB")


def detect_faces(img: Image.Image, *, min_face: int = 48) -> list[Face]:
    """Frontal faces in ``img``, largest first (boxes in ``img`` pixels, at least ``min_face`` px)."""
    gray = np.asarray(img.convert("L"))
    scale = min(1.0, DETECT_MAX_SIDE / max(gray.shape))
    if scale < 1.0:
        gray = cv2.resize(gray, (round(gray.shape[1] * scale), round(gray.shape[0] * scale)),
                          interpolation=cv2.INTER_AREA)
    gray = cv2.equalizeHist(gray)
    min_side = max(20, round(min_face * scale))
    boxes = _cascade().detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(min_side, min_side))
    faces = [Face(*(round(int(v) / scale) for v in box)) for box in boxes]
    return sorted(faces, key=lambda f: f.area, reverse=True)


def crop_square(img: Image.Image, face: Face, *, margin: float = 0.6, size: int = CROP_SIZE) -> Image.Image:
    """A square around ``face`` grown by ``margin`` of its size per side, padded where it leaves the image."""
    side = round(max(face.w, face.h) * (1 + 2 * margin))
    cx, cy = face.x + face.w / 2, face.y + face.h / 2
    left, top = round(cx - side / 2), round(cy - side / 2)
    canvas = Image.new("RGB", (side, side), (0, 0, 0))
    box = (max(left, 0), max(top, 0), min(left + side, img.width), min(top + side, img.height))
    canvas.paste(img.crop(box), (box[0] - left, box[1] - top))
    return canvas.resize((size, size), Image.Resampling.LANCZOS)
