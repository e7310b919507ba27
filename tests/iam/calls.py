"""From recorded AWS calls to IAM actions, resources and the policy (principal) that must allow them.

Shared by the session check (``tests/iam/recording.py``), the record generator
(``python tests/iam/record_operations.py``) and the policy test (``tests/iam/test_iam_policies.py``).

Which policy a call belongs to (its principal):

* the SR worker (``reelforge-sr`` on the Slurm nodes) → ``sr-cluster-node-policy.json``; the AnimateAnyone
  jobs' code (``python -m reelforge_aa`` on the cluster) → ``animate-anyone-cluster-node-policy.json``;
* an Airflow task or trigger of a DAG → that workflow's ``*-airflow-policy.json`` (by DAG id);
* a trigger with no task (an asset watcher on an SQS queue) or a deadline-alert callback in an Airflow
  process → the workflow whose queue or topic it names;
* anything else is *unattributed* (the session check reports it).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlparse

ROOT = Path(__file__).resolve().parents[2]
IAM_DIR = ROOT / "include" / "iam"
RECORD = IAM_DIR / "operations.json"

# DAG id prefix → workflow → its Airflow policy.
DAG_WORKFLOWS = (
    ("video_super_resolution", "sr"), ("video_sr_reconciler", "sr"), ("video_catalog_backfill", "sr"),
    ("stylegan2_", "stylegan2"), ("avatar_", "avatar"), ("animate_anyone", "animate-anyone"),
)
# A resource name fragment → workflow (asset watchers: a trigger with no task instance).
RESOURCE_WORKFLOWS = (
    ("reelforge-sr-", "sr"), ("reelforge-stylegan2-", "stylegan2"), ("reelforge-avatar-", "avatar"),
    ("reelforge-animate-anyone-", "animate-anyone"),
)
# Processes on the cluster nodes (their command, see the recorder's "process") → the nodes' policy.
WORKER_PROCESSES = {"reelforge-sr": "sr-cluster-node-policy.json", "reelforge_sr": "sr-cluster-node-policy.json",
                    "reelforge_aa": "animate-anyone-cluster-node-policy.json",
                    "reelforge-aa": "animate-anyone-cluster-node-policy.json"}
# botocore client name → IAM service prefix, where they differ.
IAM_PREFIX = {"sagemaker-runtime": "sagemaker", "sagemaker-runtime-v2": "sagemaker"}
# Operations that need no IAM permission.
NO_PERMISSION = {"sts:GetCallerIdentity"}
# S3 operations whose IAM action has another name (the service authorization reference, "Amazon S3").
S3_ACTIONS = {
    "HeadObject": "GetObject", "CreateMultipartUpload": "PutObject", "UploadPart": "PutObject",
    "CompleteMultipartUpload": "PutObject", "CopyObject": "PutObject", "UploadPartCopy": "PutObject",
    "ListObjects": "ListBucket", "ListObjectsV2": "ListBucket", "HeadBucket": "ListBucket",
    "ListObjectVersions": "ListBucketVersions", "ListParts": "ListMultipartUploadParts",
    "ListMultipartUploads": "ListBucketMultipartUploads", "DeleteObjects": "DeleteObject",
}
# A ListBucket example carries the request's s3:prefix (policies scope listing with that condition key).
PREFIX_MARK = " s3:prefix="
# SQS batch operations are authorized by the single-message action (SQS has no *Batch IAM actions).
SQS_ACTIONS = {"DeleteMessageBatch": "DeleteMessage", "SendMessageBatch": "SendMessage",
               "ChangeMessageVisibilityBatch": "ChangeMessageVisibility"}
S3_VERSIONED = {"GetObject": "GetObjectVersion", "DeleteObject": "DeleteObjectVersion"}
# SageMaker request parameter → ARN resource type.
SAGEMAKER_NAMES = (
    ("TrainingJobName", "training-job"), ("ProcessingJobName", "processing-job"),
    ("ModelPackageGroupName", "model-package-group"), ("EndpointConfigName", "endpoint-config"),
    ("EndpointName", "endpoint"), ("ModelName", "model"),
)
SAGEMAKER_ROLE_CREATES = {"CreateTrainingJob", "CreateProcessingJob", "CreateModel", "CreateTransformJob"}


# Names the tests give their resources → the production names the policies scope to (the tests namespace
# their prefixes, model package groups and endpoints so that runs on the shared stack do not clash), and
# moto's account and region out of what is committed (tests/test_no_fake_account.py).
TEST_NAMES = (
    (re.compile(r"\b(stylegan2|avatar)-test-[0-9a-f]{8}/"), r"\1/"),
    (re.compile(r"reelforge-stylegan2-test-[0-9a-f]{8}"), "reelforge-stylegan2-test"),
    (re.compile(r"(?<=[:/])avatar-test-[0-9a-f]{8}-"), "reelforge-avatar-test-"),
    # the backfill test's archive is namespaced (archive-<hex>/); production's is archive/
    (re.compile(r"^(arn:aws:s3:::reelforge-ingest(?:/| s3:prefix=))archive-[0-9a-f]{6}/"), r"\1archive/"),
    # the SR tests start UI-form runs on clips under manual/<folder>/ (outside the notification prefix, so that
    # no notification starts a second run); the policies let the SR DAG read sources under sr/incoming/,
    # archive/ and manifests/ only, so such a run is refused in production: checked as if under sr/incoming/
    (re.compile(r"^arn:aws:s3:::reelforge-ingest/manual/"), "arn:aws:s3:::reelforge-ingest/sr/incoming/manual/"),
    # moto's async inference writes its results to a bucket of its own; the endpoint config names
    # <artifacts>/avatar/async/{output,failure}/ (plugins/reelforge/avatar/endpoints.py).
    (re.compile(r"^arn:aws:s3:::sagemaker-output-[0-9a-f-]{36}/(response|failure)"),
     r"arn:aws:s3:::reelforge-artifacts/avatar/async/\1"),
    (re.compile(r"^arn:aws:iam::\d{12}:"), "arn:aws:iam::*:"),
    (re.compile(r"^arn:aws:([a-z0-9-]+):[a-z0-9-]+:\d{12}:"), r"arn:aws:\1:*:*:"),
)


def production_arn(arn: str) -> str:
    for pattern, replacement in TEST_NAMES:
        arn = pattern.sub(replacement, arn)
    return arn


@dataclass(frozen=True)
class Need:
    """One IAM action a call needs, on one resource ARN ("*" where the call names none)."""

    policy: str
    action: str
    arn: str
    source: str  # dag.task / trigger / process, for humans

    @property
    def example(self) -> str:
        return f"{self.arn} (by {self.source})"


def load_calls(path: Path) -> list[dict]:
    if not path.exists():
        return []
    calls = []
    for line in path.read_text().splitlines():
        try:
            calls.append(json.loads(line))
        except ValueError:
            continue  # a line cut short by a killed process
    return calls


def load_record(path: Path = RECORD) -> dict:
    return json.loads(path.read_text())


def policy_of(call: dict) -> str | None:
    process = call.get("process") or ""
    for name, policy in WORKER_PROCESSES.items():
        if name in process.split():
            return policy
    dag_id = call.get("dag_id") or ""
    for prefix, workflow in DAG_WORKFLOWS:
        if dag_id.startswith(prefix):
            return f"{workflow}-airflow-policy.json"
    # an asset watcher (a trigger with no task) or a deadline-alert callback in the triggerer: by resource name
    if not dag_id and (call.get("trigger") or process.startswith(("airflow", "celery"))):
        text = json.dumps(call.get("params") or {})
        for fragment, workflow in RESOURCE_WORKFLOWS:
            if fragment in text:
                return f"{workflow}-airflow-policy.json"
    return None


def _s3_arn(bucket: str, key: str | None) -> str:
    return f"arn:aws:s3:::{bucket}" if key is None else f"arn:aws:s3:::{bucket}/{key}"


def needs(call: dict) -> list[tuple[str, str]]:
    """(IAM action, resource ARN) pairs one recorded call needs."""
    client, op, params = call.get("client") or call["service"], call["operation"], call.get("params") or {}
    prefix = IAM_PREFIX.get(client, client)
    out: list[tuple[str, str]] = []
    if prefix == "s3":
        bucket = params.get("Bucket", "*")
        action = S3_ACTIONS.get(op, op)
        if params.get("VersionId") and action in S3_VERSIONED:
            action = S3_VERSIONED[action]
        bucket_level = action.startswith("ListBucket") or op in ("HeadBucket",) or action.startswith(("GetBucket",
                                                                                                     "PutBucket"))
        if op == "DeleteObjects":
            keys = (params.get("Delete") or {}).get("Objects") or ["*"]
            out += [("s3:DeleteObject", _s3_arn(bucket, k)) for k in keys]
        else:
            arn = _s3_arn(bucket, None if bucket_level else params.get("Key", "*"))
            if action in ("ListBucket", "ListBucketVersions"):
                # the s3:prefix condition key: present (maybe empty) only when the request names a prefix
                arn += f"{PREFIX_MARK}{params['Prefix']}" if "Prefix" in params else f"{PREFIX_MARK[:-1]} absent"
            out.append((f"s3:{action}", arn))
        if op in ("CopyObject", "UploadPartCopy") and params.get("CopySource"):
            src = params["CopySource"]
            if isinstance(src, dict):
                src_bucket, src_key, version = src.get("Bucket", "*"), src.get("Key", "*"), src.get("VersionId")
            else:
                path, _, query = unquote(str(src)).lstrip("/").partition("?versionId=")
                src_bucket, _, src_key = path.partition("/")
                version = query or None
            out.append(("s3:GetObjectVersion" if version else "s3:GetObject", _s3_arn(src_bucket, src_key)))
        return out
    action = f"{prefix}:{SQS_ACTIONS.get(op, op) if prefix == 'sqs' else op}"
    if action in NO_PERMISSION:
        return []
    arn = "*"
    if prefix == "sqs":
        if params.get("QueueUrl"):
            arn = "arn:aws:sqs:*:*:" + urlparse(params["QueueUrl"]).path.rstrip("/").rsplit("/", 1)[-1]
        elif params.get("QueueName"):
            arn = f"arn:aws:sqs:*:*:{params['QueueName']}"
    elif prefix == "sns":
        arn = params.get("TopicArn") or params.get("TargetArn") or "*"
    elif prefix == "sagemaker":
        arns = {}
        if not op.startswith("List"):
            for key, kind in SAGEMAKER_NAMES:
                if params.get(key):
                    value = str(params[key])
                    name = value.rsplit("/", 1)[-1] if value.startswith("arn:") else value
                    arns[kind] = f"arn:aws:sagemaker:*:*:{kind}/{name.lower()}"
        if op == "CreateModelPackage" and "model-package-group" in arns:
            arns = {"model-package": arns["model-package-group"].replace("model-package-group/", "model-package/")
                    + "/*"}
        if op == "DescribeModelPackage" and params.get("ModelPackageName"):
            name = str(params["ModelPackageName"])
            arns = {"model-package": name if name.startswith("arn:")
                    else f"arn:aws:sagemaker:*:*:model-package/{name.lower()}"}
        if op in SAGEMAKER_ROLE_CREATES:
            role = params.get("RoleArn") or params.get("ExecutionRoleArn")
            if role:
                out.append(("iam:PassRole", role))
        # the resource the operation is about: CreateEndpoint → endpoint (it also reads the endpoint-config)
        own = next((arn for kind, arn in arns.items() if op.lower().endswith(kind.replace("-", ""))), None)
        if op.startswith("Create") and params.get("Tags"):
            out.append(("sagemaker:AddTags", own or next(iter(arns.values()), "*")))
        return [(action, arn) for arn in (arns.values() or ["*"])] + out
    elif prefix == "cloudwatch":
        names = params.get("AlarmNames") or ([params["AlarmName"]] if params.get("AlarmName") else [])
        if names:
            out += [(action, f"arn:aws:cloudwatch:*:*:alarm:{n}") for n in names]
            return out
    out.insert(0, (action, arn))
    return out


def source_of(call: dict) -> str:
    if call.get("dag_id"):
        return f"{call['dag_id']}.{call.get('task_id') or '?'}"
    if call.get("trigger"):
        return f"trigger {call['trigger']}"
    return "process " + " ".join((call.get("process") or "?").split()[:2])  # the command, not its arguments


def attribute(calls: Iterable[dict]) -> tuple[list[Need], list[dict]]:
    """Every call's needs, and the calls no policy can be told for."""
    found, unattributed = [], []
    for call in calls:
        policy = policy_of(call)
        if policy is None:
            unattributed.append(call)
            continue
        found += [Need(policy, action, production_arn(arn), source_of(call)) for action, arn in needs(call)]
    return found, unattributed


def missing_from_record(calls: Iterable[dict], record: dict) -> list[tuple[str, str, str]]:
    """(policy, action, example) for every recorded need the committed record lacks, and unattributed calls."""
    found, unattributed = attribute(calls)
    policies = record.get("policies", {})
    missing: dict[tuple[str, str], str] = {}
    for need in found:
        listed = policies.get(need.policy, {}).get("recorded", {})
        if need.action not in listed:
            missing.setdefault((need.policy, need.action), need.example)
    out = [(p, a, e) for (p, a), e in sorted(missing.items())]
    for call in unattributed:
        if any(proc in (call.get("process") or "") for proc in ("airflow", "celery", "reelforge")):
            out.append(("<no policy: unattributed Airflow/worker call>", f"{call['service']}:{call['operation']}",
                        json.dumps(call)[:300]))
    return out
