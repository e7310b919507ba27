"""``stylegan2_weekly_batch`` under ``airflow dags test``: model choice, interval inputs, idempotence.

The batch job runs on the built image (local mode, see conftest) with the generator the training test's
run exported: requests are generated and an uploaded photo is projected into its W space.
"""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parents[3]
INGEST, ARTIFACTS, OUTPUT = "reelforge-ingest", "reelforge-artifacts", "reelforge-output"


def this_week() -> tuple[datetime, datetime]:
    """The ``@weekly`` interval (Sunday 00:00 UTC to the next) that contains now."""
    now = datetime.now(UTC)
    start = (now - timedelta(days=(now.weekday() + 1) % 7)).replace(hour=0, minute=0, second=0, microsecond=0)
    return start, start + timedelta(days=7)


GROUP_SUFFIX = "-weekly"  # this module's own model package group


def register(stack, tag: str, status: str, url: str | None = None) -> dict:
    url = url or f"s3://{ARTIFACTS}/{stack.artifacts_prefix}runs/{tag}/model/output/model.tar.gz"
    arn = stack.sm.create_model_package(
        ModelPackageGroupName=stack.model_package_group + GROUP_SUFFIX, ModelApprovalStatus=status,
        InferenceSpecification={"Containers": [{"Image": "img", "ModelDataUrl": url}],
                                "SupportedContentTypes": ["application/json"],
                                "SupportedResponseMIMETypes": ["image/png"]},
    )["ModelPackageArn"]
    return {"arn": arn, "url": url}


def test_weekly_dag_is_weekly_with_catchup():
    sys.path.insert(0, str(ROOT / "dags"))
    import stylegan2_weekly_batch

    dag = stylegan2_weekly_batch.dag
    assert dag.catchup is True
    assert type(dag.timetable).__name__ == "CronDataIntervalTimetable"
    assert dag.timetable.expression == "0 0 * * 0"  # @weekly: Sunday 00:00
    assert str(dag.timetable.timezone) in ("UTC", "Timezone('UTC')")


def test_inputs_in_interval_is_half_open_and_skips_folders():
    from reelforge.stylegan2.weekly_tasks import inputs_in_interval

    start, end = datetime(2026, 1, 4, tzinfo=UTC), datetime(2026, 1, 11, tzinfo=UTC)
    objects = [{"Key": "b.json", "LastModified": start}, {"Key": "a.png", "LastModified": end - timedelta(seconds=1)},
               {"Key": "late.json", "LastModified": end}, {"Key": "early.json", "LastModified": start - timedelta(1)},
               {"Key": "dir/", "LastModified": start}]
    assert [o["Key"] for o in inputs_in_interval(objects, start, end)] == ["a.png", "b.json"]


def test_latest_approved_model_before_the_interval_end(stack):
    from reelforge.stylegan2.weekly_tasks import latest_approved_model

    group = f"{stack.model_package_group}-pick"
    stack.sm.create_model_package_group(ModelPackageGroupName=group)
    made = []
    for status in ("Approved", "Approved", "PendingManualApproval", "Rejected"):
        made.append(stack.sm.create_model_package(
            ModelPackageGroupName=group, ModelApprovalStatus=status,
            InferenceSpecification={"Containers": [{"Image": "i", "ModelDataUrl": "s3://b/k"}],
                                    "SupportedContentTypes": ["a"], "SupportedResponseMIMETypes": ["b"]},
        )["ModelPackageArn"])
    later = datetime.now(UTC) + timedelta(days=1)
    assert latest_approved_model(stack.sm, group, later)["ModelPackageArn"] == made[1]
    assert latest_approved_model(stack.sm, group, datetime(2020, 1, 1, tzinfo=UTC)) is None
    assert latest_approved_model(stack.sm, f"{group}-missing", later) is None


def trained_model_url(stack, training_run) -> str:
    """model.tar.gz of the training test's run (its training job, run by local mode on the image)."""
    result = training_run["result"]
    assert result.returncode == 0, "the training run failed: see the training test"
    summaries = stack.jobs.list_training_jobs(NameContains="reelforge-sg2-train-",
                                              CreationTimeAfter=training_run["since"])["TrainingJobSummaries"]
    (completed,) = [s for s in summaries if s["TrainingJobStatus"] == "Completed"]
    job = stack.jobs.describe_training_job(TrainingJobName=completed["TrainingJobName"])
    return job["ModelArtifacts"]["S3ModelArtifacts"]


