"""Archived catalogs: which videos a backfill day covers, which are already done, and the summary."""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Callable
from typing import Any

from reelforge.s3_objects import object_exists
from reelforge.sr import form
from reelforge.sr.job import build_job
from reelforge.sr.settings import SRSettings
from reelforge.storage import VIDEO_EXTENSIONS, InvalidSourceError, S3Object, parse_s3_uri, validate_key

log = logging.getLogger(__name__)

#: Settings a backfill uses for every video: the SR DAG's form defaults, at low priority.
CATALOG_PARAMS: dict[str, Any] = {**form.defaults(), "priority": "low"}


def _manifest_sources(body: bytes, key: str) -> list[S3Object]:
    """A manifest is JSON (a list of URIs or of ``{"source_uri": ...}``) or CSV with a ``source_uri`` column."""
    if key.endswith(".json"):
        rows = json.loads(body)
        uris = [r if isinstance(r, str) else r["source_uri"] for r in rows]
    else:
        uris = [row["source_uri"] for row in csv.DictReader(io.StringIO(body.decode("utf-8-sig")))]
    return [parse_s3_uri(u) for u in uris if u.strip()]


def read_manifest(s3: Any, uri: str) -> list[S3Object]:
    """The videos a manifest object (``.json`` or ``.csv``) names."""
    manifest = parse_s3_uri(uri)
    if not manifest.key.endswith((".json", ".csv")):
        raise InvalidSourceError(f"a manifest is a .json or .csv object, not {uri!r}")
    try:
        body = s3.get_object(Bucket=manifest.bucket, Key=manifest.key)["Body"].read()
    except s3.exceptions.NoSuchKey as err:
        raise InvalidSourceError(f"manifest {uri} does not exist") from err
    return _manifest_sources(body, manifest.key)


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
    return list_videos(s3, bucket, f"{archive_prefix}{day}/")


def list_videos(s3: Any, bucket: str, prefix: str) -> list[S3Object]:
    """Every video object under ``prefix`` (other files are logged and left out)."""
    if prefix and (prefix.startswith("/") or not prefix.endswith("/") or ".." in prefix.split("/")):
        raise InvalidSourceError(f"archive prefix {prefix!r} must be a folder: no leading '/', ending in '/', no '..'")
    found: list[S3Object] = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        for obj in page.get("Contents", []):
            key = obj["Key"]
            if key.rsplit(".", 1)[-1].lower() not in VIDEO_EXTENSIONS:
                log.info("not a video, ignored: %s", key)
                continue
            found.append(S3Object(bucket, key, etag=obj["ETag"].strip('"'), size=obj["Size"]))
    return found


def plan_day(s3: Any, sources: list[S3Object], settings: SRSettings, day: str,
             params: dict[str, Any] | None = None,
             estimate: Callable[[S3Object], float | None] | None = None) -> dict[str, Any]:
    """Split the day's videos into work to do and videos already delivered (skipped).

    ``params`` are the SR form values every run gets (default :data:`CATALOG_PARAMS`); ``estimate`` gives
    a video's model seconds (``None``: unknown), summed into ``estimate``.
    """
    params = params or CATALOG_PARAMS
    todo, skipped, invalid = [], [], []
    for source in sources:
        try:
            validate_key(source.key)
            if source.etag is None:  # manifest entries: pin the current version
                head = s3.head_object(Bucket=source.bucket, Key=source.key)
                source = S3Object(source.bucket, source.key, head.get("VersionId"), head["ETag"].strip('"'),
                                  head["ContentLength"])
            job = build_job(source, params, settings)
        except (InvalidSourceError, s3.exceptions.ClientError) as err:
            invalid.append({"source": source.uri, "reason": str(err)})
            continue
        if any(object_exists(s3, settings.output_bucket, key) for key in job["done_markers"]):
            skipped.append({"source": source.uri, "job_id": job["job_id"], "output": job["output_uri"]})
        else:
            todo.append({
                "source": source.uri,
                "job_id": job["job_id"],
                "output": job["output_uri"],
                "run_id": f"catalog__{day}__{job['job_id']}",
                "conf": {**params, "source_uri": source.uri},
                "model_seconds": None if estimate is None else estimate(source),
            })
    known = [t["model_seconds"] for t in todo if t["model_seconds"] is not None]
    return {"todo": todo, "skipped": skipped, "invalid": invalid,
            "estimate": {"videos": len(todo), "model_seconds": round(sum(known), 1), "unknown": len(todo) - len(known)}}


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
