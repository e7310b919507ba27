"""Facts about a source video from ffprobe, with clear errors for inputs we cannot process."""

from __future__ import annotations

import os
import re
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

from reelforge_sr.errors import ProbeError, ReelForgeError
from reelforge_sr.ffmpeg_cli import FFMPEG, FFPROBE, ffprobe_json, run
from reelforge_sr.truncation import mp4_truncation

MAX_SIDE = int(os.environ.get("REELFORGE_MAX_SIDE", "8192"))
MAX_PIXELS = int(os.environ.get("REELFORGE_MAX_PIXELS", str(36_000_000)))
INTERLACED_ORDERS = {"tt", "bb", "tb", "bt"}
TEXT_SUBTITLES = {"subrip", "srt", "ass", "ssa", "mov_text", "webvtt", "text", "microdvd", "subviewer", "jacosub",
                  "realtext", "sami", "stl", "mpl2", "pjs", "vplayer", "subviewer1", "eia_608", "ttml"}
NOT_VIDEO_CODECS = {"ansi", "bintext", "xbin", "idf", "tty"}
STILL_FORMATS = re.compile(r"(_pipe$|^image2$|^gif$|^apng$)")


@dataclass
class AudioStream:
    index: int
    codec: str
    channels: int | None
    channel_layout: str | None
    sample_rate: int | None
    language: str | None
    title: str | None
    duration: float | None
    default: bool


@dataclass
class SubtitleStream:
    index: int
    codec: str
    language: str | None
    title: str | None
    text_based: bool
    default: bool


@dataclass
class Chapter:
    start: float
    end: float
    title: str | None


@dataclass
class VideoInfo:
    index: int
    codec: str
    width: int  # stored (coded) size
    height: int
    display_width: int  # after rotation, before SAR
    display_height: int
    sar: str  # "1:1" when absent
    dar: str
    fps: str  # exact rational used for output timing
    r_frame_rate: str
    avg_frame_rate: str
    vfr: bool
    field_order: str
    interlaced: bool
    rotation: int  # display matrix rotation, degrees mod 360 (90/270: decoded frames are transposed)
    color_primaries: str | None
    color_transfer: str | None
    color_space: str | None
    color_range: str | None
    pix_fmt: str
    bit_depth: int
    frame_count: int
    frame_count_method: str  # "nb_frames" | "decoded"
    duration: float
    start_time: float


@dataclass
class ProbeResult:
    path: str
    size_bytes: int
    format_name: str
    duration: float
    start_time: float
    bit_rate: int | None
    video: VideoInfo
    audio: list[AudioStream] = field(default_factory=list)
    subtitles: list[SubtitleStream] = field(default_factory=list)
    chapters: list[Chapter] = field(default_factory=list)
    attachments: int = 0
    data_streams: int = 0
    warnings: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ProbeResult:
        d = dict(d)
        d["video"] = VideoInfo(**d["video"])
        d["audio"] = [AudioStream(**a) for a in d.get("audio", [])]
        d["subtitles"] = [SubtitleStream(**s) for s in d.get("subtitles", [])]
        d["chapters"] = [Chapter(**c) for c in d.get("chapters", [])]
        return cls(**d)


def parse_rate(text: str | None) -> Fraction | None:
    """``"24000/1001"`` → Fraction; None for missing/zero rates."""
    if not text or text in {"0/0", "N/A"}:
        return None
    try:
        value = Fraction(text)
    except (ValueError, ZeroDivisionError):
        return None
    return value if value > 0 else None


def rate_str(value: Fraction) -> str:
    return f"{value.numerator}/{value.denominator}"


def bit_depth(pix_fmt: str, bits_per_raw_sample: str | None = None) -> int:
    """Bits per component from a pixel format name (``yuv420p10le`` → 10, ``rgb48le`` → 16)."""
    m = re.search(r"(\d+)(le|be)$", pix_fmt)
    if m:
        n = int(m.group(1))
        return 16 if n > 16 else n
    if bits_per_raw_sample and bits_per_raw_sample.isdigit():
        return int(bits_per_raw_sample)
    return 8


def _float(value: Any, default: float | None = None) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def _rotation(stream: dict[str, Any]) -> int:
    """Display-matrix rotation as ffprobe reports it, mod 360 (or the legacy ``rotate`` tag)."""
    for side in stream.get("side_data_list", []) or []:
        if "rotation" in side:
            return int(round(float(side["rotation"]))) % 360
    rotate = (stream.get("tags") or {}).get("rotate")
    return int(rotate) % 360 if rotate and rotate.lstrip("-").isdigit() else 0


