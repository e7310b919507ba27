"""Deferrable operator for SageMaker asynchronous inference (in the amazon provider's shape).

``execute`` writes the request JSON to S3 under a deterministic key, calls ``invoke_endpoint_async``
with that ``InputLocation`` and a deterministic ``InferenceId``, records the returned locations beside
the request (``invocation.json``) and defers to :class:`~reelforge.triggers.sagemaker_async.
SageMakerAsyncInferenceTrigger`. A retry or a cleared task reads that record first: an output that
exists is returned at once and one still pending is waited for, without invoking the endpoint again;
only a recorded *failure* is re-invoked.
"""

from __future__ import annotations

import json
from datetime import timedelta
from functools import cached_property
from typing import Any

from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook
from airflow.providers.amazon.aws.operators.base_aws import AwsBaseOperator
from airflow.providers.amazon.aws.utils.mixins import aws_template_fields
from airflow.sdk.exceptions import AirflowException

from reelforge.links import SageMakerEndpointLink
from reelforge.triggers.sagemaker_async import SageMakerAsyncInferenceTrigger, split_s3_uri

#: The largest response body read back into XCom (the container's is a small JSON document).
MAX_RESPONSE_BYTES = 1024 * 1024


class AsyncInferenceFailed(AirflowException):
    """The endpoint wrote a failure object (its body is the message), or the wait ended without output."""


class SageMakerInvokeAsyncOperator(AwsBaseOperator[AwsBaseHook]):
    """Invoke a SageMaker async endpoint with a JSON request and wait (deferred) for its response.

    :param endpoint_name: the async endpoint.
    :param request: the JSON-serialisable request body.
    :param input_s3_uri: where the request is written (``InputLocation``); deterministic per run.
    :param inference_id: the ``InferenceId``; deterministic per run.
    :param poll_interval: seconds between the trigger's polls.
    :param timeout: how long to wait for the output (seconds).
    :param invocation_timeout: ``InvocationTimeoutSeconds`` (how long the container may work on it).
    :return: ``{"inference_id", "output_location", "response"}`` where ``response`` is the parsed JSON body.
    """

    aws_hook_class = AwsBaseHook
    template_fields = aws_template_fields("endpoint_name", "request", "input_s3_uri", "inference_id", "poll_interval",
                                          "timeout")
    template_fields_renderers = {"request": "json"}
    ui_color = "#f0e4ec"
    operator_extra_links = (SageMakerEndpointLink(),)

    def __init__(
        self,
        *,
        endpoint_name: str,
        request: dict[str, Any],
        input_s3_uri: str,
        inference_id: str,
        poll_interval: float = 30,
        timeout: float = 6 * 3600,
        invocation_timeout: int = 3600,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.endpoint_name = endpoint_name
        self.request = request
        self.input_s3_uri = input_s3_uri
        self.inference_id = inference_id
        self.poll_interval = poll_interval
        self.timeout = timeout
        self.invocation_timeout = invocation_timeout

    @property
    def _hook_parameters(self) -> dict[str, Any]:
        return {**super()._hook_parameters, "client_type": "sagemaker-runtime"}

    @cached_property
    def s3(self) -> Any:
        return AwsBaseHook(**{**super()._hook_parameters, "client_type": "s3"}).conn

    @property
    def record_uri(self) -> str:
        """``invocation.json`` beside the request: the locations of this task's invocation."""
        return self.input_s3_uri.rsplit("/", 1)[0] + "/invocation.json"

    def _exists(self, uri: str) -> bool:
        from botocore.exceptions import ClientError

        bucket, key = split_s3_uri(uri)
        try:
            self.s3.head_object(Bucket=bucket, Key=key)
        except ClientError as err:
            if str(err.response.get("Error", {}).get("Code")) in {"404", "NoSuchKey", "NotFound"}:
                return False
            raise
        return True

    def _read(self, uri: str, limit: int = MAX_RESPONSE_BYTES) -> bytes:
        bucket, key = split_s3_uri(uri)
        return self.s3.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{limit - 1}")["Body"].read()

    def _put_json(self, uri: str, body: dict[str, Any]) -> None:
        bucket, key = split_s3_uri(uri)
        self.s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(body, sort_keys=True).encode(),
                           ContentType="application/json")

    def _recorded(self) -> dict[str, Any] | None:
        return json.loads(self._read(self.record_uri)) if self._exists(self.record_uri) else None

    def execute(self, context: Any) -> dict[str, Any]:
        SageMakerEndpointLink.persist(context=context, operator=self, region_name=self.hook.conn_region_name,
                                      aws_partition=self.hook.conn_partition, endpoint_name=self.endpoint_name)
        record = self._recorded()
        if record and record.get("inference_id") == self.inference_id:
            if self._exists(record["output_location"]):
                self.log.info("inference %s already answered at %s: not invoking again", self.inference_id,
                              record["output_location"])
                return self._result(record["output_location"])
            failure = record.get("failure_location")
            if not (failure and self._exists(failure)):
                self.log.info("inference %s already invoked: waiting for it", self.inference_id)
                return self._defer(record)
            self.log.warning("inference %s failed before (%s): invoking again", self.inference_id, failure)

        self._put_json(self.input_s3_uri, self.request)
        response = self.hook.conn.invoke_endpoint_async(
            EndpointName=self.endpoint_name,
            InputLocation=self.input_s3_uri,
            InferenceId=self.inference_id,
            ContentType="application/json",
            Accept="application/json",
            InvocationTimeoutSeconds=self.invocation_timeout,
        )
        record = {"endpoint_name": self.endpoint_name, "inference_id": self.inference_id,
                  "input_location": self.input_s3_uri, "output_location": response["OutputLocation"],
                  "failure_location": response.get("FailureLocation")}
        self._put_json(self.record_uri, record)
        self.log.info("invoked %s (inference %s): output will be at %s", self.endpoint_name, self.inference_id,
                      record["output_location"])
        return self._defer(record)

    def _defer(self, record: dict[str, Any]) -> Any:
        self.defer(
            trigger=SageMakerAsyncInferenceTrigger(
                output_location=record["output_location"],
                failure_location=record.get("failure_location"),
                inference_id=self.inference_id,
                aws_conn_id=self.aws_conn_id,
                region_name=self.region_name,
                poll_interval=float(self.poll_interval),
                timeout=float(self.timeout),
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=float(self.timeout) + 600),
        )

    def _result(self, output_location: str) -> dict[str, Any]:
        body = self._read(output_location)
        try:
            parsed = json.loads(body)
        except ValueError as err:
            raise AsyncInferenceFailed(f"inference {self.inference_id}: the response at {output_location} is "
                                       f"not JSON: {body[:200]!r}") from err
        return {"inference_id": self.inference_id, "output_location": output_location, "response": parsed}

    def execute_complete(self, context: Any, event: dict[str, Any] | None = None) -> dict[str, Any]:
        event = event or {}
        status = event.get("status")
        if status == "success":
            return self._result(event["output_location"])
        if status == "failed":
            raise AsyncInferenceFailed(f"async inference {self.inference_id} on {self.endpoint_name} failed: "
                                       f"{event.get('reason', '').strip()}")
        raise AsyncInferenceFailed(event.get("message") or f"unexpected trigger event: {event}")
