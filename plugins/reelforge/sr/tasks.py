"""Task bodies of the SR DAG that run in Airflow (light: S3 metadata, small JSON files over SFTP)."""

from __future__ import annotations

import logging
from typing import Any

from reelforge.settings import AWS_CONN_ID, SLURM_CONN_ID, setting
from reelforge.sr.claims import ClaimOutcome, claim_job
from reelforge.sr.delivery import success_message, verify_delivery
from reelforge.sr.job import (
    InvalidSettingsError,
    array_spec,
    build_job,
    model_estimate,
    segment_time_limit,
    worker_env,
)
from reelforge.sr.preflight import preflight
from reelforge.sr.settings import (
    ingest_queue_url,
    sr_mpix_per_second,
    sr_parallel_tasks,
    sr_settings,
    sr_task_startup_seconds,
)
from reelforge.sr.upload_settings import PROFILES_VARIABLE, parse_profiles, upload_params
from reelforge.sr.watch import sr_ledger
from reelforge.storage import InvalidSourceError, S3Object, subfolder
from reelforge.uploads import (
    check_size,
    further_sources,
    hand_back,
    head_source,
    pin_source_and_metadata,
    resolve_source,
)

log = logging.getLogger(__name__)


def _s3_client() -> Any:
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=AWS_CONN_ID).get_conn()


def _sqs_client() -> Any:
    from airflow.providers.amazon.aws.hooks.sqs import SqsHook

    return SqsHook(aws_conn_id=AWS_CONN_ID).get_conn()


def prepare_run(*, params: dict[str, Any], run_id: str, events: Any,
                conf: dict[str, Any] | None = None) -> dict[str, Any]:
    """Resolve → validate → job spec → claim. Bad input fails at once (no retry, no cluster time).

    Fields the run's ``conf`` does not set come from the upload where it says (``upload_settings``).
    """
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    settings = sr_settings()
    # first, before anything can skip or fail this run: the other uploads folded into it get runs of their own
    if further := further_sources(params.get("source_uri"), events):
        hand_back(_sqs_client(), ingest_queue_url(), further, run_id=run_id)
    try:
        source = resolve_source(params.get("source_uri"), events)
        if source is None:
            raise AirflowSkipException("the notification names no object (e.g. s3:TestEvent): nothing to do")
        s3 = _s3_client()
        announced = source.version_id
        source, metadata = pin_source_and_metadata(s3, source)
        # whatever happens next, this upload version has been picked up: the reconciler leaves it alone
        sr_ledger(settings).record(s3, source, run_id)
        check_size(source, settings.max_source_bytes)
        if announced and not params.get("source_uri"):
            latest = head_source(s3, S3Object(source.bucket, source.key), settings.max_source_bytes)
            if latest.version_id and latest.version_id != announced:
                raise AirflowSkipException(
                    f"{source.uri} version {announced} was superseded by {latest.version_id}: the newer upload wins"
                )
        params, origin = upload_params(params, conf, key=source.key, ingest_prefix=settings.ingest_prefix,
                                       metadata=metadata,
                                       profiles=parse_profiles(setting(PROFILES_VARIABLE, "")))
        if origin:
            log.info("settings that came with the upload: %s",
                     ", ".join(f"{k}={params[k]!r} ({how})" for k, how in sorted(origin.items())))
        job = build_job(source, params, settings)
        looked = preflight(s3, source)  # content checks where the object lies: bad files cost no cluster time
    except (InvalidSourceError, InvalidSettingsError) as err:
        raise AirflowFailException(f"invalid input: {err}") from err

    outcome, holder = claim_job(
        s3,
        bucket=settings.output_bucket,
        done_markers=job["done_markers"],
        claims_prefix=subfolder(settings.output_prefix, "_claims"),
        jid=job["job_id"],
        run_id=run_id,
        source_uri=source.uri,
        force=bool(params.get("force")),
    )
    if outcome is ClaimOutcome.DONE:
        raise AirflowSkipException(f"job {job['job_id']} was already delivered to {job['output_uri']}")
    if outcome is ClaimOutcome.DUPLICATE:
        raise AirflowSkipException(f"job {job['job_id']} ({source.uri}) is already handled by run {holder}")
    log.info("job %s: %s → %s (workdir %s)", job["job_id"], source.uri, job["output_uri"], job["workdir"])
    if looked and (seconds := looked.model_seconds(sr_mpix_per_second())) is not None:
        log.info("estimate before planning: %d frames of %dx%d, model time %.0f s at %.2f Mpx/s per task "
                 "(the plan refines it)", looked.frames() or 0, looked.width, looked.height, seconds,
                 sr_mpix_per_second())
    return {
        "job": job,
        "job_id": job["job_id"],
        "workdir": job["workdir"],
        "env": worker_env(job, settings),
        "cpu_partition": settings.cpu_partition,
        "gpu_partition": settings.gpu_partition,
        "gpu_gres": settings.gpu_gres or None,
        "array_throttle": settings.array_throttle,
        "slurm_args": [f"--nice={job['nice']}"],
    }


