"""Extra links: URLs from run values, which operators carry which links, and the plugin that registers them."""

from __future__ import annotations

from types import SimpleNamespace
from urllib.parse import parse_qs, urlsplit

import pytest

from reelforge import links
from reelforge.links import (
    DELIVERY_KEY,
    SLURM_JOB_KEY,
    DeliveredVideoLink,
    PreviewImageLink,
    PreviewsLink,
    ReportLink,
    S3OutputLink,
    SageMakerDeployedEndpointLink,
    SageMakerEndpointLink,
    SageMakerProcessingJobLink,
    SageMakerTrainingJobLink,
    SageMakerTrainingLogsLink,
    SlurmJobLink,
    delivery_links,
)
from reelforge.operators.slurm_ui import delivery_record

KEY = SimpleNamespace(dag_id="video_super_resolution", run_id="manual__2026-12-05T10:00:00+00:00",
                      task_id="assemble_and_deliver", map_index=-1, try_number=1)
# The SR worker's delivery.json (fields the links use, plus some they ignore).
MANIFEST = {
    "version": 1, "dest": "s3://reelforge-output/sr/clip ü/0123456789abcdef/", "bucket": "reelforge-output",
    "prefix": "sr/clip ü/0123456789abcdef/", "seconds": 0.4,
    "objects": [
        {"role": "video", "bucket": "reelforge-output", "key": "sr/clip ü/0123456789abcdef/clip ü.x4.mp4", "size": 9},
        {"role": "preview", "bucket": "reelforge-output", "key": "sr/clip ü/0123456789abcdef/previews/p-000.png",
         "size": 5},
        {"role": "preview", "bucket": "reelforge-output", "key": "sr/clip ü/0123456789abcdef/previews/p-001.png",
         "size": 5},
        {"role": "report", "bucket": "reelforge-output", "key": "sr/clip ü/0123456789abcdef/report.json", "size": 3},
    ],
}


@pytest.fixture
def xcoms(monkeypatch):
    """XCom values by key, served to the links instead of the task SDK / database."""
    values: dict[str, object] = {}

    def fake(ti_key, key):
        assert ti_key is KEY
        return values.get(key)

    monkeypatch.setattr(links, "read_xcom", fake)
    return values


def test_delivery_links_on_a_local_endpoint_are_plain_object_urls():
    record = delivery_record(MANIFEST, region="us-east-1", endpoint_url="http://127.0.0.1:5000/")
    got = delivery_links(record)
    assert got["Delivered video"] == "http://127.0.0.1:5000/reelforge-output/sr/clip%20%C3%BC/0123456789abcdef/clip%20%C3%BC.x4.mp4"
    assert got["Report"] == "http://127.0.0.1:5000/reelforge-output/sr/clip%20%C3%BC/0123456789abcdef/report.json"
    assert got["Preview image"].endswith("/previews/p-000.png")
    listing = urlsplit(got["Previews (S3)"])
    assert listing.path == "/reelforge-output"
    assert parse_qs(listing.query) == {"list-type": ["2"], "prefix": ["sr/clip ü/0123456789abcdef/previews/"]}
    assert parse_qs(urlsplit(got["Output (S3)"]).query)["prefix"] == ["sr/clip ü/0123456789abcdef/"]


def test_delivery_links_without_endpoint_open_the_s3_console_in_the_right_partition():
    got = delivery_links(delivery_record(MANIFEST, region="eu-west-1", endpoint_url=None))
    video = urlsplit(got["Delivered video"])
    assert (video.scheme, video.netloc) == ("https", "console.aws.amazon.com")
    assert video.path == "/s3/object/reelforge-output"
    assert parse_qs(video.query) == {"region": ["eu-west-1"], "prefix": [MANIFEST["objects"][0]["key"]]}
    prefix = urlsplit(got["Output (S3)"])
    assert prefix.path == "/s3/buckets/reelforge-output"
    assert parse_qs(prefix.query)["prefix"] == [MANIFEST["prefix"]]
    china = delivery_links(delivery_record(MANIFEST, region="cn-north-1", endpoint_url=None))
    assert urlsplit(china["Report"]).netloc == "console.amazonaws.cn"


