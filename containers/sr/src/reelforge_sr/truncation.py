"""Tell a file that was cut short from one that is corrupt: walk an MP4/MOV's top-level boxes.

An MP4 is a chain of boxes (4-byte size, 4-byte type; size 1: a 64-bit size follows; size 0: to the
end of the file). A box that claims more bytes than the file holds, or a file with no ``moov`` (the
index, often written last), means the upload ended early, so the message can say how much is missing.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from pathlib import Path

MP4_BRANDS = {b"ftyp", b"styp"}


def _fmt(n: int) -> str:
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} bytes"


def mp4_truncation(path: Path) -> str | None:
    """Why this MP4/MOV file looks cut short (with how much is missing), or ``None`` (not an MP4, or whole)."""
    with path.open("rb") as fh:
        def read(offset: int, n: int) -> bytes:
            fh.seek(offset)
            return fh.read(n)

        return truncation(read, path.stat().st_size)


def truncation(read: Callable[[int, int], bytes], size: int, *, max_boxes: int = 10_000) -> str | None:
    """The same for any byte source: ``read(offset, n)`` (a file, or S3 range requests before a download)."""
    seen: list[bytes] = []
    offset = 0
    while offset + 8 <= size and len(seen) < max_boxes:
        head = read(offset, 16)
        box_size, kind = struct.unpack(">I4s", head[:8])
        if not seen and kind not in MP4_BRANDS:
            return None  # not an ISO media file: nothing to say
        if box_size == 1:
            if len(head) < 16:
                break
            box_size = struct.unpack(">Q", head[8:16])[0]
        elif box_size == 0:
            box_size = size - offset
        seen.append(kind)
        if box_size < 8:
            return None  # garbage, not truncation: let the caller call it corrupt
        if offset + box_size > size:
            missing = offset + box_size - size
            note = "" if b"moov" in seen else "; its index ('moov') is not in the part that arrived"
            return (f"truncated: the file ends at {_fmt(size)} but its '{kind.decode('latin-1')}' box runs "
                    f"{_fmt(missing)} further ({100 * missing / (offset + box_size):.0f}% of the file is missing)"
                    f"{note}; the upload was cut short or is still being written")
        offset += box_size
    if seen and b"moov" not in seen:
        return ("truncated: no 'moov' box (the MP4 index, often written last); the upload was cut short or the "
                "recording was never finalised")
    return None
