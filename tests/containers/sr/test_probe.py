"""ffprobe facts and clear errors for inputs the worker cannot process."""

from __future__ import annotations

import json
import os
import struct

import pytest

from reelforge_sr.cli import main
from reelforge_sr.errors import ProbeError
from reelforge_sr.probe import probe

from .conftest import ffmpeg


def test_probe_facts_of_a_clip_with_two_audio_streams_subtitles_and_chapters(clips):
    p = probe(clips["av"])
    v = p.video
    assert (v.width, v.height, v.fps, v.vfr) == (64, 36, "24000/1001", False)
    assert (v.frame_count, v.frame_count_method) == (36, "nb_frames")
    assert v.sar == "1:1" and v.dar == "16:9" and v.pix_fmt == "yuv420p" and v.bit_depth == 8
    assert v.interlaced is False and v.rotation == 0
    assert [a.codec for a in p.audio] == ["aac", "mp3"] and [a.language for a in p.audio] == ["eng", "fra"]
    assert [(s.codec, s.text_based) for s in p.subtitles] == [("mov_text", True)]
    assert [c.title for c in p.chapters] == ["One", "Two"]
    assert abs(v.duration - 36 * 1001 / 24000) < 1e-3


def test_webm_frames_are_counted_by_decoding(clips):
    v = probe(clips["clip"]).video
    assert (v.frame_count, v.frame_count_method, v.codec) == (24, "decoded", "vp8")


def test_interlaced_anamorphic_and_ten_bit_are_reported(clips):
    inter = probe(clips["interlaced"]).video
    assert inter.interlaced and inter.field_order in {"tt", "tb"}
    ana = probe(clips["anamorphic10"]).video
    assert (ana.sar, ana.dar, ana.bit_depth, ana.pix_fmt) == ("4:3", "16:9", 10, "yuv420p10le")


def test_rotation_from_the_display_matrix(clips, tmp_path):
    rotated = tmp_path / "rotated.mp4"
    ffmpeg("-i", str(clips["av"]), "-map", "0:v", "-c", "copy", "-metadata:s:v:0", "rotate=90", str(rotated))
    v = probe(rotated).video
    assert v.rotation in (90, 270) and (v.display_width, v.display_height) == (36, 64)


def test_cli_probe_prints_json(clips, capsys):
    assert main(["probe", str(clips["av"])]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["video"]["fps"] == "24000/1001" and len(out["audio"]) == 2 and len(out["chapters"]) == 2


def test_zero_byte_file(tmp_path):
    empty = tmp_path / "empty.mp4"
    empty.touch()
    with pytest.raises(ProbeError, match=r"empty \(0 bytes\)"):
        probe(empty)


@pytest.mark.parametrize("kind", ["random", "text"])
def test_corrupt_or_not_media(kind, clips, tmp_path):
    bad = tmp_path / f"{kind}.mp4"
    if kind == "random":
        bad.write_bytes(os.urandom(20000))
    else:
        bad.write_text("this is a text file, not a video\n" * 50)
    with pytest.raises(ProbeError, match="not a media file or corrupt"):
        probe(bad)


def test_an_mp4_cut_short_is_called_truncated_with_how_much_is_missing(clips, tmp_path):
    whole = clips["av"].read_bytes()
    assert whole.find(b"moov") > whole.find(b"mdat")  # as ffmpeg writes it: the index last
    cut = tmp_path / "cut.mp4"
    cut.write_bytes(whole[: len(whole) // 3])  # an upload that stopped a third of the way
    with pytest.raises(ProbeError, match=r"truncated: .*'mdat' box runs .* further \(\d+% of the file is missing\); "
                                         r"its index \('moov'\) is not in the part"):
        probe(cut)
    # the same clip with its index first (faststart): the media data ends early
    front = tmp_path / "front.mp4"
    ffmpeg("-i", str(clips["av"]), "-map", "0", "-c", "copy", "-movflags", "+faststart", str(front))
    data = front.read_bytes()
    assert data.find(b"moov") < data.find(b"mdat")
    cut.write_bytes(data[: len(data) - 5000])
    with pytest.raises(ProbeError, match=r"truncated: .*'mdat' box runs 4\.9 KiB further"):
        probe(cut)
    # whole files, and files that are not MP4 at all, are not called truncated
    probe(front)
    probe(clips["clip"])


def test_no_video_stream(clips):
    with pytest.raises(ProbeError, match=r"no video stream \(streams: audio\)"):
        probe(clips["audio_only"])


def test_absurd_size_is_refused(clips):
    with pytest.raises(ProbeError, match="beyond the limit"):
        probe(clips["av"], max_side=63)
    with pytest.raises(ProbeError, match="beyond the limit"):
        probe(clips["av"], max_pixels=64 * 36 - 1)


def test_declared_duration_inconsistent_with_frames(clips, tmp_path):
    webm = bytearray(clips["clip"].read_bytes())
    i = webm.find(b"\x44\x89\x88")  # Matroska Duration element, 8-byte float
    assert i > 0
    (value,) = struct.unpack(">d", webm[i + 3:i + 11])
    webm[i + 3:i + 11] = struct.pack(">d", value * 100)
    bad = tmp_path / "longer.webm"
    bad.write_bytes(webm)
    with pytest.raises(ProbeError, match="inconsistent with 24 frames"):
        probe(bad)


def test_cli_error_is_a_message_a_failure_file_and_exit_1(tmp_path, capsys):
    workdir = tmp_path / "job"
    workdir.mkdir()
    empty = tmp_path / "empty.mp4"
    empty.touch()
    assert main(["plan", "--source", str(empty), "--workdir", str(workdir)]) == 1
    err = capsys.readouterr().err
    assert "empty (0 bytes)" in err and "Traceback" not in err
    assert "empty (0 bytes)" in (workdir / "failure").read_text()
    assert not (workdir / "plan.json").exists()
