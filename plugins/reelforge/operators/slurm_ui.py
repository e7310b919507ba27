"""What :class:`~reelforge.operators.slurm.SlurmJobOperator` shows in the Airflow UI.

* ``slurm_job`` XCom (job id, name, work dir, log dir) as soon as a job is submitted or re-attached to,
  for the *Slurm job* link, which opens the task log;
* a collapsible ``Slurm job <id>: scontrol / sacct`` section in that log once the job ended;
* ``delivery`` XCom from the job's delivery manifest (``delivery_manifest``), for the S3 links.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from typing import Any

from reelforge.links import DELIVERY_KEY, SLURM_JOB_KEY, delivery_links

#: Most lines of ``scontrol``/``sacct`` output copied into the log (an array lists every task).
MAX_DETAIL_LINES = 200
SACCT_FORMAT = "JobID,JobName%40,Partition,State,ExitCode,Elapsed,NodeList,MaxRSS,Start,End"
#: Lifetime of the presigned links on a custom S3 endpoint (SigV4's longest).
PRESIGN_SECONDS = 7 * 24 * 3600


def push_job(context: Mapping[str, Any], run: Mapping[str, Any], job_id: str) -> None:
    """Record the job this try waits for (the *Slurm job* link reads it)."""
    context["ti"].xcom_push(
        key=SLURM_JOB_KEY,
        value={"job_id": str(job_id), "job_name": run["name"], "workdir": run["workdir"], "log_dir": run["log_dir"]},
    )


def _capped(text: str) -> str:
    lines = text.rstrip().splitlines()
    if len(lines) > MAX_DETAIL_LINES:
        lines = [*lines[:MAX_DETAIL_LINES], f"… {len(lines) - MAX_DETAIL_LINES} more lines"]
    return "\n".join(lines)


def job_detail(hook: Any, job_id: str) -> str:
    """``scontrol show job`` (while the controller remembers the job) and ``sacct`` (with accounting)."""
    parts = []
    shown = hook.run_command(hook._slurm("scontrol", "show", "job", job_id), check=False)
    parts.append(f"$ scontrol show job {job_id}\n"
                 + _capped(shown.stdout if shown.rc == 0 else shown.stderr or "(not known to the controller)"))
    if hook.uses_sacct():
        acct = hook.run_command(hook._slurm("sacct", "-j", job_id, "-P", f"--format={SACCT_FORMAT}"), check=False)
        parts.append(f"$ sacct -j {job_id}\n" + _capped(acct.stdout if acct.rc == 0 else acct.stderr))
    else:
        parts.append("(no Slurm accounting on this cluster: sacct not available)")
    return "\n".join(parts)


def log_job_detail(log: Any, hook: Any, job_id: str) -> None:
    """Write :func:`job_detail` into the task log as a collapsible section; never fails the task."""
    try:
        text = job_detail(hook, job_id)
    except Exception as err:  # the detail is a courtesy: the job's outcome is already known
        text = f"(could not read the job's detail: {err})"
    log.info("::group::Slurm job %s: scontrol / sacct", job_id)
    log.info("%s", text)
    log.info("::endgroup::")


def manifest_path(workdir: str, manifest: str) -> str:
    """``manifest`` relative to the job's work dir (an absolute path is kept)."""
    return manifest if manifest.startswith("/") else posixpath.join(workdir, manifest)


def delivery_record(manifest: Mapping[str, Any], *, region: str | None, endpoint_url: str | None) -> dict[str, Any]:
    """The ``delivery`` XCom: the manifest's destination and objects (bucket, key, role) and the S3 endpoint.

    The manifest is the worker's ``delivery.json``: ``{"bucket", "prefix", "objects": [{"role", "bucket",
    "key", ...}]}``.
    """
    objects = [
        {"role": str(o.get("role") or ""), "bucket": str(o["bucket"]), "key": str(o["key"])}
        for o in manifest.get("objects") or []
        if isinstance(o, Mapping) and o.get("bucket") and o.get("key")
    ]
    bucket = manifest.get("bucket") or (objects[0]["bucket"] if objects else None)
    return {"bucket": bucket, "prefix": manifest.get("prefix"), "objects": objects, "region": region,
            "endpoint_url": endpoint_url or None}


def aws_location(aws_conn_id: str | None) -> tuple[str | None, str | None]:
    """``(region, endpoint_url)`` of the AWS connection (``endpoint_url`` only for a custom endpoint)."""
    if not aws_conn_id:
        return None, None
    from airflow.sdk import BaseHook

    extra = BaseHook.get_connection(aws_conn_id).extra_dejson
    endpoint = extra.get("endpoint_url") or (extra.get("service_config", {}).get("s3", {}) or {}).get("endpoint_url")
    return extra.get("region_name"), endpoint


def presigned_links(record: Mapping[str, Any], aws_conn_id: str | None, client: Any = None) -> dict[str, str]:
    """The delivery's links as presigned GET / ListObjectsV2 URLs (a custom endpoint has no console)."""
    if client is None:
        from airflow.providers.amazon.aws.hooks.base_aws import AwsBaseHook

        client = AwsBaseHook(aws_conn_id=aws_conn_id, client_type="s3").conn

    def get(bucket: str, key: str) -> str:
        return client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                             ExpiresIn=PRESIGN_SECONDS)

    def listing(bucket: str, prefix: str) -> str:
        return client.generate_presigned_url("list_objects_v2", Params={"Bucket": bucket, "Prefix": prefix},
                                             ExpiresIn=PRESIGN_SECONDS)

    return delivery_links(record, object_url=get, prefix_url=listing)


def push_delivery(context: Mapping[str, Any], log: Any, hook: Any, run: Mapping[str, Any], manifest: str,
                  aws_conn_id: str | None) -> None:
    """Read the job's delivery manifest and push the ``delivery`` XCom (a missing manifest is logged)."""
    path = manifest_path(run["workdir"], manifest)
    try:
        data = hook.read_json(path)
    except (FileNotFoundError, ValueError) as err:
        log.warning("No delivery manifest at %s (%s): no S3 links for this task", path, err)
        return
    region, endpoint = aws_location(aws_conn_id)
    record = delivery_record(data, region=region, endpoint_url=endpoint)
    if record["endpoint_url"]:
        record["urls"] = presigned_links(record, aws_conn_id)
    context["ti"].xcom_push(key=DELIVERY_KEY, value=record)
    log.info("Delivered %d objects under s3://%s/%s", len(record["objects"]), record["bucket"], record["prefix"] or "")