def test_delivery_record_keeps_only_usable_objects_and_no_sizes():
    manifest = {**MANIFEST, "objects": [*MANIFEST["objects"], {"role": "video"}, "junk"]}
    record = delivery_record(manifest, region=None, endpoint_url="")
    assert [o["role"] for o in record["objects"]] == ["video", "preview", "preview", "report"]
    assert set(record["objects"][0]) == {"role", "bucket", "key"}
    assert record["endpoint_url"] is None and record["bucket"] == "reelforge-output"
    assert delivery_links({"objects": []}) == {}


def test_presigned_urls_in_the_record_win():
    record = {**delivery_record(MANIFEST, region="us-east-1", endpoint_url="http://127.0.0.1:5000"),
              "urls": {"Delivered video": "http://127.0.0.1:5000/reelforge-output/v.mp4?Signature=s"}}
    assert delivery_links(record) == {"Delivered video": "http://127.0.0.1:5000/reelforge-output/v.mp4?Signature=s"}


def test_delivery_links_come_from_the_tasks_xcom(xcoms):
    operator = object()
    assert all(link().get_link(operator, ti_key=KEY) == "" for link in
               (S3OutputLink, DeliveredVideoLink, ReportLink, PreviewImageLink, PreviewsLink))
    xcoms[DELIVERY_KEY] = delivery_record(MANIFEST, region="us-east-1", endpoint_url="http://s3.local:9000")
    assert DeliveredVideoLink().get_link(operator, ti_key=KEY).startswith("http://s3.local:9000/reelforge-output/")
    assert ReportLink().get_link(operator, ti_key=KEY).endswith("/report.json")
    assert PreviewsLink().get_link(operator, ti_key=KEY).endswith("previews%2F")


def test_slurm_job_link_opens_the_task_log_once_a_job_exists(xcoms):
    assert SlurmJobLink().get_link(object(), ti_key=KEY) == ""
    xcoms[SLURM_JOB_KEY] = {"job_id": "42", "job_name": "n", "workdir": "/w", "log_dir": "/w/logs"}
    assert SlurmJobLink().get_link(object(), ti_key=KEY) == (
        "/dags/video_super_resolution/runs/manual__2026-12-05T10%3A00%3A00%2B00%3A00/tasks/assemble_and_deliver")
    mapped = SimpleNamespace(**{**vars(KEY), "map_index": 3})
    assert links.airflow_task_url(mapped).endswith("/tasks/assemble_and_deliver/mapped/3")


TRAINING = {"Training": {"TrainingJobName": "sg2-abc-train",
                         "TrainingJobArn": "arn:aws:sagemaker:eu-central-1:111122223333:training-job/sg2-abc-train",
                         "TrainingJobStatus": "Completed"}}


@pytest.mark.parametrize(
    ("link", "value", "expected"),
    [
        (SageMakerTrainingJobLink, TRAINING,
         "https://console.aws.amazon.com/sagemaker/home?region=eu-central-1#/jobs/sg2-abc-train"),
        (SageMakerTrainingLogsLink, TRAINING,
         "https://console.aws.amazon.com/cloudwatch/home?region=eu-central-1#logsV2:log-groups/log-group/"
         "$252Faws$252Fsagemaker$252FTrainingJobs$3FlogStreamNameFilter$3Dsg2-abc-train"),
        (SageMakerProcessingJobLink,
         {"Processing": {"ProcessingJobName": "sg2-prep",
                         "ProcessingJobArn": "arn:aws-us-gov:sagemaker:us-gov-west-1:1:processing-job/sg2-prep"}},
         "https://console.amazonaws-us-gov.com/sagemaker/home?region=us-gov-west-1#/processing-jobs/sg2-prep"),
        (SageMakerDeployedEndpointLink,
         {"EndpointConfig": {}, "Endpoint": {"EndpointName": "avatar-mme",
                                             "EndpointArn": "arn:aws:sagemaker:us-east-1:1:endpoint/avatar-mme"}},
         "https://console.aws.amazon.com/sagemaker/home?region=us-east-1#/endpoints/avatar-mme"),
        (SageMakerTrainingJobLink, {"Training": {"TrainingJobName": "no-arn"}}, ""),
        (SageMakerTrainingJobLink, None, ""),
        (SageMakerProcessingJobLink, TRAINING, ""),
    ],
)
def test_sagemaker_links_from_the_provider_operators_return_value(xcoms, link, value, expected):
    xcoms["return_value"] = value
    assert link().get_link(object(), ti_key=KEY) == expected