@pytest.mark.timeout(1800)  # the shared training run (Docker, NVlabs on the CPU) counts here
def test_weekly_batch_uses_the_approved_model_and_the_weeks_inputs_once(stack, training_run, shared_data, inbox):
    from reelforge.stylegan2.weekly_tasks import weekly_job_name

    start, end = this_week()
    group = stack.model_package_group + GROUP_SUFFIX
    stack.sm.create_model_package_group(ModelPackageGroupName=group)
    env = {"AIRFLOW_VAR_REELFORGE_STYLEGAN2_MODEL_PACKAGE_GROUP": group}
    model_url = trained_model_url(stack, training_run)
    register(stack, "old", "Approved")  # points at nothing: choosing it would fail the job
    approved = register(stack, "new", "Approved", url=model_url)
    register(stack, "pending", "PendingManualApproval")

    base = stack.batch_input_prefix
    uploads = {"team-a/posters.json": json.dumps({"seeds": "0-3"}).encode(),
               "faces.json": json.dumps({"seeds": [7], "truncation": 1.0}).encode(),
               "team-a/portrait.jpg": (shared_data / "images" / "faces" / "fr_obama_small.jpg").read_bytes()}
    for key, body in uploads.items():
        stack.s3.put_object(Bucket=INGEST, Key=base + key, Body=body)
    stack.s3.put_object(Bucket=INGEST, Key=f"{stack.artifacts_prefix}elsewhere/other.json", Body=b"{}")
    out_prefix = f"{stack.output_prefix}weekly/interval_start={start:%Y-%m-%d}/"
    stack.s3.put_object(Bucket=OUTPUT, Key=out_prefix + "stale-from-an-earlier-batch.png", Body=b"x")

    result = stack.dags_test("stylegan2_weekly_batch", end.isoformat(), env=env)
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]

    objects = stack.s3.list_objects_v2(Bucket=INGEST, Prefix=base)["Contents"]
    name = weekly_job_name(start, approved["arn"], sorted(objects, key=lambda o: o["Key"]))
    job = stack.jobs.describe_processing_job(ProcessingJobName=name)
    inputs = {i["InputName"]: i["S3Input"] for i in job["ProcessingInputs"]}
    assert inputs["model"]["S3Uri"] == approved["url"]
    assert inputs["requests"]["S3DataType"] == "ManifestFile"
    assert job["AppSpecification"]["ContainerArguments"][:5] == [
        "generate", "--model", "/opt/ml/processing/input/model", "--out", "/opt/ml/processing/output/samples"]
    assert "--inputs" in job["AppSpecification"]["ContainerArguments"]
    (output,) = job["ProcessingOutputConfig"]["Outputs"]
    assert output["S3Output"]["S3Uri"] == f"s3://{OUTPUT}/{out_prefix}"

    manifest_bucket, _, manifest_key = inputs["requests"]["S3Uri"][5:].partition("/")
    manifest = json.loads(stack.s3.get_object(Bucket=manifest_bucket, Key=manifest_key)["Body"].read())
    assert manifest == [{"prefix": f"s3://{INGEST}/{base}"}, "faces.json", "team-a/portrait.jpg",
                        "team-a/posters.json"]
    described = stack.jobs.describe_processing_job(ProcessingJobName=name)
    assert described["ProcessingJobStatus"] == "Completed", described.get("FailureReason")
    assert described["ExitMessage"] == "generate: 0 seeds, 2 requests, 1 projections, 0 skipped"

    listed = {o["Key"].removeprefix(out_prefix)
              for o in stack.s3.list_objects_v2(Bucket=OUTPUT, Prefix=out_prefix)["Contents"]}
    assert "stale-from-an-earlier-batch.png" not in listed  # cleared before the new batch
    assert {"requests/posters/seed0000.png", "requests/posters/seed0003.png", "requests/faces/seed0007.png",
            "projections/portrait/target.png", "projections/portrait/projected.png",
            "projections/portrait/comparison.png", "projections/portrait/w.npy", "contact_sheet.png",
            "manifest.json", "batch.json"} <= listed
    batch_manifest = json.loads(stack.s3.get_object(Bucket=OUTPUT, Key=out_prefix + "manifest.json")["Body"].read())
    (projection,) = batch_manifest["projections"]
    assert projection["input"] == "portrait.jpg" and projection["loss_final"] < projection["loss_first"]
    record = json.loads(stack.s3.get_object(Bucket=OUTPUT, Key=out_prefix + "batch.json")["Body"].read())
    assert record["job"] == name and record["model_package_arn"] == approved["arn"]
    assert record["interval"] == [start.isoformat(), end.isoformat()]
    (message,) = [m for m in inbox() if m.get("event") == "stylegan2_batch_succeeded"]
    assert message["job"] == name and message["output"] == f"s3://{OUTPUT}/{out_prefix}"

    # The same interval again (a cleared run, or a catch-up overlap): the completed job is reused.
    stack.s3.put_object(Bucket=OUTPUT, Key=out_prefix + "requests/posters/seed0000.png", Body=b"from the job")
    again = stack.dags_test("stylegan2_weekly_batch", end.isoformat(), env=env)
    assert again.returncode == 0, again.stdout[-4000:] + again.stderr[-4000:]
    jobs = stack.jobs.list_processing_jobs(NameContains=name)["ProcessingJobSummaries"]
    assert [j["ProcessingJobName"] for j in jobs] == [name]  # no second, suffixed job
    assert "already completed: reusing it" in again.stdout + again.stderr
    kept = stack.s3.get_object(Bucket=OUTPUT, Key=out_prefix + "requests/posters/seed0000.png")["Body"].read()
    assert kept == b"from the job"
    assert json.loads(stack.s3.get_object(Bucket=OUTPUT, Key=out_prefix + "batch.json")["Body"].read()) == record
