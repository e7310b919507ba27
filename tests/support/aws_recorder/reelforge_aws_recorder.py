"""Test-only recorder of the AWS calls a process issues (botocore and aiobotocore alike).

Loaded by this directory's ``sitecustomize.py`` in every Python process that the tests start with this
directory on ``PYTHONPATH`` and ``REELFORGE_AWS_CALL_LOG`` set (``tests/conftest.py`` does both when the
variable is set for the pytest run). It appends a handler to ``botocore.handlers.BUILTIN_HANDLERS``, the
list every new botocore session (and aiobotocore's ``AioSession``, a subclass) registers, so every client
created afterwards reports each operation it is asked for, presigned URLs included, as one JSON line:

    {"service": "sagemaker", "operation": "ListTrainingJobs", "params": {...}, "dag_id": ..., "task_id": ...,
     "trigger": ..., "process": ..., "presign": false}

``dag_id``/``task_id`` come from the operator or trigger on the call stack (an Airflow task process, a
triggerer, ``airflow dags test``), else from the ``AIRFLOW_CTX_*`` variables that Airflow's task runner
exports. Only the request parameters that name a resource are kept (bucket, key, queue, topic, job...).
Nothing in ``plugins/`` or ``dags/`` knows about this module.
"""

from __future__ import annotations

import json
import os
import sys
import threading

ENV = "REELFORGE_AWS_CALL_LOG"
# Request parameters that name the resource an operation acts on (IAM resource scoping).
RESOURCE_PARAMS = (
    "Bucket", "Key", "Prefix", "VersionId", "CopySource", "UploadId", "Delete",
    "QueueUrl", "QueueName", "TopicArn", "TargetArn",
    "TrainingJobName", "ProcessingJobName", "NameContains", "RoleArn", "ExecutionRoleArn",
    "ModelPackageGroupName", "ModelPackageName", "ModelName", "EndpointName", "EndpointConfigName",
    "AlarmName", "AlarmNames", "ServiceNamespace", "ResourceId", "ResourceIds", "ScalableDimension", "PolicyName",
    "InputLocation", "Tags", "RepositoryName", "logGroupName", "logStreamName",
)
WORKER_FLAG = "/tmp/reelforge-aws-recorder.path"
_lock = threading.Lock()
_installed = False


def _short(value: object) -> object:
    if isinstance(value, dict) and "Objects" in value:  # DeleteObjects: the keys
        return {"Objects": [o.get("Key") for o in value.get("Objects", [])][:20]}
    if isinstance(value, list):
        return [_short(v) for v in value[:20]]
    if isinstance(value, dict):
        return {str(k): _short(v) for k, v in list(value.items())[:20]}
    if isinstance(value, str | int | float | bool) or value is None:
        return value if not isinstance(value, str) else value[:300]
    return repr(value)[:100]


def _mro_names(obj: object) -> set[str]:
    try:
        return {c.__name__ for c in type(obj).__mro__}
    except Exception:  # noqa: BLE001 - never break the call being recorded
        return set()


def _who() -> dict[str, object]:
    """The Airflow operator or trigger on the call stack (the innermost one)."""
    frame = sys._getframe(2)
    while frame is not None:
        candidate = frame.f_locals.get("self")
        if candidate is not None:
            names = _mro_names(candidate)
            if "BaseOperator" in names:
                try:
                    dag_id = getattr(candidate, "dag_id", None)
                except Exception:  # noqa: BLE001 - an operator outside a DAG
                    dag_id = None
                return {"dag_id": dag_id, "task_id": getattr(candidate, "task_id", None),
                        "caller": type(candidate).__name__}
            if "BaseTrigger" in names:
                ti = getattr(candidate, "task_instance", None)
                return {"dag_id": getattr(ti, "dag_id", None), "task_id": getattr(ti, "task_id", None),
                        "trigger": type(candidate).__name__}
        frame = frame.f_back
    return {}


def _process() -> str:
    """The command: ``python -m pkg`` shows as its package (``reelforge_aa``), a console script by its name."""
    argv = [os.path.basename(a) for a in sys.argv[:4]]
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:
        argv[:1] = [spec.name.removesuffix(".__main__")]
    return " ".join(argv)[:200]


def record(params=None, model=None, context=None, **_kwargs) -> None:
    """``before-parameter-build`` handler: one JSON line per operation."""
    path = os.environ.get(ENV)
    if not path or model is None:
        return
    try:
        who = _who()
        entry = {
            "service": model.service_model.signing_name or model.service_model.endpoint_prefix,
            "client": model.service_model.service_name,
            "operation": model.name,
            "params": {k: _short(params[k]) for k in RESOURCE_PARAMS if isinstance(params, dict) and k in params},
            "dag_id": who.get("dag_id") or os.environ.get("AIRFLOW_CTX_DAG_ID"),
            "task_id": who.get("task_id") or os.environ.get("AIRFLOW_CTX_TASK_ID"),
            "caller": who.get("caller"),
            "trigger": who.get("trigger"),
            "presign": bool((context or {}).get("is_presign_request")),
            "process": _process(),
            "pid": os.getpid(),
        }
        line = json.dumps(entry, default=str) + "\n"
        with _lock:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
            try:
                os.write(fd, line.encode())
            finally:
                os.close(fd)
    except Exception:  # noqa: BLE001, S110 - recording must never change what the process does
        pass


def install_worker() -> None:
    """For a process whose environment the tests cannot set (the SR worker run by Slurm over SSH): read
    the log path from :data:`WORKER_FLAG`, which ``python -m tests.iam.record_operations --worker`` writes
    (with a ``.pth`` file in the worker venv that calls this) only while it records."""
    if not os.environ.get(ENV):
        try:
            with open(WORKER_FLAG) as fh:
                os.environ[ENV] = fh.read().strip()
        except OSError:
            return
    install()


def install() -> None:
    """Register :func:`record` for every botocore session created from now on."""
    global _installed
    if _installed or not os.environ.get(ENV):
        return
    try:
        from botocore import handlers
    except ImportError:
        return
    handlers.BUILTIN_HANDLERS.append(("before-parameter-build", record))
    _installed = True
