"""SageMaker's inference container contract, for bases without the DLC's TorchServe ``serve``.

``serve`` (what SageMaker runs: ``docker run <image> serve``) listens on ``SAGEMAKER_BIND_TO_PORT`` (8080),
answers ``GET /ping`` with 200 once ``model_fn`` has loaded ``/opt/ml/model`` and ``POST /invocations`` with
``input_fn`` → ``predict_fn`` → ``output_fn`` of ``$SAGEMAKER_SUBMIT_DIRECTORY/$SAGEMAKER_PROGRAM`` (the
image's ``code/inference.py``), one invocation at a time (``MaxConcurrentInvocationsPerInstance`` 1). A failed
invocation answers 500 with the error as its body (the async platform writes it to the failure path). On the
SageMaker PyTorch DLC the DLC's own ``serve`` (TorchServe + the inference toolkit) calls the same handlers.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import ModuleType
from typing import Any

log = logging.getLogger("reelforge_avatar.serve")

MODEL_DIR = "/opt/ml/model"
MAX_BODY_BYTES = 6 * 1024 * 1024


def load_handlers() -> ModuleType:
    """The handler module the toolkit would load (``SAGEMAKER_SUBMIT_DIRECTORY``/``SAGEMAKER_PROGRAM``)."""
    program = Path(os.environ.get("SAGEMAKER_SUBMIT_DIRECTORY", "/opt/reelforge/code")) / os.environ.get(
        "SAGEMAKER_PROGRAM", "inference.py")
    spec = importlib.util.spec_from_file_location("inference", program)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load the handlers from {program}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class _Service:
    """The loaded handlers and model; one invocation at a time."""

    def __init__(self, handlers: ModuleType, model: Any) -> None:
        self.handlers, self.model, self.lock = handlers, model, threading.Lock()

    def invoke(self, body: bytes, content_type: str, accept: str) -> tuple[bytes, str]:
        with self.lock:
            data = self.handlers.input_fn(body, content_type)
            prediction = self.handlers.predict_fn(data, self.model)
            payload, out_type = self.handlers.output_fn(prediction, accept)
        return (payload.encode() if isinstance(payload, str) else payload), out_type


def _handler(service: _Service) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def _answer(self, code: int, body: bytes, content_type: str = "text/plain") -> None:
            self.send_response(code)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            if self.path == "/ping":
                self._answer(200, b"")
            else:
                self._answer(404, b"not found")

        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            if self.path != "/invocations":
                self._answer(404, b"not found")
                return
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._answer(413, f"request body over {MAX_BODY_BYTES} bytes".encode())
                return
            body = self.rfile.read(length)
            try:
                payload, out_type = service.invoke(body, self.headers.get("Content-Type", "application/json"),
                                                   self.headers.get("Accept", "application/json"))
            except Exception as err:  # noqa: BLE001 - every failure is the invocation's error response
                log.error("invocation failed: %s", "".join(traceback.format_exception(err)))
                self._answer(500, f"{type(err).__name__}: {err}".encode())
                return
            self._answer(200, payload, out_type)

        def log_message(self, fmt: str, *args: Any) -> None:
            log.info("%s %s", self.address_string(), fmt % args)

    return Handler


def make_server(port: int, model_dir: str = MODEL_DIR) -> ThreadingHTTPServer:
    """Load the handlers and the model (``model_fn``), then bind; ``/ping`` is healthy from the first answer."""
    handlers = load_handlers()
    service = _Service(handlers, handlers.model_fn(model_dir))
    return ThreadingHTTPServer(("0.0.0.0", port), _handler(service))  # noqa: S104 - SageMaker routes to the host


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if sys.argv[1:] not in ([], ["serve"]):
        print("usage: serve", file=sys.stderr)
        return 2
    port = int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080"))
    server = make_server(port)
    log.info("serving on :%d", port)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
