"""Task bodies of the ``avatar_personalization`` DAG that run in Airflow (S3, SageMaker runtime, metadata)."""

from __future__ import annotations

import json
import logging
import tempfile
import time
from typing import Any

from reelforge.avatar.mme import MmeResponseError, decode_image, sample_request
from reelforge.avatar.package import (
    PackageError,
    expected_manifest,
    inspect_package,
    manifest_path,
    verify_manifest,
)
from reelforge.avatar.plan import check_selfies, form_params, generation_requests, plan_avatar
from reelforge.avatar.settings import AvatarSettings, avatar_settings
from reelforge.avatar.watch import selfies_from_marker, watch_config
from reelforge.sagemaker_requests import InvalidParamsError, aws_client, list_objects, s3_console, split_s3_uri

log = logging.getLogger(__name__)

#: What a loading multi-model endpoint answers while it fetches a model; worth a few more tries.
_NOT_READY = {"ModelNotReadyException", "ThrottlingException", "ServiceUnavailable"}


def _fail(message: str) -> Exception:
    from airflow.sdk.exceptions import AirflowFailException

    return AirflowFailException(message)


def _heads(s3: Any, bucket: str, objects: list[dict[str, Any]], max_bytes: int) -> dict[str, bytes]:
    """First 16 bytes of each candidate image (only the ones that can pass the cheaper checks)."""
    heads = {}
    for o in objects:
        if 0 < int(o.get("Size", 0)) <= max_bytes and not o["Key"].endswith("/"):
            heads[o["Key"]] = s3.get_object(Bucket=bucket, Key=o["Key"], Range="bytes=0-15")["Body"].read()
    return heads


def plan_run(*, params: dict[str, Any], run_id: str, run_after: Any, events: Any) -> dict[str, Any]:
    """Resolve the selfie set (form or upload), refuse bad input at once, derive every name and request."""
    from airflow.sdk.exceptions import AirflowSkipException

    from reelforge.uploads import sources_from_asset_events

    settings = avatar_settings()
    params = dict(params)
    if not params.get("selfies_uri"):
        for obj in sources_from_asset_events(events):
            found = selfies_from_marker(obj.bucket, obj.key, settings.ingest_bucket, settings.ingest_prefix)
            if found:
                params["user_id"], params["selfies_uri"] = found
                break
        else:
            if events:
                raise AirflowSkipException(f"the upload is not a selfie set (<prefix><user>/<set>/_READY under "
                                           f"s3://{settings.ingest_bucket}/{settings.ingest_prefix})")
            raise _fail("no selfies: give selfies_uri (s3://bucket/prefix/ of 4+ face photos) and user_id")
    s3 = aws_client("s3")
    try:
        p = form_params(params)
        bucket, prefix = split_s3_uri(p["selfies_uri"])
        objects = list_objects(s3, bucket, prefix)
        if len(objects) <= settings.max_selfies + 1:  # too many: refused without reading any of them
            keys = check_selfies(objects, _heads(s3, bucket, objects, settings.max_selfie_bytes), settings)
        else:
            keys = check_selfies(objects, {}, settings)
        plan = plan_avatar(p=p, run_id=run_id, run_after=run_after, settings=settings)
    except InvalidParamsError as err:
        raise _fail(f"invalid input: {err}") from err
    plan = {**plan, "selfies": len(keys)}
    bucket, key = split_s3_uri(plan["plan_uri"])  # the run's record: what it asked for, where things go
    s3.put_object(Bucket=bucket, Key=key, Body=json.dumps(plan, indent=2).encode(), ContentType="application/json")
    log.info("run %s: %d selfies of user %s under %s → model %s (inference %s)", plan["key"], len(keys),
             p["user_id"], p["selfies_uri"], plan["model_name"], plan["inference_id"])
    return plan


def verify_package(*, plan: dict[str, Any], finetune: dict[str, Any]) -> dict[str, Any]:
    """Download ``model.tar.gz`` and check members, manifest sha256s and that it fits the serving base."""
    settings = avatar_settings()
    response = finetune["response"]
    request = plan["request"]
    if response.get("status") != "succeeded":
        raise _fail(f"fine-tune {plan['inference_id']} answered status {response.get('status')!r}: {response}")
    if response.get("model_uri") != request["output_s3_uri"]:
        raise _fail(f"the endpoint wrote {response.get('model_uri')!r}, not {request['output_s3_uri']!r}")
    s3 = aws_client("s3")
    bucket, key = split_s3_uri(request["output_s3_uri"])
    head = s3.head_object(Bucket=bucket, Key=key)
    if head["ContentLength"] > settings.max_package_bytes:
        raise _fail(f"{request['output_s3_uri']} is {head['ContentLength']} bytes: at most "
                    f"{settings.max_package_bytes}")
    name = request["model_name"]
    expected = expected_manifest(request, base_model_id=settings.base_model_id,
                                 base_model_revision=settings.base_model_revision)
    with tempfile.TemporaryFile() as tmp:
        s3.download_fileobj(bucket, key, tmp)
        tmp.seek(0)
        try:
            found = inspect_package(tmp, model_name=name, max_unpacked_bytes=4 * settings.max_package_bytes)
        except PackageError as err:
            raise _fail(f"{request['output_s3_uri']}: {err}") from err
    problems = verify_manifest(found, expected)
    if response.get("manifest") not in (None, found["manifest"]):
        problems.append("the response's manifest differs from the package's manifest.json")
    if problems:
        raise _fail(f"{request['output_s3_uri']} refused: " + "; ".join(problems))
    log.info("%s: %d files, sha256s match, base %s@%s", request["output_s3_uri"], len(found["files"]),
             settings.base_model_id, settings.base_model_revision)
    return {"model_uri": request["output_s3_uri"], "etag": head["ETag"], "bytes": head["ContentLength"],
            "files": len(found["files"]), "manifest_sha256": found["files"][manifest_path(name)]}


