"""Stand-ins for the SageMaker runtime of the avatar endpoints (SageMaker's local mode has no async inference
and no multi-model endpoint), each following SageMaker's documented contract:

* :class:`FineTuneContainer` runs the built image as SageMaker runs an endpoint's container:
  ``docker run <image> serve`` with the model data unpacked at ``/opt/ml/model``, health on ``GET /ping``,
  work on ``POST /invocations`` (port ``SAGEMAKER_BIND_TO_PORT``: SageMaker's 8080 may be taken here).
* :class:`AsyncEndpoint` is SageMaker's asynchronous-inference platform: ``InvokeEndpointAsync`` answers at once
  with ``OutputLocation`` (``<S3OutputPath><id>.out``) and ``FailureLocation`` (``<S3FailurePath><id>-error.out``);
  a worker reads the input object from S3, posts it to ``/invocations`` (one at a time, cut off after
  ``InvocationTimeoutSeconds``) and writes the 200 body to the output or the error to the failure location.
* :class:`RuntimeStandIn` answers boto3's ``sagemaker-runtime`` calls on HTTP: ``InvokeEndpointAsync`` for the
  async endpoints and ``InvokeEndpoint`` with ``TargetModel`` for the multi-model endpoint, whose model
  (``<ModelDataUrl><TargetModel>`` from S3) runs in ``triton_server_double.TritonMmeDouble`` (a TEST DOUBLE of
  Triton, which cannot run here). A container error comes back as SageMaker's ``ModelError``.
"""

from __future__ import annotations

import json
import logging
import queue
import re
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

log = logging.getLogger("sagemaker_standins")
_PATH = re.compile(r"^/endpoints/([^/]+)/(invocations|async-invocations)$")


def _split(uri: str) -> tuple[str, str]:
    bucket, _, key = uri.removeprefix("s3://").partition("/")
    return bucket, key


class FineTuneContainer:
    """The image's ``serve`` in Docker, on the host's network, ``/opt/ml/model`` mounted read-only."""

    def __init__(self, image: str, model_dir: Path, port: int, env: dict[str, str]) -> None:
        self.image, self.model_dir, self.port, self.env = image, model_dir, port, env
        self.name = f"avatar-ft-{uuid.uuid4().hex[:8]}"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 180) -> None:
        env = [arg for key, value in {**self.env, "SAGEMAKER_BIND_TO_PORT": str(self.port)}.items()
               for arg in ("-e", f"{key}={value}")]
        subprocess.run(["docker", "run", "-d", "--name", self.name, "--network", "host",
                        "-v", f"{self.model_dir}:/opt/ml/model:ro", *env, self.image, "serve"],
                       check=True, capture_output=True, text=True, timeout=120)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=5) as answer:  # noqa: S310 - local
                    if answer.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if self.running() is False:
                break
            time.sleep(1)
        raise RuntimeError(f"{self.image} serve did not answer /ping: {self.logs()[-3000:]}")

    def running(self) -> bool:
        state = subprocess.run(["docker", "inspect", "-f", "{{.State.Running}}", self.name],
                               capture_output=True, text=True, timeout=30)
        return state.stdout.strip() == "true"

    def invoke(self, body: bytes, content_type: str, accept: str, timeout: float) -> tuple[int, bytes]:
        request = urllib.request.Request(f"{self.url}/invocations", data=body, method="POST",  # noqa: S310 - local
                                         headers={"Content-Type": content_type, "Accept": accept})
        try:
            with urllib.request.urlopen(request, timeout=timeout) as answer:  # noqa: S310 - local
                return answer.status, answer.read()
        except urllib.error.HTTPError as err:
            return err.code, err.read()

    def logs(self) -> str:
        out = subprocess.run(["docker", "logs", self.name], capture_output=True, text=True, timeout=60)
        return out.stdout + out.stderr

    def stop(self) -> None:
        subprocess.run(["docker", "rm", "-f", self.name], capture_output=True, timeout=60)


class AsyncEndpoint:
    """SageMaker's async platform in front of one container instance (see the module docstring)."""

    def __init__(self, container: FineTuneContainer, s3: Any, output_path: str, failure_path: str) -> None:
        self.container, self.s3 = container, s3
        self.output_path, self.failure_path = output_path, failure_path
        self.jobs: queue.Queue = queue.Queue()
        self.done: list[dict[str, Any]] = []
        threading.Thread(target=self._work, daemon=True).start()

    def invoke_async(self, *, input_location: str, inference_id: str | None, content_type: str, accept: str,
                     invocation_timeout: int) -> dict[str, str]:
        if not 1 <= invocation_timeout <= 3600:
            raise ValueError(f"InvocationTimeoutSeconds must be 1..3600, not {invocation_timeout}")
        token = str(uuid.uuid4())
        job = {"input": input_location, "inference_id": inference_id or token, "content_type": content_type,
               "accept": accept, "timeout": invocation_timeout,
               "output": f"{self.output_path}{token}.out", "failure": f"{self.failure_path}{token}-error.out"}
        self.jobs.put(job)
        return {"InferenceId": job["inference_id"], "OutputLocation": job["output"], "FailureLocation": job["failure"]}

    def _work(self) -> None:
        while True:
            job = self.jobs.get()
            try:
                bucket, key = _split(job["input"])
                body = self.s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                status, answer = self.container.invoke(body, job["content_type"], job["accept"], job["timeout"])
            except Exception as err:  # noqa: BLE001 - SageMaker writes every failure to the failure path
                status, answer = 500, f"{type(err).__name__}: {err}".encode()
            target = job["output"] if status == 200 else job["failure"]
            bucket, key = _split(target)
            self.s3.put_object(Bucket=bucket, Key=key, Body=answer)
            self.done.append({**job, "status": status})
            log.info("async %s → %s (%d)", job["inference_id"], target, status)


