"""One run per job id: a claim object written with ``If-None-Match: *`` (S3 conditional write).

A duplicate notification for the same object version (same job id) finds the claim of the first
run and does nothing. Clearing or retrying the first run keeps its run id, so it passes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from reelforge.s3_objects import object_exists


class ClaimOutcome(StrEnum):
    CLAIMED = "claimed"      # this run does the work
    DUPLICATE = "duplicate"  # another run holds the claim
    DONE = "done"            # the result is already delivered


def claim_job(
    s3_client: Any,
    *,
    bucket: str,
    done_markers: Sequence[str],
    claims_prefix: str,
    jid: str,
    run_id: str,
    source_uri: str,
    force: bool = False,
) -> tuple[ClaimOutcome, str | None]:
    """Claim ``jid`` for ``run_id``; returns the outcome and the run that holds the claim.

    The job is done when any of ``done_markers`` (its delivered ``report.json``) exists.
    """
    if not force and any(object_exists(s3_client, bucket, key) for key in done_markers):
        return ClaimOutcome.DONE, None
    key = f"{claims_prefix}{jid}.json"
    body = json.dumps({"job_id": jid, "run_id": run_id, "source": source_uri}).encode()
    if force:
        s3_client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json")
        return ClaimOutcome.CLAIMED, run_id
    try:
        s3_client.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/json", IfNoneMatch="*")
        return ClaimOutcome.CLAIMED, run_id
    except s3_client.exceptions.ClientError as err:
        if err.response.get("Error", {}).get("Code") not in {"PreconditionFailed", "ConditionalRequestConflict"}:
            raise
    holder = json.loads(s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()).get("run_id")
    return (ClaimOutcome.CLAIMED if holder == run_id else ClaimOutcome.DUPLICATE), holder

