"""Wait in the triggerer for the result of a SageMaker asynchronous inference.

``invoke_endpoint_async`` returns where the endpoint will write its response (``OutputLocation``) and,
on an error, its failure body (``FailureLocation``). The trigger polls both objects with aiobotocore
(the provider's async S3 client) until one exists or the timeout passes, and fires once.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

#: S3 error codes meaning "not written yet".
_ABSENT = {"404", "NoSuchKey", "NotFound"}
#: The most of a failure body carried in the event (it becomes the task's error message).
MAX_REASON_BYTES = 8192


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/key`` → ``(bucket, key)``."""
    if not uri.startswith("s3://") or "/" not in uri[5:]:
        raise ValueError(f"not an s3://bucket/key URI: {uri!r}")
    bucket, _, key = uri[5:].partition("/")
    return bucket, key


class SageMakerAsyncInferenceTrigger(BaseTrigger):
    """Fire when the async inference's output or failure object appears, or on timeout.

    Event payloads (JSON-safe)::

        {"status": "success", "inference_id": ..., "output_location": "s3://..."}
        {"status": "failed", "inference_id": ..., "failure_location": "s3://...", "reason": "<failure body>"}
        {"status": "timeout", "inference_id": ..., "message": "..."}
        {"status": "error", "inference_id": ..., "message": "..."}  # S3 refused the polls (not a 404)

    :param output_location: ``OutputLocation`` returned by ``invoke_endpoint_async``.
    :param failure_location: ``FailureLocation`` returned by it (``None``: only the output is awaited).
    :param inference_id: the ``InferenceId`` (for messages).
    :param poll_interval: seconds between polls.
    :param timeout: seconds from the trigger's start before a ``timeout`` event.
    """

    def __init__(
        self,
        *,
        output_location: str,
        failure_location: str | None,
        inference_id: str,
        aws_conn_id: str | None = "aws_default",
        region_name: str | None = None,
        poll_interval: float = 30.0,
        timeout: float = 6 * 3600.0,
    ) -> None:
        super().__init__()
        self.output_location = output_location
        self.failure_location = failure_location or None
        self.inference_id = inference_id
        self.aws_conn_id = aws_conn_id
        self.region_name = region_name
        self.poll_interval = float(poll_interval)
        self.timeout = float(timeout)

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "reelforge.triggers.sagemaker_async.SageMakerAsyncInferenceTrigger",
            {
                "output_location": self.output_location,
                "failure_location": self.failure_location,
                "inference_id": self.inference_id,
                "aws_conn_id": self.aws_conn_id,
                "region_name": self.region_name,
                "poll_interval": self.poll_interval,
                "timeout": self.timeout,
            },
        )

    def _event(self, status: str, **payload: Any) -> TriggerEvent:
        return TriggerEvent({"status": status, "inference_id": self.inference_id, **payload})

    @staticmethod
    async def _exists(client: Any, uri: str) -> bool:
        from botocore.exceptions import ClientError

        bucket, key = split_s3_uri(uri)
        try:
            await client.head_object(Bucket=bucket, Key=key)
        except ClientError as err:
            if str(err.response.get("Error", {}).get("Code")) in _ABSENT:
                return False
            raise
        return True

    @staticmethod
    async def _read(client: Any, uri: str, limit: int) -> str:
        bucket, key = split_s3_uri(uri)
        response = await client.get_object(Bucket=bucket, Key=key, Range=f"bytes=0-{limit - 1}")
        async with response["Body"] as body:
            return (await body.read()).decode("utf-8", errors="replace")

    async def run(self) -> AsyncIterator[TriggerEvent]:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook
        from botocore.exceptions import BotoCoreError, ClientError

        hook = S3Hook(aws_conn_id=self.aws_conn_id, region_name=self.region_name)
        deadline = time.monotonic() + self.timeout
        self.log.info("async inference %s: waiting for %s (failure: %s)", self.inference_id,
                      self.output_location, self.failure_location)
        try:
            async with await hook.get_async_conn() as client:
                while True:
                    if await self._exists(client, self.output_location):
                        yield self._event("success", output_location=self.output_location)
                        return
                    if self.failure_location and await self._exists(client, self.failure_location):
                        reason = await self._read(client, self.failure_location, MAX_REASON_BYTES)
                        yield self._event("failed", failure_location=self.failure_location, reason=reason)
                        return
                    if time.monotonic() >= deadline:
                        yield self._event("timeout", message=(
                            f"async inference {self.inference_id}: no output at {self.output_location} "
                            f"after {self.timeout:g} s"))
                        return
                    await asyncio.sleep(min(self.poll_interval, max(deadline - time.monotonic(), 0.0)))
        except (ClientError, BotoCoreError, ValueError) as err:
            yield self._event("error", message=f"async inference {self.inference_id}: cannot poll S3: {err}")
