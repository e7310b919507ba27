"""prepare's preflight: real ffprobe reading uploads over presigned URLs from a moto server on loopback."""

from __future__ import annotations

import socket
import struct
import subprocess

import boto3
import pytest
from moto.server import ThreadedMotoServer

from reelforge.sr import preflight as pf
from reelforge.storage import InvalidSourceError, S3Object


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3():
    port = _free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    client = boto3.client("s3", region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{port}",
                          aws_access_key_id="testing", aws_secret_access_key="testing")
    client.create_bucket(Bucket="ingest")
    yield client
    server.stop()


def _ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    d = tmp_path_factory.mktemp("preflight")
    _ffmpeg("-f", "lavfi", "-i", "testsrc=s=64x36:d=1:r=12", "-f", "lavfi", "-i", "sine=duration=1",
            "-c:v", "libx264", "-c:a", "aac", "-shortest", str(d / "good.mp4"))  # moov at the end
    _ffmpeg("-f", "lavfi", "-i", "sine=duration=1", "-c:a", "aac", "-f", "mp4", str(d / "audio.mp4"))
    _ffmpeg("-f", "lavfi", "-i", "testsrc=s=64x36:d=2:r=12", "-c:v", "libvpx-vp9", "-deadline", "realtime",
            str(d / "clip.webm"))
    webm = bytearray((d / "clip.webm").read_bytes())
    i = webm.find(b"\x44\x89\x88")  # Segment Info Duration, 8-byte float: declare 100x the real length
    (value,) = struct.unpack(">d", webm[i + 3:i + 11])
    webm[i + 3:i + 11] = struct.pack(">d", value * 100)
    (d / "long.webm").write_bytes(bytes(webm))
    (d / "random.mp4").write_bytes(bytes(range(256)) * 64)
    good = (d / "good.mp4").read_bytes()
    (d / "cut.mp4").write_bytes(good[: len(good) // 3])  # an upload that stopped a third of the way
    return d


def _upload(s3, path, key: str) -> S3Object:
    s3.put_object(Bucket="ingest", Key=key, Body=path.read_bytes())
    return S3Object("ingest", key, size=path.stat().st_size)


def test_a_good_upload_passes_with_its_packets_counted(s3, media):
    result = pf.preflight(s3, _upload(s3, media / "good.mp4", "in/a film; $(id) 'x'.mp4"))
    assert (result.codec, result.width, result.height, result.packets) == ("h264", 64, 36, 12)
    # the backfill's estimate: 12 frames (1 s at 12 fps) of 64x36 at 0.5 Mpx/s
    assert result.fps == 12 and result.model_seconds(0.5) == pytest.approx(12 * 64 * 36 / 1e6 / 0.5)


def test_large_uploads_are_probed_without_counting(s3, media, monkeypatch):
    monkeypatch.setattr(pf, "COUNT_BYTES", 0)
    result = pf.preflight(s3, _upload(s3, media / "good.mp4", "in/big.mp4"))
    assert result.packets is None and result.width == 64
    assert result.frames() == 12  # estimated from the duration (1 s) and the rate (12 fps)


@pytest.mark.parametrize(("name", "message"), [
    ("random.mp4", r"not a media file or corrupt \(Invalid data"),
    ("cut.mp4", r"truncated: the file ends at .* but its 'mdat' box runs .* further \(\d+% of the file is missing\)"),
    ("audio.mp4", r"no video stream \(streams: audio\)"),
    ("long.webm", r"declared duration 2\d\d\.\d+s is inconsistent with 24 frames"),
])
def test_unusable_uploads_are_refused_with_the_workers_wording(s3, media, name, message):
    source = _upload(s3, media / name, f"in/{name}")
    with pytest.raises(InvalidSourceError, match=message) as err:
        pf.preflight(s3, source)
    assert str(err.value).startswith("s3://ingest/in/")
    assert "Signature" not in str(err.value) and "http" not in str(err.value), "the presigned URL leaked"


def test_size_limits_and_stills_follow_the_worker():
    def info(width: int, height: int, fmt: str = "mov,mp4,m4a,3gp,3g2,mj2") -> dict:
        return {"format": {"format_name": fmt, "duration": "1"},
                "streams": [{"index": 0, "codec_type": "video", "codec_name": "h264", "width": width,
                             "height": height, "r_frame_rate": "24/1", "avg_frame_rate": "24/1"}]}
    with pytest.raises(InvalidSourceError, match="15360x8640, beyond the limit"):
        pf.check_probe(info(15360, 8640), "s3://b/k")
    with pytest.raises(InvalidSourceError, match="a still image"):
        pf.check_probe(info(64, 36, "png_pipe"), "s3://b/k")
    assert pf.check_probe(info(1, 1), "s3://b/k").width == 1


def test_an_unreachable_endpoint_is_retried_not_refused(media):
    dead = boto3.client("s3", region_name="us-east-1", endpoint_url=f"http://127.0.0.1:{_free_port()}",
                        aws_access_key_id="testing", aws_secret_access_key="testing")
    with pytest.raises(pf.PreflightUnavailable, match="could not be read"):
        pf.preflight(dead, S3Object("ingest", "in/x.mp4", size=10), timeout=10)


def test_without_ffprobe_the_check_waits_for_the_cluster(s3, monkeypatch):
    monkeypatch.setenv("REELFORGE_FFPROBE", "/nonexistent/ffprobe")
    assert pf.preflight(s3, S3Object("ingest", "in/x.mp4")) is None


def test_the_rules_are_the_workers():
    """preflight repeats the worker's refusal rules (Airflow does not install the worker): keep them equal."""
    from reelforge_sr import probe as worker

    assert (pf.MAX_SIDE, pf.MAX_PIXELS) == (worker.MAX_SIDE, worker.MAX_PIXELS)
    assert pf.NOT_VIDEO_CODECS == worker.NOT_VIDEO_CODECS
    assert pf.STILL_FORMATS.pattern == worker.STILL_FORMATS.pattern