class MultiModelEndpoint:
    """``InvokeEndpoint`` with ``TargetModel`` on a Triton MME: the model is fetched from S3 and loaded once."""

    def __init__(self, triton: Any, s3: Any, model_data_url: str) -> None:
        self.triton, self.s3, self.model_data_url = triton, s3, model_data_url
        self.invocations: list[dict[str, Any]] = []

    def invoke(self, target_model: str, body: bytes, content_type: str) -> tuple[int, bytes, str]:
        bucket, prefix = _split(self.model_data_url)
        with tempfile.TemporaryDirectory() as tmp:
            archive = Path(tmp) / "model.tar.gz"
            try:
                self.s3.download_file(bucket, prefix + target_model, str(archive))
            except Exception as err:  # noqa: BLE001 - SageMaker's answer to a model it cannot fetch
                return 400, json.dumps({"message": f"Failed to download model data: {err}"}).encode(), "ValidationError"
            model_name = self.triton.load_target(target_model, archive)
        status, answer, answer_type = self.triton.infer(model_name, body, content_type)
        self.invocations.append({"target_model": target_model, "status": status, "content_type": content_type})
        return status, answer, answer_type


class RuntimeStandIn:
    """An HTTP server answering boto3's ``sagemaker-runtime`` for the endpoints registered on it."""

    def __init__(self) -> None:
        self.async_endpoints: dict[str, AsyncEndpoint] = {}
        self.mme: dict[str, MultiModelEndpoint] = {}
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt: str, *args: Any) -> None:
                log.info(fmt, *args)

            def _reply(self, status: int, body: bytes, headers: dict[str, str]) -> None:
                self.send_response(status)
                for key, value in headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _error(self, status: int, kind: str, message: str) -> None:
                self._reply(status, json.dumps({"message": message}).encode(),
                            {"Content-Type": "application/json", "x-amzn-ErrorType": kind})

            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                try:
                    self._post()
                except Exception as err:  # noqa: BLE001 - SageMaker's answer to an error of its own
                    log.exception("stand-in failed")
                    self._error(500, "InternalFailure", f"{type(err).__name__}: {err}")

            def _post(self) -> None:
                match = _PATH.match(self.path.split("?")[0])
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if not match:
                    self._error(404, "UnknownOperationException", self.path)
                    return
                name, kind = match.groups()
                h = self.headers
                if kind == "async-invocations":
                    endpoint = standin.async_endpoints.get(name)
                    if endpoint is None:
                        self._error(400, "ValidationError", f"Endpoint {name} not found.")
                        return
                    try:
                        answer = endpoint.invoke_async(
                            input_location=h["X-Amzn-SageMaker-InputLocation"],
                            inference_id=h.get("X-Amzn-SageMaker-Inference-Id"),
                            content_type=h.get("X-Amzn-SageMaker-Content-Type", "application/octet-stream"),
                            accept=h.get("X-Amzn-SageMaker-Accept", "*/*"),
                            invocation_timeout=int(h.get("X-Amzn-SageMaker-InvocationTimeoutSeconds", "900")))
                    except ValueError as err:
                        self._error(400, "ValidationError", str(err))
                        return
                    self._reply(202, json.dumps({"InferenceId": answer["InferenceId"]}).encode(),
                                {"Content-Type": "application/json",
                                 "X-Amzn-SageMaker-OutputLocation": answer["OutputLocation"],
                                 "X-Amzn-SageMaker-FailureLocation": answer["FailureLocation"]})
                    return
                endpoint = standin.mme.get(name)
                target = h.get("X-Amzn-SageMaker-Target-Model")
                if endpoint is None or not target:
                    self._error(400, "ValidationError", f"Endpoint {name} is no multi-model endpoint here, "
                                                       f"or no TargetModel ({target!r})")
                    return
                status, answer, answer_type = endpoint.invoke(target, body, h.get("Content-Type", ""))
                if answer_type == "ValidationError":
                    self._reply(400, answer, {"Content-Type": "application/json", "x-amzn-ErrorType": answer_type})
                elif status != 200:
                    message = {"ErrorCode": "CLIENT_ERROR_FROM_MODEL", "OriginalStatusCode": status,
                               "OriginalMessage": answer.decode("utf-8", "replace"),
                               "message": f"Received client error ({status}) from model with message "
                                          f"\"{answer.decode('utf-8', 'replace')}\"."}
                    self._reply(424, json.dumps(message).encode(),
                                {"Content-Type": "application/json", "x-amzn-ErrorType": "ModelError"})
                else:
                    self._reply(200, answer, {"Content-Type": answer_type,
                                              "x-Amzn-Invoked-Production-Variant": "AllTraffic"})

        return Handler
