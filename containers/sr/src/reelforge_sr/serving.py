"""SageMaker-style inference for single images: ``model_fn``/``input_fn``/``predict_fn``/``output_fn``,
plus a minimal ``/ping`` + ``/invocations`` HTTP server (``reelforge-sr serve``, port 8080).

Environment: ``SR_MODEL`` (registry name, default ``realesr-animevideov3``), ``SR_SCALE`` (2–4),
model weights under the ``model_dir`` SageMaker passes (``/opt/ml/model``) or ``$REELFORGE_MODEL_DIR``.
Accepted bodies: PNG/JPEG/WebP/BMP (``image/*``) or an ``application/x-npy`` uint8 ``[H, W, 3]`` array.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from reelforge_sr.engine import Upscaler
from reelforge_sr.errors import ReelForgeError
from reelforge_sr.ffmpeg_cli import FFMPEG
from reelforge_sr.models.weights import load_model

log = logging.getLogger(__name__)
MAX_INPUT_PIXELS = int(os.environ.get("SR_MAX_INPUT_PIXELS", str(4096 * 4096)))
_lock = threading.Lock()


def model_fn(model_dir: str | None) -> Upscaler:
    loaded = load_model(os.environ.get("SR_MODEL", "realesr-animevideov3"), model_dir or None)
    scale = int(os.environ.get("SR_SCALE", str(loaded.spec.scale)))
    return Upscaler(loaded.net, scale=scale)


def _parse_ppm(data: bytes) -> np.ndarray:
    fields: list[bytes] = []
    pos = 0
    while len(fields) < 4:
        while data[pos:pos + 1].isspace():
            pos += 1
        if data[pos:pos + 1] == b"#":
            pos = data.index(b"\n", pos) + 1
            continue
        end = pos
        while not data[end:end + 1].isspace():
            end += 1
        fields.append(data[pos:end])
        pos = end
    if fields[0] != b"P6" or int(fields[3]) != 255:
        raise ReelForgeError("decoded image is not 8-bit RGB")
    w, h = int(fields[1]), int(fields[2])
    pixels = data[pos + 1:pos + 1 + w * h * 3]
    return np.frombuffer(pixels, np.uint8).reshape(h, w, 3)


def decode_image(data: bytes) -> np.ndarray:
    """Any image ffmpeg reads → ``[H, W, 3]`` uint8 RGB."""
    proc = subprocess.run([FFMPEG, "-v", "error", "-i", "pipe:0", "-frames:v", "1", "-f", "image2pipe", "-c:v", "ppm",
                           "-pix_fmt", "rgb24", "pipe:1"], input=data, capture_output=True, check=False)
    if proc.returncode != 0 or not proc.stdout:
        raise ReelForgeError(f"cannot decode the image: {proc.stderr.decode(errors='replace')[-300:]}")
    return _parse_ppm(proc.stdout)


def encode_png(image: np.ndarray) -> bytes:
    h, w, _ = image.shape
    proc = subprocess.run([FFMPEG, "-v", "error", "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-i",
                           "pipe:0", "-frames:v", "1", "-c:v", "png", "-f", "image2pipe", "pipe:1"],
                          input=np.ascontiguousarray(image).tobytes(), capture_output=True, check=False)
    if proc.returncode != 0:
        raise ReelForgeError(f"cannot encode PNG: {proc.stderr.decode(errors='replace')[-300:]}")
    return proc.stdout


def input_fn(request_body: bytes, content_type: str = "image/png") -> np.ndarray:
    if content_type == "application/x-npy":
        arr = np.load(io.BytesIO(request_body), allow_pickle=False)
    elif content_type.startswith("image/") or content_type == "application/octet-stream":
        arr = decode_image(request_body)
    else:
        raise ReelForgeError(f"unsupported content type {content_type}")
    if arr.ndim != 3 or arr.shape[2] != 3 or arr.dtype != np.uint8:
        raise ReelForgeError(f"expected an [H, W, 3] uint8 image, got {arr.shape} {arr.dtype}")
    if arr.shape[0] * arr.shape[1] > MAX_INPUT_PIXELS:
        raise ReelForgeError(f"image {arr.shape[1]}x{arr.shape[0]} is over {MAX_INPUT_PIXELS} pixels")
    return arr


def predict_fn(data: np.ndarray, model: Upscaler) -> np.ndarray:
    with _lock:
        return model(data[None])[0]


def output_fn(prediction: np.ndarray, accept: str = "image/png") -> bytes:
    if accept == "application/x-npy":
        buf = io.BytesIO()
        np.save(buf, prediction, allow_pickle=False)
        return buf.getvalue()
    return encode_png(prediction)


def serve(port: int = 8080, model_dir: str | None = None) -> None:
    """Blocking HTTP server with SageMaker's container contract."""
    model = model_fn(model_dir or os.environ.get("SM_MODEL_DIR") or "/opt/ml/model")

    class Handler(BaseHTTPRequestHandler):
        def _reply(self, code: int, body: bytes, ctype: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802
            self._reply(200 if self.path == "/ping" else 404, b"", "text/plain")

        def do_POST(self) -> None:  # noqa: N802
            if self.path != "/invocations":
                return self._reply(404, b"", "text/plain")
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            accept = self.headers.get("Accept", "image/png")
            accept = "application/x-npy" if accept == "application/x-npy" else "image/png"
            try:
                image = input_fn(body, self.headers.get("Content-Type", "image/png"))
                out = output_fn(predict_fn(image, model), accept)
            except ReelForgeError as exc:
                return self._reply(400, json.dumps({"error": str(exc)}).encode(), "application/json")
            return self._reply(200, out, accept)

        def log_message(self, fmt: str, *args: Any) -> None:
            log.info("%s " + fmt, self.address_string(), *args)

    server = ThreadingHTTPServer(("0.0.0.0", port), Handler)  # noqa: S104 - container port
    log.info("serving on :%d", port)
    server.serve_forever()