def count_frames_by_decoding(path: Path, stream_index: int) -> int:
    """Decode the video stream and count frames (for containers without ``nb_frames``, e.g. WebM)."""
    out = ffprobe_json(path, "-select_streams", str(stream_index), "-count_frames",
                       "-show_entries", "stream=nb_read_frames")
    streams = out.get("streams") or [{}]
    value = streams[0].get("nb_read_frames")
    if not value or not str(value).isdigit():
        raise ProbeError(f"{path}: could not count the frames of stream {stream_index} by decoding")
    return int(value)


def _check_first_frame(path: Path, stream_index: int) -> None:
    try:
        run([FFMPEG, "-v", "error", "-xerror", "-i", str(path), "-map", f"0:{stream_index}", "-frames:v", "1",
             "-f", "null", "-"], what="decode check", timeout=120)
    except ReelForgeError as exc:
        raise ProbeError(f"{path}: the first video frame cannot be decoded ({exc})") from exc


def probe(path: str | Path, *, max_side: int = MAX_SIDE, max_pixels: int = MAX_PIXELS,
          count_frames: bool = True, check_decode: bool = True) -> ProbeResult:
    """Probe ``path``; raise :class:`ProbeError` with a clear message if it is not a usable video."""
    path = Path(path).resolve()
    if not path.exists():
        raise ProbeError(f"{path}: no such file")
    if not path.is_file():
        raise ProbeError(f"{path}: not a regular file")
    size = path.stat().st_size
    if size == 0:
        raise ProbeError(f"{path}: the file is empty (0 bytes)")
    if (cut := mp4_truncation(path)) is not None:
        raise ProbeError(f"{path}: {cut}")
    try:
        info = ffprobe_json(path, "-show_format", "-show_streams", "-show_chapters")
    except ReelForgeError as exc:
        raise ProbeError(f"{path}: not a media file or corrupt ({exc})") from exc
    fmt = info.get("format") or {}
    streams = info.get("streams") or []
    if not fmt or not streams:
        raise ProbeError(f"{path}: not a media file or corrupt (ffprobe found no streams)")
    videos = [s for s in streams if s.get("codec_type") == "video"
              and not (s.get("disposition") or {}).get("attached_pic")
              and s.get("codec_name") not in NOT_VIDEO_CODECS]
    if not videos:
        kinds = sorted({s.get("codec_type", "?") for s in streams})
        raise ProbeError(f"{path}: no video stream (streams: {', '.join(kinds)})")
    format_name = fmt.get("format_name", "")
    if STILL_FORMATS.search(format_name):
        raise ProbeError(f"{path}: a still image ({format_name}), not a video")
    v = videos[0]
    warnings: list[str] = []
    if len(videos) > 1:
        warnings.append(f"{len(videos)} video streams: only stream {v['index']} is upscaled")

    width, height = int(v.get("width") or 0), int(v.get("height") or 0)
    if width <= 0 or height <= 0:
        raise ProbeError(f"{path}: video stream has no valid size ({width}x{height})")
    if max(width, height) > max_side or width * height > max_pixels:
        raise ProbeError(f"{path}: video is {width}x{height}, beyond the limit ({max_side} px per side, "
                         f"{max_pixels / 1e6:.0f} Mpx)")
    rotation = _rotation(v)
    dw, dh = (height, width) if rotation in (90, 270) else (width, height)
    sar = v.get("sample_aspect_ratio") or "1:1"
    if sar in {"0:1", "N/A"}:
        sar = "1:1"
    if rotation in (90, 270):
        num, _, den = sar.partition(":")
        sar = f"{den}:{num}"
    sar_f = Fraction(int(sar.split(":")[0]), int(sar.split(":")[1]))
    dar_f = Fraction(dw, dh) * sar_f

    r_rate, avg_rate = parse_rate(v.get("r_frame_rate")), parse_rate(v.get("avg_frame_rate"))
    if not r_rate and not avg_rate:
        raise ProbeError(f"{path}: the video stream has no frame rate")
    vfr = bool(r_rate and avg_rate and abs(r_rate - avg_rate) / r_rate > Fraction(1, 100))
    fps = avg_rate if (vfr or not r_rate or r_rate > 240) and avg_rate else r_rate
    assert fps is not None

    field_order = v.get("field_order") or "unknown"
    pix_fmt = v.get("pix_fmt") or "unknown"
    if pix_fmt == "unknown":
        raise ProbeError(f"{path}: the video stream has no known pixel format (unsupported codec?)")

    fmt_duration = _float(fmt.get("duration"))
    v_duration = _float(v.get("duration")) or fmt_duration
    nb_frames = v.get("nb_frames")
    if nb_frames and str(nb_frames).isdigit() and int(nb_frames) > 0:
        frame_count, method = int(nb_frames), "nb_frames"
    elif count_frames:
        frame_count, method = count_frames_by_decoding(path, int(v["index"])), "decoded"
    else:
        frame_count, method = round((v_duration or 0) * fps), "estimated"
    if frame_count <= 0:
        raise ProbeError(f"{path}: the video stream has no frames")
    frames_duration = float(frame_count / fps)
    if v_duration is None:
        v_duration = frames_duration
        warnings.append("no declared duration: using frame count / fps")
    elif abs(v_duration - frames_duration) > max(2.0, 0.25 * max(v_duration, frames_duration)):
        raise ProbeError(f"{path}: declared duration {v_duration:.3f}s is inconsistent with {frame_count} frames at "
                         f"{rate_str(fps)} fps ({frames_duration:.3f}s): corrupt or damaged file")
    if check_decode:
        _check_first_frame(path, int(v["index"]))

    def lang(s: dict) -> str | None:
        return (s.get("tags") or {}).get("language")

    def title(s: dict) -> str | None:
        return (s.get("tags") or {}).get("title")

    def default(s: dict) -> bool:
        return bool((s.get("disposition") or {}).get("default"))

    audio = [AudioStream(int(s["index"]), s.get("codec_name", "unknown"), s.get("channels"), s.get("channel_layout"),
                         int(s["sample_rate"]) if str(s.get("sample_rate", "")).isdigit() else None, lang(s), title(s),
                         _float(s.get("duration")), default(s))
             for s in streams if s.get("codec_type") == "audio"]
    subs = [SubtitleStream(int(s["index"]), s.get("codec_name", "unknown"), lang(s), title(s),
                           s.get("codec_name") in TEXT_SUBTITLES, default(s))
            for s in streams if s.get("codec_type") == "subtitle"]
    chapters = [Chapter(float(c["start_time"]), float(c["end_time"]), (c.get("tags") or {}).get("title"))
                for c in info.get("chapters") or []]
    if vfr:
        warnings.append(f"variable frame rate (r_frame_rate {v.get('r_frame_rate')} vs avg {v.get('avg_frame_rate')}):"
                        f" every frame keeps its source time; segments are sized at {rate_str(fps)} fps")
    video = VideoInfo(
        index=int(v["index"]), codec=v.get("codec_name", "unknown"), width=width, height=height,
        display_width=dw, display_height=dh, sar=sar, dar=f"{dar_f.numerator}:{dar_f.denominator}",
        fps=rate_str(fps), r_frame_rate=v.get("r_frame_rate", "0/0"), avg_frame_rate=v.get("avg_frame_rate", "0/0"),
        vfr=vfr, field_order=field_order, interlaced=field_order in INTERLACED_ORDERS, rotation=rotation,
        color_primaries=_known(v.get("color_primaries")), color_transfer=_known(v.get("color_transfer")),
        color_space=_known(v.get("color_space")), color_range=_known(v.get("color_range")),
        pix_fmt=pix_fmt, bit_depth=bit_depth(pix_fmt, v.get("bits_per_raw_sample")),
        frame_count=frame_count, frame_count_method=method, duration=float(v_duration),
        start_time=_float(v.get("start_time"), 0.0) or 0.0,
    )
    return ProbeResult(
        path=str(path), size_bytes=size, format_name=format_name, duration=fmt_duration or float(v_duration),
        start_time=_float(fmt.get("start_time"), 0.0) or 0.0,
        bit_rate=int(fmt["bit_rate"]) if str(fmt.get("bit_rate", "")).isdigit() else None,
        video=video, audio=audio, subtitles=subs, chapters=chapters,
        attachments=sum(1 for s in streams if s.get("codec_type") == "attachment"),
        data_streams=sum(1 for s in streams if s.get("codec_type") == "data"), warnings=warnings,
    )


def _known(value: str | None) -> str | None:
    return None if value in (None, "", "unknown", "unspecified", "reserved") else value


__all__ = ["FFPROBE", "ProbeResult", "probe"]
