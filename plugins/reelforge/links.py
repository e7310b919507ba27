"""Extra links on the task page: S3 outputs, previews, the Slurm job, SageMaker jobs and endpoints.

Every link is built from values a task instance pushed to XCom in its run, never from settings:

* :class:`SlurmJobOperator <reelforge.operators.slurm.SlurmJobOperator>` pushes ``slurm_job`` (job id,
  name, work dir) when it submits or re-attaches, and ``delivery`` (the job's delivery manifest: where
  the video, report and previews went, and the S3 endpoint) when the job succeeded.
* :class:`SageMakerInvokeAsyncOperator <reelforge.operators.sagemaker_async.SageMakerInvokeAsyncOperator>`
  persists its endpoint through the amazon provider's :class:`BaseAwsLink` mechanism.
* The provider's SageMaker training, processing and endpoint operators (and our subclasses of them) get
  their links through the ``reelforge_ui`` plugin: they are read from the operator's own return value
  (the job's description, with its ARN), by the API server.

Links on our own operators are evaluated in the worker when the try ends (Airflow 3 stores the URL in
XCom); plugin links on provider operators are evaluated by the API server. :func:`read_xcom` serves both.

Against a custom S3 endpoint (the connection's ``endpoint_url``: moto on the local stack) there is no
console: the S3 links are presigned URLs on that endpoint, made by the worker with the connection's
credentials when it records the delivery. Against AWS they open the S3 console (which needs a login).
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Mapping
from typing import Any, ClassVar
from urllib.parse import quote, urlencode

from airflow.providers.amazon.aws.links.base_aws import BASE_AWS_CONSOLE_LINK, BaseAwsLink
from airflow.sdk import BaseOperatorLink

#: XCom keys our operators push for their links.
SLURM_JOB_KEY = "slurm_job"
DELIVERY_KEY = "delivery"

#: ``(bucket, key or prefix) -> URL``.
UrlMaker = Callable[[str, str], str]

_ARN = re.compile(r"^arn:(?P<partition>[^:]+):sagemaker:(?P<region>[^:]+):\d*:")


# ----------------------------------------------------------------------------- reading XCom


def read_xcom(ti_key: Any, key: str) -> Any:
    """One XCom value of ``ti_key``: through the task SDK in a worker, from the database in the API server."""
    runner = sys.modules.get("airflow.sdk.execution_time.task_runner")  # imported in workers only
    if runner is not None and hasattr(runner, "SUPERVISOR_COMMS"):
        from airflow.sdk.execution_time.xcom import XCom

        return XCom.get_value(ti_key=ti_key, key=key)
    # The API server has no supervisor: read the row as Airflow's own XComOperatorLink does.
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        value = session.execute(
            XComModel.get_many(
                key=key,
                run_id=ti_key.run_id,
                dag_ids=ti_key.dag_id,
                task_ids=ti_key.task_id,
                map_indexes=ti_key.map_index,
            ).with_only_columns(XComModel.value)
        ).scalar()
    if isinstance(value, str | bytes):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


# ----------------------------------------------------------------------------- URL builders


def aws_partition(region: str | None) -> str:
    """The AWS partition of a region name."""
    region = region or ""
    if region.startswith("cn-"):
        return "aws-cn"
    if region.startswith("us-gov-"):
        return "aws-us-gov"
    return "aws"


def console_base(region: str | None) -> str:
    """``https://console.aws.amazon.com`` (or the partition's console)."""
    return BASE_AWS_CONSOLE_LINK.format(aws_domain=BaseAwsLink.get_aws_domain(aws_partition(region)))


def s3_object_url(bucket: str, key: str, *, region: str | None = None, endpoint_url: str | None = None) -> str:
    """The object's page in the S3 console, or the object itself on a custom (local) endpoint."""
    if endpoint_url:
        return f"{endpoint_url.rstrip('/')}/{quote(bucket)}/{quote(key)}"
    query = urlencode({"region": region or "us-east-1", "prefix": key})
    return f"{console_base(region)}/s3/object/{quote(bucket)}?{query}"


