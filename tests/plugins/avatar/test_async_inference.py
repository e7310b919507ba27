"""``SageMakerAsyncInferenceTrigger`` and ``SageMakerInvokeAsyncOperator`` on the local moto server.

moto's ``invoke_endpoint_async`` returns an ``OutputLocation``/``FailureLocation`` pair in a bucket
of its own (it ignores the endpoint's configured paths) and writes its queued result to one of them.
The trigger does not care who writes the objects, so its tests write them directly.
"""

from __future__ import annotations

import asyncio
import json
from unittest import mock

import pytest
from airflow.sdk.exceptions import TaskDeferred

from reelforge.operators.sagemaker_async import AsyncInferenceFailed, SageMakerInvokeAsyncOperator
from reelforge.triggers.sagemaker_async import SageMakerAsyncInferenceTrigger

pytestmark = pytest.mark.stack
BUCKET = "reelforge-artifacts"


def trigger(prefix: str, **kwargs) -> SageMakerAsyncInferenceTrigger:
    return SageMakerAsyncInferenceTrigger(
        output_location=f"s3://{BUCKET}/{prefix}response.json", failure_location=f"s3://{BUCKET}/{prefix}failure.json",
        inference_id="inf-1", poll_interval=0.1, **{"timeout": 30, **kwargs})


async def first_event(t: SageMakerAsyncInferenceTrigger, *, after: float = 0, write=None) -> dict:
    """The trigger's first event; ``write`` (a callable) runs ``after`` seconds into the wait."""

    async def late_write():
        await asyncio.sleep(after)
        await asyncio.to_thread(write)

    task = asyncio.create_task(late_write()) if write else None
    event = await anext(t.run())
    if task:
        await task
    return event.payload


def test_serialize_round_trips_and_is_json():
    t = trigger("p/", timeout=60, region_name="us-east-1")
    path, kwargs = t.serialize()
    assert path == "reelforge.triggers.sagemaker_async.SageMakerAsyncInferenceTrigger"
    assert json.loads(json.dumps(kwargs)) == kwargs
    assert SageMakerAsyncInferenceTrigger(**kwargs).serialize() == (path, kwargs)


def test_success_when_the_output_appears_while_waiting(s3, prefix):
    event = asyncio.run(first_event(trigger(prefix), after=0.5, write=lambda: s3.put_object(
        Bucket=BUCKET, Key=f"{prefix}response.json", Body=b'{"status": "succeeded"}')))
    assert event == {"status": "success", "inference_id": "inf-1",
                     "output_location": f"s3://{BUCKET}/{prefix}response.json"}


def test_failure_object_becomes_the_reason(s3, prefix):
    s3.put_object(Bucket=BUCKET, Key=f"{prefix}failure.json", Body=b"CUDA out of memory")
    event = asyncio.run(first_event(trigger(prefix)))
    assert event["status"] == "failed" and event["reason"] == "CUDA out of memory"


def test_timeout_when_nothing_is_written(s3, prefix):
    event = asyncio.run(asyncio.wait_for(first_event(trigger(prefix, timeout=0.5)), timeout=10))
    assert event["status"] == "timeout" and "after 0.5 s" in event["message"]


def operator(prefix: str) -> SageMakerInvokeAsyncOperator:
    return SageMakerInvokeAsyncOperator(
        task_id="fine_tune", endpoint_name="avatar-unit-endpoint", request={"job_name": "j", "lora_rank": 8},
        input_s3_uri=f"s3://{BUCKET}/{prefix}finetune/request.json", inference_id=f"inf-{prefix[:-1]}",
        poll_interval=0.1, timeout=5)


def test_execute_uploads_the_request_invokes_records_and_defers(s3, prefix):
    op = operator(prefix)
    with pytest.raises(TaskDeferred) as deferred:
        op.execute({})
    request = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{prefix}finetune/request.json")["Body"].read())
    assert request == {"job_name": "j", "lora_rank": 8}
    record = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{prefix}finetune/invocation.json")["Body"].read())
    assert record["inference_id"] == op.inference_id
    assert record["input_location"] == op.input_s3_uri
    t = deferred.value.trigger
    assert isinstance(t, SageMakerAsyncInferenceTrigger) and deferred.value.method_name == "execute_complete"
    assert (t.output_location, t.failure_location) == (record["output_location"], record["failure_location"])


def invoked_and_pending(s3, prefix: str) -> tuple[dict, tuple[str, str], tuple[str, str]]:
    """A first try that invoked moto; its answer removed, whatever moto queued: the inference is pending."""
    with pytest.raises(TaskDeferred):
        operator(prefix).execute({})
    record = json.loads(s3.get_object(Bucket=BUCKET, Key=f"{prefix}finetune/invocation.json")["Body"].read())
    out, fail = (tuple(record[k][5:].split("/", 1)) for k in ("output_location", "failure_location"))
    for bucket, key in (out, fail):
        s3.delete_object(Bucket=bucket, Key=key)
    return record, out, fail


def test_a_retry_does_not_invoke_again_when_output_exists_or_is_pending(s3, prefix):
    record, (out_bucket, out_key), _ = invoked_and_pending(s3, prefix)

    retry = operator(prefix)
    with mock.patch.object(retry.hook.conn, "invoke_endpoint_async", side_effect=AssertionError) as invoke, \
            pytest.raises(TaskDeferred) as deferred:
        retry.execute({})
    invoke.assert_not_called()
    assert deferred.value.trigger.output_location == record["output_location"]

    s3.put_object(Bucket=out_bucket, Key=out_key, Body=b'{"status": "succeeded", "model_uri": "s3://b/m.tar.gz"}')
    again = operator(prefix)
    with mock.patch.object(again.hook.conn, "invoke_endpoint_async", side_effect=AssertionError) as invoke:
        result = again.execute({})
    invoke.assert_not_called()
    assert result == {"inference_id": again.inference_id, "output_location": record["output_location"],
                      "response": {"status": "succeeded", "model_uri": "s3://b/m.tar.gz"}}


def test_a_retry_after_a_failure_invokes_again(s3, prefix):
    _, _, (bucket, key) = invoked_and_pending(s3, prefix)
    s3.put_object(Bucket=bucket, Key=key, Body=b"OOM")
    retry = operator(prefix)
    answer = {"OutputLocation": f"s3://{BUCKET}/{prefix}r2.json", "FailureLocation": f"s3://{BUCKET}/{prefix}f2.json"}
    with mock.patch.object(retry.hook.conn, "invoke_endpoint_async", return_value=answer) as invoke, \
            pytest.raises(TaskDeferred) as deferred:
        retry.execute({})
    invoke.assert_called_once_with(
        EndpointName="avatar-unit-endpoint", InputLocation=retry.input_s3_uri, InferenceId=retry.inference_id,
        ContentType="application/json", Accept="application/json", InvocationTimeoutSeconds=3600)
    assert deferred.value.trigger.output_location == answer["OutputLocation"]


def test_execute_complete_raises_with_the_failure_body_and_on_timeout():
    op = operator("p/")
    with pytest.raises(AsyncInferenceFailed, match="failed: CUDA out of memory"):
        op.execute_complete({}, {"status": "failed", "inference_id": "i", "reason": "CUDA out of memory\n"})
    with pytest.raises(AsyncInferenceFailed, match="no output"):
        op.execute_complete({}, {"status": "timeout", "inference_id": "i", "message": "no output after 5 s"})