def _read_remote_json(path: str) -> dict[str, Any]:
    from reelforge.hooks.slurm import SlurmHook

    with SlurmHook(SLURM_CONN_ID) as hook:
        return hook.read_json(path)


def plan_estimate(plan: dict[str, Any]) -> dict[str, float]:
    """The plan's time at this deployment's calibrated figures (``job.model_estimate``)."""
    return model_estimate(plan, sr_mpix_per_second(), int(sr_settings().array_throttle), sr_task_startup_seconds(),
                          sr_parallel_tasks())


def read_plan_summary(workdir: str) -> dict[str, Any]:
    """What the DAG needs from plan.json: the array spec, a time limit that scales with the
    longest segment, and a few facts for the log."""
    plan = _read_remote_json(f"{workdir}/plan.json")
    estimate = plan_estimate(plan)
    summary = {
        "array": array_spec(plan),
        "segment_time_limit": segment_time_limit(plan, sr_mpix_per_second()),
        "segments": len(plan["segments"]),
        "total_frames": plan.get("total_frames"),
        "model": plan.get("model"),
        "duration_s": (plan.get("probe") or {}).get("duration"),
        "estimate": estimate,
    }
    log.info("plan: %s", summary)
    log.info("estimate: %.0f s of task time (%.0f s of it the model); about %.0f s of wall time with %d tasks at "
             "once sharing %s tasks' worth of throughput, at %.2f Mpx/s and %.0f s start-up per task (Variables "
             "reelforge_sr_mpix_per_second, reelforge_sr_task_startup_seconds, reelforge_sr_parallel_tasks)",
             estimate["task_seconds"], estimate["model_seconds"], estimate["wall_seconds"], estimate["parallel"],
             estimate.get("full_speed_tasks") or "all", estimate["mpix_per_second"], estimate["startup_seconds"])
    return summary


def publish_delivery(job: dict[str, Any], estimate: dict[str, float] | None = None, *, run_id: str) -> dict[str, Any]:
    """Verify the delivered objects against S3 and build the success message (with ``read_plan``'s estimate);
    ``receipt_uri``: where notify_success records that this run announced the job (beside the claims)."""
    delivery = _read_remote_json(f"{job['workdir']}/delivery.json")
    report = _read_remote_json(f"{job['workdir']}/report.json") | {"estimate": estimate}
    objects = verify_delivery(_s3_client(), delivery)
    for obj in objects:
        log.info("delivered %s (%s, %d bytes)", obj["uri"], obj.get("role", "?"), obj["size"])
    settings = sr_settings()  # run ids match [A-Za-z0-9_.~:+-]+: safe in a key
    receipt = f"{subfolder(settings.output_prefix, '_announced')}{job['job_id']}/{run_id}.json"
    return {"objects": objects, "message": success_message(job, objects, report), "output_uri": job["output_uri"],
            "receipt_uri": f"s3://{settings.output_bucket}/{receipt}"}