def s3_prefix_url(bucket: str, prefix: str, *, region: str | None = None, endpoint_url: str | None = None) -> str:
    """The prefix in the S3 console, or a ``ListObjectsV2`` of it on a custom (local) endpoint."""
    if endpoint_url:
        return f"{endpoint_url.rstrip('/')}/{quote(bucket)}?{urlencode({'list-type': '2', 'prefix': prefix})}"
    query = urlencode({"region": region or "us-east-1", "prefix": prefix, "showversions": "false"})
    return f"{console_base(region)}/s3/buckets/{quote(bucket)}?{query}"


def airflow_task_url(ti_key: Any) -> str:
    """The task instance's page (its log) in the Airflow UI, relative to the UI's base URL."""
    from airflow.sdk.configuration import conf

    base = (conf.get("api", "base_url", fallback="") or "").rstrip("/")
    path = "/dags/{}/runs/{}/tasks/{}".format(*(quote(str(v), safe="") for v in (ti_key.dag_id, ti_key.run_id,
                                                                                  ti_key.task_id)))
    if getattr(ti_key, "map_index", -1) >= 0:
        path += f"/mapped/{ti_key.map_index}"
    return f"{base}{path}"


def delivery_links(delivery: Mapping[str, Any], *, object_url: UrlMaker | None = None,
                   prefix_url: UrlMaker | None = None) -> dict[str, str]:
    """Link name → URL for a delivery record (see :func:`reelforge.operators.slurm_ui.delivery_record`).

    A record carrying ``urls`` (presigned when it was made, on a custom endpoint) gives those. Otherwise
    ``object_url(bucket, key)`` and ``prefix_url(bucket, prefix)`` build them (default: :func:`s3_object_url`
    and :func:`s3_prefix_url` for the record's region and endpoint).
    """
    if isinstance(delivery.get("urls"), Mapping):
        return {str(name): str(url) for name, url in delivery["urls"].items()}
    region, endpoint = delivery.get("region"), delivery.get("endpoint_url")
    obj_url = object_url or (lambda b, k: s3_object_url(b, k, region=region, endpoint_url=endpoint))
    dir_url = prefix_url or (lambda b, p: s3_prefix_url(b, p, region=region, endpoint_url=endpoint))
    objects = delivery.get("objects") or []
    links: dict[str, str] = {}
    if delivery.get("bucket") and delivery.get("prefix") is not None:
        links[S3OutputLink.name] = dir_url(delivery["bucket"], delivery["prefix"])
    for role, link in (("video", DeliveredVideoLink), ("report", ReportLink)):
        obj = next((o for o in objects if o.get("role") == role), None)
        if obj:
            links[link.name] = obj_url(obj["bucket"], obj["key"])
    previews = [o for o in objects if o.get("role") == "preview"]
    if previews:
        first = previews[0]
        links[PreviewImageLink.name] = obj_url(first["bucket"], first["key"])
        folder = first["key"].rsplit("/", 1)[0] + "/" if "/" in first["key"] else ""
        links[PreviewsLink.name] = dir_url(first["bucket"], folder)
    return links


# ----------------------------------------------------------------------------- our operators' links


class _DeliveryLink(BaseOperatorLink):
    """One link of the ``delivery`` XCom (empty until the task's job delivered)."""

    name: ClassVar[str]

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        delivery = read_xcom(ti_key, DELIVERY_KEY)
        return delivery_links(delivery).get(self.name, "") if isinstance(delivery, Mapping) else ""


class S3OutputLink(_DeliveryLink):
    """The delivered output prefix."""

    name = "Output (S3)"


class DeliveredVideoLink(_DeliveryLink):
    """The delivered video object."""

    name = "Delivered video"


class ReportLink(_DeliveryLink):
    """The quality report (``report.json``)."""

    name = "Report"


class PreviewImageLink(_DeliveryLink):
    """The first side-by-side preview image."""

    name = "Preview image"


class PreviewsLink(_DeliveryLink):
    """The folder of preview images."""

    name = "Previews (S3)"


