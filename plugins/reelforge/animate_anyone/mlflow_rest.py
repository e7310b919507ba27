"""Read MLflow through its REST API (no ``mlflow`` package in Airflow): search runs, pick the best.

The tracking URI is an MLflow server (``http(s)://host[:port][/prefix]``) or a SageMaker managed
MLflow tracking server ARN (``arn:aws:sagemaker:<region>:<account>:mlflow-tracking-server/<name>``).
For an ARN the requests go to ``https://<region>.experiments.sagemaker.aws`` with the header
``x-mlflow-sm-tracking-server-arn`` and are signed with SigV4 (service ``sagemaker-mlflow``) using
the Airflow AWS connection's credentials — what the ``sagemaker-mlflow`` plugin does for the client.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlencode

import requests

log = logging.getLogger(__name__)
_ARN = re.compile(r"^arn:(aws[a-z-]*):sagemaker:([a-z0-9-]+):(\d{12}):mlflow-tracking-server/[A-Za-z0-9-]+$")
SIGV4_SERVICE = "sagemaker-mlflow"


class MlflowError(RuntimeError):
    """The tracking server answered with an error."""


class MlflowRest:
    def __init__(self, tracking_uri: str, *, aws_conn_id: str | None = None, timeout: float = 30) -> None:
        self.tracking_uri = tracking_uri.strip()
        self.timeout = timeout
        self.aws_conn_id = aws_conn_id
        match = _ARN.match(self.tracking_uri)
        if match:
            self.arn, self.region = self.tracking_uri, match.group(2)
            self.base_url = os.environ.get("SAGEMAKER_MLFLOW_CUSTOM_ENDPOINT") or (
                f"https://{self.region}.experiments.sagemaker.aws"
            )
        elif self.tracking_uri.startswith(("http://", "https://")):
            self.arn, self.region = None, None
            self.base_url = self.tracking_uri.rstrip("/")
        else:
            raise ValueError(
                f"MLflow tracking URI must be http(s):// or a SageMaker MLflow tracking server ARN, not "
                f"{self.tracking_uri!r}"
            )
        self._credentials: Any = None

    # -- transport --------------------------------------------------------------------------------

    def _sign(self, method: str, url: str, body: bytes, headers: dict[str, str]) -> dict[str, str]:
        from botocore.auth import SigV4Auth
        from botocore.awsrequest import AWSRequest

        if self._credentials is None:
            from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

            session = AwsBaseHook(aws_conn_id=self.aws_conn_id, client_type="sts").get_session()
            self._credentials = session.get_credentials().get_frozen_credentials()
        headers = {**headers, "x-mlflow-sm-tracking-server-arn": self.arn,
                   "X-Amz-Content-SHA256": hashlib.sha256(body).hexdigest()}
        request = AWSRequest(method=method, url=url, data=body, headers=headers)
        SigV4Auth(self._credentials, SIGV4_SERVICE, self.region).add_auth(request)
        return dict(request.headers.items())

    def call(self, method: str, endpoint: str, *, query: Mapping[str, Any] | None = None,
             body: Mapping[str, Any] | None = None) -> dict[str, Any]:
        url = f"{self.base_url}/api/2.0/mlflow/{endpoint}"
        if query:
            url += "?" + urlencode(query).replace("+", "%20")
        data = json.dumps(body).encode() if body is not None else b""
        headers = {"Content-Type": "application/json"} if body is not None else {}
        if self.arn:
            headers = self._sign(method, url, data, headers)
        response = requests.request(method, url, data=data or None, headers=headers, timeout=self.timeout)
        if response.status_code >= 400:
            raise MlflowError(f"{method} {endpoint}: HTTP {response.status_code}: {response.text[:500]}")
        return response.json() if response.content else {}

    # -- API --------------------------------------------------------------------------------------

    def experiment_id(self, name: str) -> str | None:
        try:
            return self.call("GET", "experiments/get-by-name", query={"experiment_name": name})["experiment"][
                "experiment_id"
            ]
        except MlflowError as err:
            if "RESOURCE_DOES_NOT_EXIST" in str(err) or "HTTP 404" in str(err):
                return None
            raise

    def search_runs(self, experiment_ids: Sequence[str], filter_string: str = "",
                    order_by: Sequence[str] = (), max_results: int = 1000) -> list[dict[str, Any]]:
        runs: list[dict[str, Any]] = []
        token = None
        while True:
            body: dict[str, Any] = {"experiment_ids": list(experiment_ids), "filter": filter_string,
                                    "max_results": min(max_results, 1000), "order_by": list(order_by)}
            if token:
                body["page_token"] = token
            page = self.call("POST", "runs/search", body=body)
            runs += page.get("runs", [])
            token = page.get("next_page_token")
            if not token or len(runs) >= max_results:
                return runs[:max_results]


def _kv(items: Sequence[Mapping[str, Any]] | None) -> dict[str, Any]:
    return {i["key"]: i.get("value") for i in items or []}


def summarize(run: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a REST run object the DAG needs: id, status, tags, latest metrics, params."""
    info, data = run.get("info", {}), run.get("data", {})
    return {
        "run_id": info.get("run_id") or info.get("run_uuid"),
        "run_name": info.get("run_name"),
        "status": info.get("status"),
        "tags": _kv(data.get("tags")),
        "metrics": {k: float(v) for k, v in _kv(data.get("metrics")).items() if v is not None},
        "params": _kv(data.get("params")),
    }


def pick_best(runs: Sequence[Mapping[str, Any]], metric: str, mode: str = "min") -> tuple[dict, list[dict]]:
    """``(best, ranked)`` among summarized runs that have ``metric``; ties go to the lower sweep index."""
    if mode not in ("min", "max"):
        raise ValueError(f"mode must be min or max, not {mode!r}")
    usable = [r for r in runs if metric in r["metrics"] and r["metrics"][metric] == r["metrics"][metric]]
    if not usable:
        raise LookupError(f"no run has a value for metric {metric!r}")
    sign = 1 if mode == "min" else -1

    def key(r: Mapping[str, Any]) -> tuple[float, int]:
        return sign * r["metrics"][metric], int(r["tags"].get("reelforge.sweep_index", 1 << 30))

    ranked = sorted(usable, key=key)
    return dict(ranked[0]), [dict(r) for r in ranked]
