"""Colour metadata: what the source says, what we assume when it says nothing, and ffmpeg options."""

from __future__ import annotations

from typing import Any

#: ffprobe ``color_space`` → swscale matrix name (``in_color_matrix``/``out_color_matrix``)
SWS_MATRIX = {"bt709": "bt709", "smpte170m": "smpte170m", "bt470bg": "bt470", "fcc": "fcc",
              "smpte240m": "smpte240m", "bt2020nc": "bt2020", "bt2020c": "bt2020"}


def resolve(video: dict[str, Any]) -> dict[str, Any]:
    """Tags for the output and the matrix for RGB conversion (HD → BT.709, SD → SMPTE 170M when untagged)."""
    hd = video["height"] >= 720 or video["width"] >= 1280
    default = "bt709" if hd else "smpte170m"
    full = video["pix_fmt"].startswith("yuvj")
    chosen = {
        "primaries": video.get("color_primaries") or ("bt709" if hd else "smpte170m"),
        "transfer": video.get("color_transfer") or ("bt709" if hd else "smpte170m"),
        "space": video.get("color_space") or default,
        "range": video.get("color_range") or ("pc" if full else "tv"),
    }
    keys = {"primaries": "color_primaries", "transfer": "color_transfer", "space": "color_space",
            "range": "color_range"}
    chosen["assumed"] = [k for k, src in keys.items() if not video.get(src)]
    if chosen["space"] not in SWS_MATRIX and chosen["space"] != "rgb":
        chosen["assumed"].append(f"matrix {chosen['space']} not supported by swscale: {default} used")
        chosen["space"] = default
    chosen["matrix"] = SWS_MATRIX.get(chosen["space"], default)
    return chosen


def tag_args(colour: dict[str, Any]) -> list[str]:
    """Output options that tag the encoded stream."""
    args = ["-color_primaries", colour["primaries"], "-color_trc", colour["transfer"], "-color_range", colour["range"]]
    if colour["space"] != "rgb":
        args += ["-colorspace", colour["space"]]
    return args
