"""SNS publish that a retry of the same task does not repeat: the provider's operator plus a receipt in S3.

A try can publish and then lose touch with the API server before it reports success (a busy scheduler
on SQLite, a killed worker); Airflow then retries it and the subscribers get the message twice. The
first publish writes a receipt (message id, run, try) to ``receipt_uri`` with ``If-None-Match: *``;
a later try finds it and returns the recorded message id instead of publishing again. A crash between
the publish and the receipt still repeats the message once: SNS is at-least-once in any case, and the
message carries the job id for subscribers that must not act twice.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from airflow.providers.amazon.aws.operators.sns import SnsPublishOperator

from reelforge.s3_objects import ABSENT_CODES
from reelforge.storage import parse_s3_uri


class SnsPublishOnceOperator(SnsPublishOperator):
    """:class:`SnsPublishOperator` that publishes at most once per ``receipt_uri`` (one per run and message).

    :param receipt_uri: ``s3://bucket/key`` of the receipt; name it after the run so a new run publishes.
    """

    template_fields: Sequence[str] = (*SnsPublishOperator.template_fields, "receipt_uri")

    def __init__(self, *, receipt_uri: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.receipt_uri = receipt_uri

    def _s3(self) -> Any:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        return S3Hook(aws_conn_id=self.aws_conn_id).get_conn()

    def execute(self, context: Any) -> str:
        receipt = parse_s3_uri(self.receipt_uri)
        s3 = self._s3()
        try:
            earlier = json.loads(s3.get_object(Bucket=receipt.bucket, Key=receipt.key)["Body"].read())
        except s3.exceptions.ClientError as err:
            if err.response.get("Error", {}).get("Code") not in ABSENT_CODES:
                raise
        else:
            self.log.info("already published as %s by try %s of %s: not again", earlier["message_id"],
                          earlier["try_number"], earlier["run_id"])
            return earlier["message_id"]
        published = super().execute(context)  # the provider returns publish()'s response
        message_id = published["MessageId"] if isinstance(published, dict) else str(published)
        ti = context["ti"]
        body = {"message_id": message_id, "run_id": ti.run_id, "try_number": ti.try_number,
                "published_at": datetime.now(UTC).isoformat(timespec="seconds")}
        s3.put_object(Bucket=receipt.bucket, Key=receipt.key, Body=json.dumps(body).encode(),
                      ContentType="application/json", IfNoneMatch="*")
        self.log.info("published %s; receipt %s", message_id, self.receipt_uri)
        return message_id
