"""Training-data manifests: Moore-AnimateAnyone's meta format, validated before any cluster time.

A manifest is JSON: a list of ``{"video_path": ..., "kps_path": ...}`` (the output of Moore's
``tools/extract_meta_info.py``; paths as the cluster sees them, e.g. on FSx), or an object with such
a list under ``"entries"``.
"""

from __future__ import annotations

import json
from typing import Any

from reelforge.storage import InvalidSourceError

REQUIRED = ("video_path", "kps_path")


def parse_manifest(data: bytes, uri: str = "manifest") -> list[dict[str, Any]]:
    try:
        doc = json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InvalidSourceError(f"{uri} is not a JSON manifest: {err}") from err
    entries = doc.get("entries") if isinstance(doc, dict) else doc
    if not isinstance(entries, list) or not entries:
        raise InvalidSourceError(f"{uri}: expected a non-empty list of entries (or {{\"entries\": [...]}})")
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise InvalidSourceError(f"{uri}: entry {i} is not an object")
        for field in REQUIRED:
            value = entry.get(field)
            if not isinstance(value, str) or not value.strip() or "\x00" in value:
                raise InvalidSourceError(f"{uri}: entry {i} lacks a {field!r} path")
    return entries
