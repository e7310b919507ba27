"""Archived catalogs: which videos a backfill day covers, which are already done, and the summary."""

from __future__ import annotations

import csv
import io
import json
import logging
from typing import Any

from reelforge.settings import SRSettings
from reelforge.sr.job import build_job
from reelforge.storage import VIDEO_EXTENSIONS, InvalidSourceError, S3Object, parse_s3_uri, validate_key

log = logging.getLogger(__name__)

#: Settings a backfill uses for every video (the SR DAG's form defaults).
CATALOG_PARAMS: dict[str, Any] = {
    "model": "auto", "scale": 4, "container": "mp4", "codec": "libx264", "crf": 18, "ten_bit": "auto",
    "deinterlace": "auto", "sar": "square", "segment_seconds": 10, "preview_seconds": 0, "priority": "low",
}


def _manifest_sources(body: bytes, key: str) -> list[S3Object]:
    """A manifest is JSON (a list of URIs or of ``{"source_uri": ...}``) or CSV with a ``source_uri`` column."""
    if key.endswith(".json"):
        rows = json.loads(body)
        uris = [r if isinstance(r, str) else r["source_uri"] for r in rows]
    else:
        uris = [row["source_uri"] for row in csv.DictReader(io.StringIO(body.decode("utf-8-sig")))]
    return [parse_s3_uri(u) for u in uris if u.strip()]


def list_day(s3: Any, *, bucket: str, archive_prefix: str, manifest_prefix: str, day: str) -> list[S3Object]:
    """The day's manifest if there is one, else every video under ``<archive_prefix><day>/``."""
    for ext in ("json", "csv"):
        key = f"{manifest_prefix}{day}.{ext}"
        try:
            body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
        except s3.exceptions.NoSuchKey:
            continue
        log.info("using manifest s3://%s/%s", bucket, key)
        return _manifest_sources(body, key)
    found: list[S3Object] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{archive_prefix}{day}/"):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            if key.rsplit(".", 1)[-1].lower() not in VIDEO_EXTENSIONS:
                log.info("not a video, ignored: %s", key)
                continue
            found.append(S3Object(bucket, key, etag=obj["ETag"].strip('"'), size=obj["Size"]))
    return found


def plan_day(s3: Any, sources: list[S3Object], settings: SRSettings, day: str) -> dict[str, list[dict[str, Any]]]:
    """Split the day's videos into work to do and videos already delivered (skipped)."""
    todo, skipped, invalid = [], [], []
    for source in sources:
        try:
            validate_key(source.key)
            if source.etag is None:  # manifest entries: pin the current version
                head = s3.head_object(Bucket=source.bucket, Key=source.key)
                source = S3Object(source.bucket, source.key, head.get("VersionId"), head["ETag"].strip('"'),
                                  head["ContentLength"])
            job = build_job(source, CATALOG_PARAMS, settings)
        except (InvalidSourceError, s3.exceptions.ClientError) as err:
            invalid.append({"source": source.uri, "reason": str(err)})
            continue
        try:
            s3.head_object(Bucket=settings.output_bucket, Key=f"{job['output_prefix']}report.json")
            skipped.append({"source": source.uri, "job_id": job["job_id"], "output": job["output_uri"]})
        except s3.exceptions.ClientError:
            todo.append({
                "source": source.uri,
                "job_id": job["job_id"],
                "output": job["output_uri"],
                "run_id": f"catalog__{day}__{job['job_id']}",
                "conf": {**CATALOG_PARAMS, "source_uri": source.uri},
            })
    return {"todo": todo, "skipped": skipped, "invalid": invalid}


def summarize(day_plan: dict[str, list[dict[str, Any]]], run_states: dict[str, str],
              failed_tasks: dict[str, list[str]]) -> dict[str, Any]:
    """done / skipped / failed (with reasons) for one backfill day."""
    done, failed = [], list(day_plan["invalid"])
    for item in day_plan["todo"]:
        state = run_states.get(item["run_id"])
        if state == "success":
            done.append({"source": item["source"], "output": item["output"]})
        else:
            tasks = failed_tasks.get(item["run_id"]) or []
            reason = f"SR run {item['run_id']} ended {state or 'not started'}"
            if tasks:
                reason += f" (failed: {', '.join(tasks)})"
            failed.append({"source": item["source"], "reason": reason})
    return {"done": done, "skipped": day_plan["skipped"], "failed": failed,
            "counts": {"done": len(done), "skipped": len(day_plan["skipped"]), "failed": len(failed)}}