class SlurmJobLink(BaseOperatorLink):
    """The task's log, which holds the ``Slurm job …: scontrol / sacct`` section for its job."""

    name = "Slurm job"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        job = read_xcom(ti_key, SLURM_JOB_KEY)
        if not isinstance(job, Mapping) or not job.get("job_id"):
            return ""
        return airflow_task_url(ti_key)


SLURM_LINKS = (SlurmJobLink(), S3OutputLink(), DeliveredVideoLink(), ReportLink(), PreviewImageLink(), PreviewsLink())


class SageMakerEndpointLink(BaseAwsLink):
    """A SageMaker endpoint's console page (persisted by the operator with :meth:`BaseAwsLink.persist`)."""

    name = "SageMaker endpoint"
    key = "reelforge_sagemaker_endpoint"
    format_str = BASE_AWS_CONSOLE_LINK + "/sagemaker/home?region={region_name}#/endpoints/{endpoint_name}"

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        fields = read_xcom(ti_key, self.key)
        return self.format_link(**fields) if isinstance(fields, Mapping) else ""


# ----------------------------------------------------------------------------- provider operators (plugin)


class _SageMakerResultLink(BaseAwsLink):
    """A console link built from the provider operator's return value (the job's description)."""

    #: The return value's section (``Training``, ``Processing``, ``Endpoint``) and its name field.
    section: ClassVar[str]
    name_field: ClassVar[str]
    arn_field: ClassVar[str]
    key = "return_value"

    def link_fields(self, result: Any) -> dict[str, str] | None:
        """``region_name``, ``aws_domain`` and ``job_name`` from a return value, ``None`` if incomplete."""
        described = result.get(self.section) if isinstance(result, Mapping) else None
        if not isinstance(described, Mapping) or not described.get(self.name_field):
            return None
        match = _ARN.match(str(described.get(self.arn_field) or ""))
        if match is None:
            return None
        return {
            "region_name": match["region"],
            "aws_domain": self.get_aws_domain(match["partition"]) or "aws.amazon.com",
            "job_name": str(described[self.name_field]),
            "log_group": quote(quote(f"/aws/sagemaker/{self.section}Jobs", safe=""), safe="").replace("%", "$"),
        }

    def get_link(self, operator: Any, *, ti_key: Any) -> str:
        fields = self.link_fields(read_xcom(ti_key, self.key))
        return self.format_link(**fields) if fields else ""


class SageMakerTrainingJobLink(_SageMakerResultLink):
    """The training job's console page."""

    name = "SageMaker training job"
    section, name_field, arn_field = "Training", "TrainingJobName", "TrainingJobArn"
    format_str = BASE_AWS_CONSOLE_LINK + "/sagemaker/home?region={region_name}#/jobs/{job_name}"


class SageMakerTrainingLogsLink(_SageMakerResultLink):
    """The training job's CloudWatch log streams."""

    name = "Training logs (CloudWatch)"
    section, name_field, arn_field = "Training", "TrainingJobName", "TrainingJobArn"
    format_str = (BASE_AWS_CONSOLE_LINK + "/cloudwatch/home?region={region_name}#logsV2:log-groups/log-group/"
                  "{log_group}$3FlogStreamNameFilter$3D{job_name}")


class SageMakerProcessingJobLink(_SageMakerResultLink):
    """The processing job's console page."""

    name = "SageMaker processing job"
    section, name_field, arn_field = "Processing", "ProcessingJobName", "ProcessingJobArn"
    format_str = BASE_AWS_CONSOLE_LINK + "/sagemaker/home?region={region_name}#/processing-jobs/{job_name}"


class SageMakerDeployedEndpointLink(_SageMakerResultLink):
    """The endpoint a ``SageMakerEndpointOperator`` created or updated."""

    name = "SageMaker endpoint"
    section, name_field, arn_field = "Endpoint", "EndpointName", "EndpointArn"
    format_str = BASE_AWS_CONSOLE_LINK + "/sagemaker/home?region={region_name}#/endpoints/{job_name}"
