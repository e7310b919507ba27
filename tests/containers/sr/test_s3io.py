"""fetch / deliver against moto's S3."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from reelforge_sr import s3io
from reelforge_sr.cli import main
from reelforge_sr.errors import StorageError

BUCKET = "reelforge-ingest"
OUT = "reelforge-output"


@pytest.fixture
def s3(monkeypatch):
    for var in ("AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_PROFILE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    with mock_aws():
        client = boto3.client("s3")
        client.create_bucket(Bucket=BUCKET)
        client.create_bucket(Bucket=OUT)
        yield client


def test_fetch_downloads_records_and_skips_when_unchanged(s3, tmp_path):
    key = "sr/incoming/e2e/bunny's; $(touch pwned) `id`.mp4"
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"x" * 5000)
    dest = tmp_path / "input" / "source.mp4"
    first = s3io.fetch(f"s3://{BUCKET}/{key}", dest)
    assert dest.read_bytes() == b"x" * 5000 and not first["skipped"]
    sidecar = json.loads((tmp_path / "input" / "source.mp4.s3.json").read_text())
    assert sidecar["key"] == key and sidecar["size"] == 5000 and sidecar["etag"]
    mtime = dest.stat().st_mtime_ns
    assert s3io.fetch(f"s3://{BUCKET}/{key}", dest)["skipped"]
    assert dest.stat().st_mtime_ns == mtime
    s3.put_object(Bucket=BUCKET, Key=key, Body=b"y" * 4000)  # new content under the same key
    assert not s3io.fetch(f"s3://{BUCKET}/{key}", dest)["skipped"]
    assert dest.read_bytes() == b"y" * 4000
    assert not list(dest.parent.glob(".*part"))


def test_fetch_pins_a_version(s3, tmp_path):
    s3.put_bucket_versioning(Bucket=BUCKET, VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket=BUCKET, Key="v.mp4", Body=b"first")["VersionId"]
    s3.put_object(Bucket=BUCKET, Key="v.mp4", Body=b"second")
    out = s3io.fetch(f"s3://{BUCKET}/v.mp4", tmp_path / "v.mp4", version_id=v1)
    assert (tmp_path / "v.mp4").read_bytes() == b"first" and out["version_id"] == v1


def test_fetch_refuses_empty_large_missing_and_odd_keys(s3, tmp_path):
    s3.put_object(Bucket=BUCKET, Key="empty.mp4", Body=b"")
    s3.put_object(Bucket=BUCKET, Key="big.mp4", Body=b"z" * 2000)
    with pytest.raises(StorageError, match="empty"):
        s3io.fetch(f"s3://{BUCKET}/empty.mp4", tmp_path / "a.mp4")
    with pytest.raises(StorageError, match="over the limit"):
        s3io.fetch(f"s3://{BUCKET}/big.mp4", tmp_path / "b.mp4", max_bytes=1000)
    with pytest.raises(StorageError, match=r"decode it first: 'my clip\.mp4'"):
        s3io.fetch(f"s3://{BUCKET}/my+clip.mp4", tmp_path / "c.mp4")
    for uri in (f"s3://{BUCKET}/../etc/passwd", f"s3://{BUCKET}/a//b.mp4", f"s3://{BUCKET}/a/./b.mp4",
                "s3://Bad_Bucket/x.mp4", "https://example.com/x.mp4", f"s3://{BUCKET}/a\nb.mp4"):
        with pytest.raises(StorageError):
            s3io.fetch(uri, tmp_path / "d.mp4")
    assert not list(tmp_path.iterdir())


def _fake_job(workdir, video_bytes: int):
    (workdir / "previews").mkdir(parents=True)
    video = workdir / "output.mp4"
    video.write_bytes(b"v" * video_bytes)
    (workdir / "previews" / "frame000001_bicubic_vs_reelforge.png").write_bytes(b"png1")
    (workdir / "previews" / "frame000020_bicubic_vs_reelforge.png").write_bytes(b"png2")
    report = {"frames": 36, "output": {"path": str(video)},
              "quality": {"previews": ["frame000001_bicubic_vs_reelforge.png", "frame000020_bicubic_vs_reelforge.png"]}}
    (workdir / "report.json").write_text(json.dumps(report))
    return video


def test_deliver_uploads_video_first_report_last_with_checksums(s3, tmp_path, monkeypatch, capsys):
    video = _fake_job(tmp_path, 9 * 1024 * 1024)  # above the 8 MiB multipart threshold
    order = []

    class Recorder:
        def __init__(self, client):
            self._client = client

        def upload_file(self, path, bucket, key, **kwargs):
            order.append(key)
            return self._client.upload_file(path, bucket, key, **kwargs)

        def __getattr__(self, name):
            return getattr(self._client, name)

    monkeypatch.setattr(s3io, "_client", lambda: Recorder(boto3.client("s3")))
    assert main(["deliver", "--workdir", str(tmp_path), "--dest", f"s3://{OUT}/sr/job1"]) == 0
    assert order[0] == "sr/job1/output.mp4" and order[-1] == "sr/job1/report.json"
    assert sorted(order[1:-1]) == ["sr/job1/previews/frame000001_bicubic_vs_reelforge.png",
                                   "sr/job1/previews/frame000020_bicubic_vs_reelforge.png"]
    delivery = json.loads((tmp_path / "delivery.json").read_text())
    assert delivery == json.loads(capsys.readouterr().out)
    assert [o["role"] for o in delivery["objects"]] == ["video", "preview", "preview", "report"]
    first = delivery["objects"][0]
    assert first["size"] == video.stat().st_size and first["multipart"] and first["etag"].endswith("-2")
    assert first["checksum_sha256"]
    for obj in delivery["objects"]:
        head = s3.head_object(Bucket=OUT, Key=obj["key"])
        assert head["ContentLength"] == obj["size"]
    assert s3.head_object(Bucket=OUT, Key="sr/job1/output.mp4")["ContentType"] == "video/mp4"


def test_deliver_refuses_bad_prefixes_and_missing_report(s3, tmp_path):
    _fake_job(tmp_path, 100)
    for dest in (f"s3://{OUT}/sr/../other/", f"s3://{OUT}//x/", f"s3://{OUT}/a/./b/"):
        with pytest.raises(StorageError):
            s3io.deliver(tmp_path, dest)
    (tmp_path / "report.json").unlink()
    with pytest.raises(StorageError, match="run `reelforge-sr assemble` first"):
        s3io.deliver(tmp_path, f"s3://{OUT}/sr/job/")
    assert "Contents" not in s3.list_objects_v2(Bucket=OUT)


def test_deliver_names_the_video_after_its_source_in_utf8(s3, tmp_path):
    _fake_job(tmp_path, 100)
    name = "Épisode 3 (1994) 映画.x2.mp4"
    assert main(["deliver", "--workdir", str(tmp_path), "--dest", f"s3://{OUT}/sr/job2/", "--name", name]) == 0
    delivery = json.loads((tmp_path / "delivery.json").read_text())
    assert delivery["objects"][0]["key"] == f"sr/job2/{name}"
    assert s3.head_object(Bucket=OUT, Key=f"sr/job2/{name}")["ContentLength"] == 100
    for bad in ("a/b.mp4", "..", ""):
        with pytest.raises(StorageError, match="not a file name"):
            s3io.deliver(tmp_path, f"s3://{OUT}/sr/job3/", name=bad)