def test_operators_carry_their_links():
    from reelforge.operators.sagemaker_async import SageMakerInvokeAsyncOperator
    from reelforge.operators.slurm import SlurmJobOperator

    names = {link.name for link in SlurmJobOperator.operator_extra_links}
    assert names == {"Slurm job", "Output (S3)", "Delivered video", "Report", "Preview image", "Previews (S3)"}
    assert [link.name for link in SageMakerInvokeAsyncOperator.operator_extra_links] == [SageMakerEndpointLink.name]
    op = SlurmJobOperator(task_id="t", script="#!/bin/bash\n", workdir="/w", delivery_manifest="delivery.json")
    assert "delivery_manifest" in op.template_fields


def test_plugin_attaches_sagemaker_links_to_provider_operators_when_a_dag_is_loaded(monkeypatch):
    """Airflow's own deserialisation (what the API server does) with the plugin's links registered."""
    import pendulum
    import reelforge_ui_plugin
    from airflow import plugins_manager
    from airflow.sdk import DAG
    from airflow.serialization.serialized_objects import DagSerialization

    from reelforge.operators.sagemaker_reattach import ReattachingProcessingOperator, ReattachingTrainingOperator
    from reelforge.operators.slurm import SlurmJobOperator

    registered = reelforge_ui_plugin.ReelForgeUIPlugin.operator_extra_links
    monkeypatch.setattr(plugins_manager, "get_operator_extra_links", lambda: registered)
    with DAG("links_dag", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")) as dag:
        ReattachingTrainingOperator(task_id="train", config={"TrainingJobName": "x"}, aws_conn_id=None)
        ReattachingProcessingOperator(task_id="prep", config={"ProcessingJobName": "y"}, aws_conn_id=None)
        SlurmJobOperator(task_id="slurm", script="#!/bin/bash\n", workdir="/w")
    loaded = DagSerialization.from_dict(DagSerialization.to_dict(dag))
    assert set(loaded.get_task("train").extra_links) == {"SageMaker training job", "Training logs (CloudWatch)"}
    assert set(loaded.get_task("prep").extra_links) == {"SageMaker processing job"}
    assert set(loaded.get_task("slurm").extra_links) == {link.name for link in SlurmJobOperator.operator_extra_links}


def test_async_inference_operator_persists_its_endpoint_for_the_link(xcoms, monkeypatch):
    from reelforge.operators.sagemaker_async import SageMakerInvokeAsyncOperator
    from tests.plugins.slurm.slurm_helpers import fake_ti

    class Stop(Exception):
        pass

    op = SageMakerInvokeAsyncOperator(task_id="fine_tune", endpoint_name="avatar-ft", request={},
                                      input_s3_uri="s3://b/run/request.json", inference_id="inf",
                                      aws_conn_id=None, region_name="eu-west-1")
    monkeypatch.setattr(op, "_recorded", lambda: (_ for _ in ()).throw(Stop()))
    ti = fake_ti("fine_tune", "r")
    with pytest.raises(Stop):
        op.execute({"ti": ti})
    xcoms[SageMakerEndpointLink.key] = ti.xcoms[SageMakerEndpointLink.key]
    assert SageMakerEndpointLink().get_link(op, ti_key=KEY) == (
        "https://console.aws.amazon.com/sagemaker/home?region=eu-west-1#/endpoints/avatar-ft")
