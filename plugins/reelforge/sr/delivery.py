"""Check what the assemble job delivered and word the success message."""

from __future__ import annotations

import json
from typing import Any


class DeliveryError(RuntimeError):
    """The delivery record and what S3 holds disagree."""


def verify_delivery(s3_client: Any, delivery: dict[str, Any]) -> list[dict[str, Any]]:
    """Every object named in ``delivery.json`` exists in S3 with the recorded size."""
    checked = []
    for item in delivery.get("objects", []):
        head = s3_client.head_object(Bucket=item["bucket"], Key=item["key"])
        if int(head["ContentLength"]) != int(item["size"]):
            raise DeliveryError(
                f"s3://{item['bucket']}/{item['key']} has {head['ContentLength']} bytes, expected {item['size']}"
            )
        checked.append({**item, "uri": f"s3://{item['bucket']}/{item['key']}"})
    if not checked:
        raise DeliveryError("the delivery record lists no objects")
    return checked


def _estimate_vs_actual(report: dict[str, Any]) -> dict[str, Any] | None:
    """The plan's model-time estimate against the segments' measured time (calibration feedback)."""
    estimate = report.get("estimate")
    if not estimate:
        return None
    segments = report.get("segments") or {}
    actual = segments.get("elapsed_s_total")  # each task end to end, as the calibrated rate is measured
    expected = estimate.get("task_seconds", estimate["model_seconds"])
    ratio = round(actual / expected, 2) if actual and expected else None
    return {"task_seconds": expected, "wall_seconds": estimate["wall_seconds"],
            "actual_task_seconds": actual, "actual_over_estimate": ratio}


def success_message(job: dict[str, Any], objects: list[dict[str, Any]], report: dict[str, Any]) -> str:
    """A JSON message for subscribers: where the result is and what it is."""
    video = next((o["uri"] for o in objects if o.get("role") == "video"), objects[0]["uri"])
    body = {
        "event": "sr_succeeded",
        "job_id": job["job_id"],
        "source": job["source"]["uri"],
        "output": video,
        "output_prefix": job["output_uri"],
        "report": next((o["uri"] for o in objects if o.get("role") == "report"), None),
        "previews": [o["uri"] for o in objects if o.get("role") == "preview"],
        "frames": report.get("frames") or report.get("output", {}).get("frames"),
        "quality": report.get("quality"),
        "quality_warning": (report.get("quality") or {}).get("warning"),
        "estimate": _estimate_vs_actual(report),
    }
    return json.dumps(body, default=str)