def register_model(*, plan: dict[str, Any], package: dict[str, Any]) -> str:
    """Copy the checked package to the MME's model prefix as ``<model_name>.tar.gz`` (once)."""
    from botocore.exceptions import ClientError

    s3 = aws_client("s3")
    src_bucket, src_key = split_s3_uri(package["model_uri"])
    bucket, key = split_s3_uri(plan["registered_uri"])
    marker = {"manifest-sha256": package["manifest_sha256"], "source-etag": package["etag"].strip('"')}
    try:
        existing = s3.head_object(Bucket=bucket, Key=key)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") not in ("404", "NoSuchKey", "NotFound"):
            raise
        existing = None
    if existing is not None:
        if existing.get("Metadata", {}) == marker:
            log.info("%s already registered", plan["registered_uri"])
            return plan["registered_uri"]
        # The MME caches a model by name: a different package under the same name would never be served.
        raise _fail(f"{plan['registered_uri']} exists with other content ({existing.get('Metadata')}); "
                    "not overwriting a served model name")
    s3.copy({"Bucket": src_bucket, "Key": src_key}, bucket, key,
            ExtraArgs={"Metadata": marker, "MetadataDirective": "REPLACE", "CopySourceIfMatch": package["etag"]})
    copied = s3.head_object(Bucket=bucket, Key=key)
    if copied["ContentLength"] != package["bytes"]:
        raise RuntimeError(f"copy to {plan['registered_uri']} has {copied['ContentLength']} bytes, "
                           f"not {package['bytes']}")
    log.info("registered %s as %s", package["model_uri"], plan["registered_uri"])
    return plan["registered_uri"]


def _invoke(rt: Any, plan: dict[str, Any], payload: bytes, content_type: str, *, tries: int,
            wait_s: float) -> dict[str, Any]:
    from botocore.exceptions import ClientError

    for attempt in range(1, tries + 1):
        try:
            return rt.invoke_endpoint(EndpointName=plan["mme_endpoint"], TargetModel=plan["target_model"],
                                      ContentType=content_type, Body=payload)
        except ClientError as err:
            code = err.response.get("Error", {}).get("Code")
            if code not in _NOT_READY or attempt == tries:
                raise
            log.info("%s not ready on %s (%s): try %d of %d in %.0f s", plan["target_model"], plan["mme_endpoint"],
                     code, attempt, tries, wait_s)
            time.sleep(wait_s)
    raise AssertionError("unreachable")


def generate_samples(*, plan: dict[str, Any], registered_uri: str, dag_id: str, run_id: str) -> dict[str, Any]:
    """Warm the model up on the MME, generate the sample avatars, store them; the user message and where
    notify_user records that it was sent."""
    settings = avatar_settings()
    s3, rt = aws_client("s3"), aws_client("sagemaker-runtime")
    bucket, prefix = split_s3_uri(plan["samples_uri"])
    requests = generation_requests(plan, settings)
    records = []
    for i, body in enumerate(requests):
        # KServe v2 (tritonclient), one image per request: each must fit the real-time limit (limits.py).
        payload, content_type = sample_request(body)
        # The first call loads the model onto the endpoint (the warm-up): it may answer "not ready" a while.
        response = _invoke(rt, plan, payload, content_type, tries=10 if i == 0 else 3, wait_s=15)
        try:
            image = decode_image(response["Body"].read(), response.get("ContentType", ""))
        except MmeResponseError as err:
            raise RuntimeError(f"sample {i}: {plan['mme_endpoint']} answered no image: {err}") from err
        key = f"{prefix}avatars/avatar-{i:02d}.png"
        s3.put_object(Bucket=bucket, Key=key, Body=image, ContentType="image/png")
        records.append({"key": key, "request": body, "bytes": len(image)})
    record = {"endpoint": plan["mme_endpoint"], "target_model": plan["target_model"], "model": registered_uri,
              "protocol": "KServe v2, Triton binary tensor extension", "samples": records}
    s3.put_object(Bucket=bucket, Key=f"{prefix}generation.json", Body=json.dumps(record, indent=2).encode(),
                  ContentType="application/json")
    return {"message": user_message(plan=plan, s3=s3, keys=[r["key"] for r in records], settings=settings,
                                    dag_id=dag_id),
            "attributes": {"event": "avatar_ready", "user_id": plan["user_id"]},
            "receipt_uri": watch_config().receipt_uri(run_id)}


def user_message(*, plan: dict[str, Any], s3: Any, keys: list[str], settings: AvatarSettings, dag_id: str) -> str:
    """JSON for the user topic: the model name and a time-limited link per avatar."""
    bucket, _ = split_s3_uri(plan["samples_uri"])
    region = s3.meta.region_name
    avatars = [{"uri": f"s3://{bucket}/{k}",
                "url": s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": k},
                                                 ExpiresIn=settings.link_expiry_s)} for k in keys]
    return json.dumps({
        "event": "avatar_ready", "dag_id": dag_id, "run_id": plan["run_id"], "user_id": plan["user_id"],
        "model_name": plan["model_name"], "target_model": plan["target_model"], "endpoint": plan["mme_endpoint"],
        "model": plan["registered_uri"], "avatars": avatars, "links_expire_in_s": settings.link_expiry_s,
        "folder": s3_console(plan["samples_uri"], region),
    })
