"""Issue 10, AWS endpoint outage: the worker's S3 fetch/deliver ride out a few seconds without S3.

The shared moto server stays up; a small TCP proxy in front of it (our own port) cuts the open
connections in the middle of a multipart transfer and refuses new ones for OUTAGE_S seconds. Only the
worker subprocess under test talks to the proxy (``AWS_ENDPOINT_URL``), with the product's own retry
settings.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest

from tests.e2e.test_sr_dag import INGEST
from tests.reliability.e2e_helpers import delete_versions

pytestmark = [pytest.mark.stack]
OUTAGE_S = 4.0
SIZE = 10 * 1024 * 1024 + 12345  # above the 8 MiB multipart threshold: two parts each way
OUTPUT = "reelforge-output"


class FlakyProxy:
    """TCP proxy to moto; after ``trigger_bytes`` forwarded in ``direction`` it resets every open
    connection and refuses new ones (reset on accept) for ``outage_s`` seconds."""

    def __init__(self, upstream: tuple[str, int], trigger_bytes: int, direction: str, outage_s: float) -> None:
        self.upstream, self.trigger, self.direction, self.outage_s = upstream, trigger_bytes, direction, outage_s
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.lock = threading.Lock()
        self.open: set[socket.socket] = set()
        self.forwarded = self.cut = self.refused = 0
        self.down_until = 0.0
        self.outages = 0
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @staticmethod
    def _reset(sock: socket.socket) -> None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            if time.monotonic() < self.down_until:
                self.refused += 1
                self._reset(client)
                continue
            upstream = socket.create_connection(self.upstream)
            with self.lock:
                self.open |= {client, upstream}
            threading.Thread(target=self._pump, args=(client, upstream, self.direction == "up"), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, self.direction == "down"), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, counted: bool) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
                if counted:
                    self._count(len(data))
        except OSError:
            pass
        finally:
            with self.lock:
                for s in (src, dst):
                    if s in self.open:
                        self.open.discard(s)
                        self._reset(s)

    def _count(self, n: int) -> None:
        with self.lock:
            self.forwarded += n
            if self.outages or self.forwarded < self.trigger:
                return
            self.outages = 1
            self.down_until = time.monotonic() + self.outage_s
            self.cut = len(self.open) // 2
            for s in list(self.open):
                self.open.discard(s)
                self._reset(s)

    def close(self) -> None:
        self.closed = True
        self.listener.close()


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def worker(args: list[str], proxy: FlakyProxy, workdir: Path, **extra_env: str) -> subprocess.CompletedProcess:
    """`reelforge-sr ...` in a subprocess whose only AWS endpoint is the proxy (product retry defaults)."""
    conn = json.loads(os.environ["AIRFLOW_CONN_AWS_DEFAULT"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(AWS_ENDPOINT_URL=f"http://127.0.0.1:{proxy.port}", AWS_ACCESS_KEY_ID=conn["login"],
               AWS_SECRET_ACCESS_KEY=conn["password"], AWS_DEFAULT_REGION=conn["extra"]["region_name"],
               WORKDIR=str(workdir), **extra_env)
    return subprocess.run([sys.executable, "-m", "reelforge_sr", *args], env=env, capture_output=True, text=True,
                          timeout=180)


@pytest.fixture
def moto_address() -> tuple[str, int]:
    from urllib.parse import urlparse

    url = urlparse(os.environ["REELFORGE_AWS_ENDPOINT_URL"])
    return url.hostname or "127.0.0.1", url.port or 80


def test_fetch_survives_an_outage_mid_download(aws, moto_address, tmp_path):
    data = os.urandom(SIZE)
    key = f"manual/reliability/outage-{uuid.uuid4().hex[:6]}/source.mp4"
    put = aws.s3.put_object(Bucket=INGEST, Key=key, Body=data)
    proxy = FlakyProxy(moto_address, trigger_bytes=2 * 1024 * 1024, direction="down", outage_s=OUTAGE_S)
    dest = tmp_path / "input" / "source.mp4"
    try:
        started = time.monotonic()
        done = worker(["fetch", f"s3://{INGEST}/{key}", str(dest), "--version-id", put["VersionId"]], proxy, tmp_path)
        elapsed = time.monotonic() - started
    finally:
        proxy.close()
        delete_versions(aws.s3, key)
    assert done.returncode == 0, done.stderr[-3000:]
    assert proxy.outages == 1 and proxy.cut >= 1 and proxy.refused >= 1, vars(proxy)
    assert elapsed >= OUTAGE_S
    assert _sha256(dest.read_bytes()) == _sha256(data)
    assert not list(dest.parent.glob(".*.part")), "a partial download was left behind"
    assert json.loads(Path(f"{dest}.s3.json").read_text())["version_id"] == put["VersionId"]


def test_deliver_survives_an_outage_mid_upload(aws, moto_address, tmp_path):
    video = tmp_path / "output.mp4"
    video.write_bytes(os.urandom(SIZE))
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"output": {"path": str(video)}, "quality": {"previews": []}}))
    prefix = f"sr/reliability-outage-{uuid.uuid4().hex[:6]}/"
    proxy = FlakyProxy(moto_address, trigger_bytes=3 * 1024 * 1024, direction="up", outage_s=OUTAGE_S)
    try:
        done = worker(["deliver", "--workdir", str(tmp_path), "--dest", f"s3://{OUTPUT}/{prefix}"], proxy, tmp_path)
        assert done.returncode == 0, done.stderr[-3000:]
        assert proxy.outages == 1 and proxy.cut >= 1 and proxy.refused >= 1, vars(proxy)
        delivery = json.loads((tmp_path / "delivery.json").read_text())
        assert [o["role"] for o in delivery["objects"]] == ["video", "report"]
        for obj, local in zip(delivery["objects"], (video, report), strict=True):
            body = aws.s3.get_object(Bucket=OUTPUT, Key=obj["key"])["Body"].read()
            assert _sha256(body) == _sha256(local.read_bytes()) == obj["sha256"], obj["key"]
        assert delivery["objects"][0]["multipart"] is True
        uploads = aws.s3.list_multipart_uploads(Bucket=OUTPUT, Prefix=prefix).get("Uploads", [])
        assert not uploads, "an aborted multipart upload was left open"
    finally:
        proxy.close()
        delete_versions(aws.s3, prefix, bucket=OUTPUT)


def test_without_retries_the_same_outage_is_a_clear_failure(aws, moto_address, tmp_path):
    """The control: with retries turned off the outage does break the fetch, cleanly (no partial file)."""
    data = os.urandom(SIZE)
    key = f"manual/reliability/outage-{uuid.uuid4().hex[:6]}/source.mp4"
    aws.s3.put_object(Bucket=INGEST, Key=key, Body=data)
    proxy = FlakyProxy(moto_address, trigger_bytes=2 * 1024 * 1024, direction="down", outage_s=OUTAGE_S)
    dest = tmp_path / "input" / "source.mp4"
    try:
        done = worker(["fetch", f"s3://{INGEST}/{key}", str(dest)], proxy, tmp_path, AWS_MAX_ATTEMPTS="1")
    finally:
        proxy.close()
        delete_versions(aws.s3, key)
    assert done.returncode == 1 and proxy.outages == 1
    assert f"downloading s3://{INGEST}/{key} failed" in done.stderr and "Traceback" not in done.stderr
    assert "failed" in (tmp_path / "failure").read_text()
    assert not dest.exists() and not list(dest.parent.glob(".*.part"))
