"""Image decoding, square crops and contact sheets (Pillow)."""

from __future__ import annotations

import io
import math

from PIL import Image, ImageOps, UnidentifiedImageError

#: Refuse decompression bombs: far above any training image, far below what exhausts memory.
Image.MAX_IMAGE_PIXELS = 16384 * 16384


#: Signatures of PNG, JPEG, GIF, BMP and TIFF files: such a file that does not decode is corrupt.
_MAGIC = (b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff", b"GIF8", b"BM", b"II*\x00", b"MM\x00*")


class ImageRejected(Exception):
    """Why a file does not become a training image; ``reason`` is one of the report's counters."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


def decode(data: bytes) -> Image.Image:
    """Fully decode an image (a truncated file fails here, not later in the data loader)."""
    try:
        with Image.open(io.BytesIO(data)) as probe:
            probe.verify()
        img = Image.open(io.BytesIO(data))
        img.load()
    except UnidentifiedImageError as err:
        if data.startswith(_MAGIC) or data[8:12] == b"WEBP":
            raise ImageRejected("corrupt", "image signature but undecodable") from err
        raise ImageRejected("not_image", "not a format Pillow reads") from err
    except Image.DecompressionBombError as err:
        raise ImageRejected("corrupt", f"too many pixels ({err})") from err
    except (OSError, SyntaxError, ValueError, EOFError) as err:
        raise ImageRejected("corrupt", f"{type(err).__name__}: {err}") from err
    return img


def to_rgb(img: Image.Image) -> Image.Image:
    """Upright RGB; transparency is composited over white (dropping alpha leaves black fringes)."""
    img = ImageOps.exif_transpose(img)
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return img.convert("RGB")


def square(img: Image.Image, resolution: int) -> Image.Image:
    """Centre crop to a square, then resize to ``resolution``² (Lanczos)."""
    width, height = img.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    img = img.crop((left, top, left + side, top + side))
    if side != resolution:
        img = img.resize((resolution, resolution), Image.Resampling.LANCZOS)
    return img


def png_bytes(img: Image.Image, compress_level: int = 1) -> bytes:
    """PNG with light compression: the training data loader decodes every image every epoch."""
    buf = io.BytesIO()
    img.save(buf, format="PNG", compress_level=compress_level)
    return buf.getvalue()


def contact_sheet(images: list[Image.Image], *, thumb: int = 128, cols: int | None = None,
                  pad: int = 2) -> Image.Image:
    """A grid of thumbnails on a dark background, row by row in the given order."""
    if not images:
        raise ValueError("a contact sheet needs at least one image")
    cols = cols or math.ceil(math.sqrt(len(images)))
    rows = math.ceil(len(images) / cols)
    sheet = Image.new("RGB", (cols * (thumb + pad) + pad, rows * (thumb + pad) + pad), (24, 24, 24))
    for index, img in enumerate(images):
        tile = img.convert("RGB").resize((thumb, thumb), Image.Resampling.LANCZOS)
        row, col = divmod(index, cols)
        sheet.paste(tile, (pad + col * (thumb + pad), pad + row * (thumb + pad)))
    return sheet
