"""Look inside an upload before any cluster time is spent: ffprobe reads its headers over a presigned URL.

ffprobe fetches only what it needs (the container header, the MP4 index wherever it lies) with HTTP
range requests, so a 50 GB master costs a few requests. Files up to ``COUNT_BYTES`` are read whole
and their video packets counted, which catches a declared duration that the frames do not back up. The rules
and messages are the worker's (``reelforge_sr.probe``); the worker still probes fully on the cluster. An MP4
cut short is told apart from a corrupt one by the worker's own box walk (``reelforge_sr.truncation``, over
S3 range requests: a few bytes per top-level box).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from reelforge.storage import InvalidSourceError, S3Object
from reelforge_sr.truncation import truncation

log = logging.getLogger(__name__)

MAX_SIDE = int(os.environ.get("REELFORGE_MAX_SIDE", "8192"))
MAX_PIXELS = int(os.environ.get("REELFORGE_MAX_PIXELS", str(36_000_000)))
COUNT_BYTES = int(os.environ.get("REELFORGE_SR_PREFLIGHT_COUNT_BYTES", str(64 << 20)))
NOT_VIDEO_CODECS = {"ansi", "bintext", "xbin", "idf", "tty"}
STILL_FORMATS = re.compile(r"(_pipe$|^image2$|^gif$|^apng$)")
#: ffprobe messages that mean the endpoint, not the file, is at fault: retry instead of refusing
UNREACHABLE = re.compile(r"Server returned [45]\d\d|Connection (refused|reset|timed out)|timed out|"
                         r"Failed to resolve|Network is unreachable|End of file while parsing HTTP", re.I)


class PreflightUnavailable(RuntimeError):
    """The object could not be read (network, permissions): retry; it says nothing about the file."""


@dataclass(frozen=True)
class Preflight:
    codec: str
    width: int
    height: int
    duration: float | None
    packets: int | None
    fps: float | None = None

    def frames(self) -> int | None:
        """Frames counted (small files), else estimated from the duration and the rate."""
        if self.packets is not None:
            return self.packets
        return round(self.duration * self.fps) if self.duration and self.fps else None

    def model_seconds(self, mpix_per_second: float) -> float | None:
        """Model time at ``mpix_per_second`` input megapixels per second (the cluster's calibrated rate)."""
        frames = self.frames()
        return None if frames is None else frames * self.width * self.height / 1e6 / max(mpix_per_second, 1e-9)


def _rate(text: str | None) -> Fraction | None:
    try:
        value = Fraction(text or "")
    except (ValueError, ZeroDivisionError):
        return None
    return value if value > 0 else None


def _float(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def ffprobe_url(url: str, *args: str, uri: str, timeout: float) -> dict[str, Any]:
    """ffprobe's JSON for ``url``; the URL (it carries a signature) never reaches an error message."""
    ffprobe = os.environ.get("REELFORGE_FFPROBE", "ffprobe")
    argv = [ffprobe, "-v", "error", "-rw_timeout", str(int(timeout * 1e6)), "-of", "json", *args, "-i", url]
    try:
        proc = subprocess.run(argv, capture_output=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as err:
        raise PreflightUnavailable(f"ffprobe of {uri} did not finish within {timeout:.0f}s") from err
    stderr = proc.stderr.decode(errors="replace").replace(url, "<object>").strip()
    if proc.returncode != 0:
        if UNREACHABLE.search(stderr):
            raise PreflightUnavailable(f"{uri} could not be read: {stderr.splitlines()[-1]}")
        detail = stderr.splitlines()[-1] if stderr else f"ffprobe exit {proc.returncode}"
        raise InvalidSourceError(f"{uri}: not a media file or corrupt ({detail.removeprefix('<object>: ')})")
    return json.loads(proc.stdout or b"{}")


def check_probe(info: dict[str, Any], uri: str) -> Preflight:
    """Apply the worker's refusal rules to ffprobe output; raise :class:`InvalidSourceError` with its wording.

    Where ffprobe counted packets (``nb_read_packets``), the declared duration must match them.
    """
    fmt, streams = info.get("format") or {}, info.get("streams") or []
    if not fmt or not streams:
        raise InvalidSourceError(f"{uri}: not a media file or corrupt (ffprobe found no streams)")
    videos = [s for s in streams if s.get("codec_type") == "video"
              and not (s.get("disposition") or {}).get("attached_pic") and s.get("codec_name") not in NOT_VIDEO_CODECS]
    if not videos:
        kinds = sorted({s.get("codec_type", "?") for s in streams})
        raise InvalidSourceError(f"{uri}: no video stream (streams: {', '.join(kinds)})")
    if STILL_FORMATS.search(fmt.get("format_name", "")):
        raise InvalidSourceError(f"{uri}: a still image ({fmt.get('format_name')}), not a video")
    v = videos[0]
    width, height = int(v.get("width") or 0), int(v.get("height") or 0)
    if width <= 0 or height <= 0:
        raise InvalidSourceError(f"{uri}: video stream has no valid size ({width}x{height})")
    if max(width, height) > MAX_SIDE or width * height > MAX_PIXELS:
        raise InvalidSourceError(f"{uri}: video is {width}x{height}, beyond the limit ({MAX_SIDE} px per side, "
                                 f"{MAX_PIXELS / 1e6:.0f} Mpx)")
    r_rate, avg_rate = _rate(v.get("r_frame_rate")), _rate(v.get("avg_frame_rate"))
    if not r_rate and not avg_rate:
        raise InvalidSourceError(f"{uri}: the video stream has no frame rate")
    duration = _float(v.get("duration")) or _float(fmt.get("duration"))
    vfr = bool(r_rate and avg_rate and abs(r_rate - avg_rate) / r_rate > Fraction(1, 100))
    fps = avg_rate if (vfr or not r_rate or r_rate > 240) and avg_rate else r_rate
    packets = int(v["nb_read_packets"]) if str(v.get("nb_read_packets", "")).isdigit() else None
    if packets is not None and fps and duration:
        if packets <= 0:
            raise InvalidSourceError(f"{uri}: the video stream has no frames")
        frames_s = float(packets / fps)
        if abs(duration - frames_s) > max(2.0, 0.25 * max(duration, frames_s)):
            raise InvalidSourceError(f"{uri}: declared duration {duration:.3f}s is inconsistent with {packets} frames "
                                     f"at {float(fps):g} fps ({frames_s:.3f}s): corrupt or damaged file")
    return Preflight(str(v.get("codec_name")), width, height, duration, packets, float(fps) if fps else None)


def _read_range(s3_client: Any, params: dict[str, str], offset: int, n: int) -> bytes:
    try:
        return s3_client.get_object(**params, Range=f"bytes={offset}-{offset + n - 1}")["Body"].read()
    except Exception as err:  # botocore's errors: network, permissions; they say nothing about the file
        raise PreflightUnavailable(f"s3://{params['Bucket']}/{params['Key']} could not be read at byte {offset}: "
                                   f"{type(err).__name__}") from err


def preflight(s3_client: Any, source: S3Object, *, timeout: float = 120) -> Preflight | None:
    """Refuse an upload that cannot be a usable video, reading it where it lies (no download, no Slurm).

    Returns ``None`` when this Airflow worker has no ffprobe: plan_segments then checks it on the cluster.
    """
    if shutil.which(os.environ.get("REELFORGE_FFPROBE", "ffprobe")) is None:
        log.warning("ffprobe is not installed on this Airflow worker: content checks wait for plan_segments")
        return None
    params = {"Bucket": source.bucket, "Key": source.key}
    if source.version_id:
        params["VersionId"] = source.version_id
    if source.size and (cut := truncation(lambda at, n: _read_range(s3_client, params, at, n), source.size,
                                          max_boxes=64)):
        raise InvalidSourceError(f"{source.uri}: {cut}")
    url = s3_client.generate_presigned_url("get_object", Params=params, ExpiresIn=int(timeout) + 300)
    # small files are read whole to count their packets; large ones only where ffprobe needs to look
    count = source.size is not None and source.size <= COUNT_BYTES
    args = ["-count_packets"] if count else []
    info = ffprobe_url(url, *args, "-show_format", "-show_streams", uri=source.uri, timeout=timeout)
    result = check_probe(info, source.uri)
    log.info("preflight %s: %s %dx%d, %s s, %s packets", source.uri, result.codec, result.width, result.height,
             result.duration, result.packets)
    return result
