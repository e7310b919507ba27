"""Uploads that start StyleGAN2, avatar and AnimateAnyone runs: ledger, claim and reconciler pass on moto's S3."""

from __future__ import annotations

import dataclasses
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import SimpleNamespace
from urllib.parse import quote_plus

import boto3
import pytest
from airflow.sdk.exceptions import AirflowSkipException
from moto import mock_aws

from reelforge.animate_anyone import watch as animate_anyone_watch
from reelforge.avatar import watch as avatar_watch
from reelforge.settings import variable_template
from reelforge.storage import S3Object
from reelforge.stylegan2 import watch as stylegan2_watch
from reelforge.stylegan2.tasks import dataset_from_events
from reelforge.stylegan2.watch import dataset_conf
from reelforge.upload_watch import (
    UploadWatch,
    WatchConfig,
    claim_upload,
    find_unhandled,
    grace_period,
    upload_from_conf,
)

WATCHES = (stylegan2_watch.WATCH, avatar_watch.WATCH, animate_anyone_watch.WATCH)

GRACE = timedelta(seconds=60)
CONFIG = WatchConfig(what="a dataset", ingest_bucket="ingest", ingest_prefix="stylegan2/datasets/",
                     state_bucket="state", state_prefix="stylegan2/", conf_for=dataset_conf, grace=GRACE,
                     overlap=timedelta(hours=1))
WATCH = UploadWatch(name="stylegan2", dag_id="stylegan2_training", max_active_runs=4, config=lambda: CONFIG,
                    tag="stylegan2", topic_variable="reelforge_stylegan2_topic_arn")


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        for bucket in ("ingest", "state", "plain"):
            client.create_bucket(Bucket=bucket)
        for bucket in ("ingest", "state"):
            client.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        yield client


def put(s3, key: str, body: bytes = b"", bucket: str = "ingest") -> dict:
    answer = s3.put_object(Bucket=bucket, Key=key, Body=body)
    return {"uri": f"s3://{bucket}/{key}", "version_id": answer.get("VersionId"), "etag": answer["ETag"].strip('"')}


def later(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def events(*uploads: dict) -> dict:
    """Asset events as the SQS watcher makes them from S3 notifications (one message, several records)."""
    records = []
    for up in uploads:
        bucket, _, key = up["uri"][5:].partition("/")
        records.append({"eventName": "ObjectCreated:Put", "s3": {
            "bucket": {"name": bucket},
            "object": {"key": quote_plus(key), "versionId": up["version_id"], "eTag": up["etag"]}}})
    payload = {"message_batch": [{"Body": json.dumps({"Records": records})}]}
    return {"asset": [SimpleNamespace(extra={"payload": payload})]}


def ledger_entries(s3, prefix: str = "stylegan2/_intake/") -> list[dict]:
    listed = s3.list_objects_v2(Bucket="state", Prefix=prefix).get("Contents", [])
    return [json.loads(s3.get_object(Bucket="state", Key=o["Key"])["Body"].read()) for o in listed]


def test_each_version_of_a_marker_is_one_upload_and_a_pass_asks_for_the_same_run_again(s3):
    put(s3, "stylegan2/datasets/faces/img001.png", b"png")
    marker = put(s3, "stylegan2/datasets/faces/_READY")
    archive = put(s3, "stylegan2/datasets/anime faces.zip", b"zip")
    put(s3, "stylegan2/elsewhere/_READY")  # outside the watched prefix

    assert find_unhandled(s3, CONFIG, None, now=later(30), grace=GRACE)[0] == []  # the notification's turn
    runs, mark = find_unhandled(s3, CONFIG, None, now=later(61), grace=GRACE)
    assert mark <= later(2)
    assert sorted((r["conf"] for r in runs), key=str) == sorted([
        {"dataset_uri": "s3://ingest/stylegan2/datasets/faces/", "reelforge_upload": marker},
        {"dataset_uri": "s3://ingest/stylegan2/datasets/anime faces.zip", "reelforge_upload": archive},
    ], key=str)
    assert all(r["trigger_run_id"].startswith("reconcile__") for r in runs)
    assert len({r["trigger_run_id"] for r in runs}) == 2
    assert find_unhandled(s3, CONFIG, None, now=later(90), grace=GRACE)[0] == runs  # same run ids: no-ops

    again = put(s3, "stylegan2/datasets/faces/_READY")  # the same empty marker once more: a new version
    assert again["etag"] == marker["etag"] and again["version_id"] != marker["version_id"]
    newer = find_unhandled(s3, CONFIG, None, now=later(61), grace=GRACE)[0]
    (new_run,) = [r for r in newer if r["conf"]["reelforge_upload"] == again]
    assert new_run["trigger_run_id"] not in {r["trigger_run_id"] for r in runs}
    # only the latest version of a key is listed: the first marker's run was asked for while it was latest
    assert sorted((r["conf"]["reelforge_upload"] for r in newer), key=str) == sorted([again, archive], key=str)


def test_a_reconciler_run_claims_its_upload_and_a_late_notification_run_of_it_skips(s3):
    marker = put(s3, "stylegan2/datasets/faces/_READY")
    (run,) = find_unhandled(s3, CONFIG, None, now=later(61), grace=GRACE)[0]
    rid = run["trigger_run_id"]

    claimed = claim_upload(WATCH, run_id=rid, conf=run["conf"], events=None, s3_client=s3)
    assert {k: claimed[k] for k in ("uri", "version_id", "etag")} == marker
    (entry,) = ledger_entries(s3)
    assert (entry["source"], entry["version_id"], entry["run_id"]) == (marker["uri"], marker["version_id"], rid)
    assert find_unhandled(s3, CONFIG, None, now=later(61), grace=GRACE)[0] == []  # recorded: never again

    with pytest.raises(AirflowSkipException, match=rid):
        claim_upload(WATCH, run_id="asset_triggered__late", conf={}, events=events(marker), s3_client=s3)
    # a retry (or a cleared run) of the claiming run keeps its run id and goes on
    assert claim_upload(WATCH, run_id=rid, conf=run["conf"], events=None, s3_client=s3)["version_id"] == \
        marker["version_id"]


def test_a_notification_run_takes_the_upload_its_plan_reads_and_the_reconciler_recovers_folded_ones(s3):
    image = put(s3, "stylegan2/datasets/cats/img001.png", b"png")
    cats = put(s3, "stylegan2/datasets/cats/_READY")
    dogs = put(s3, "stylegan2/datasets/dogs/_READY")
    folded = events(image, cats, dogs)  # three notifications Airflow folded into one run

    claimed = claim_upload(WATCH, run_id="asset_triggered__1", conf={}, events=folded, s3_client=s3)
    assert claimed["uri"] == cats["uri"]
    assert dataset_from_events(folded) == "s3://ingest/stylegan2/datasets/cats/"  # what plan trains on
    (run,) = find_unhandled(s3, CONFIG, None, now=later(61), grace=GRACE)[0]
    assert run["conf"] == {"dataset_uri": "s3://ingest/stylegan2/datasets/dogs/", "reelforge_upload": dogs}


def test_form_runs_and_notifications_of_no_upload_claim_nothing(s3):
    assert claim_upload(WATCH, run_id="manual__1", conf={"dataset_uri": "s3://ingest/x/"}, events=None,
                        s3_client=s3) is None
    image = put(s3, "stylegan2/datasets/cats/img001.png", b"png")
    assert claim_upload(WATCH, run_id="asset_triggered__2", conf={}, events=events(image), s3_client=s3) is None
    assert ledger_entries(s3) == [] and "Contents" not in s3.list_objects_v2(Bucket="state")


def test_an_upload_named_without_version_or_etag_fails_the_run_instead_of_guessing(s3):
    from airflow.sdk.exceptions import AirflowFailException

    marker = put(s3, "stylegan2/datasets/faces/_READY")
    conf = {"reelforge_upload": {"uri": marker["uri"]}}
    assert upload_from_conf(conf).version_id is None and upload_from_conf({}) is None
    with pytest.raises(AirflowFailException, match="neither a version id nor an ETag"):
        claim_upload(WATCH, run_id="manual__2", conf=conf, events=None, s3_client=s3)
    assert ledger_entries(s3) == []


def test_in_an_unversioned_bucket_the_etag_names_the_upload(s3):
    plain = dataclasses.replace(CONFIG, ingest_bucket="plain")
    watch = dataclasses.replace(WATCH, config=lambda: plain)
    first = put(s3, "stylegan2/datasets/a.zip", b"one", bucket="plain")
    (run,) = find_unhandled(s3, plain, None, now=later(61), grace=GRACE)[0]
    assert run["conf"]["reelforge_upload"] == {**first, "version_id": None}
    claim_upload(watch, run_id=run["trigger_run_id"], conf=run["conf"], events=None, s3_client=s3)
    assert find_unhandled(s3, plain, None, now=later(61), grace=GRACE)[0] == []
    put(s3, "stylegan2/datasets/a.zip", b"two", bucket="plain")  # new content: a new upload
    (second,) = find_unhandled(s3, plain, None, now=later(61), grace=GRACE)[0]
    assert second["trigger_run_id"] != run["trigger_run_id"]


def test_keys_no_run_accepts_are_left_alone(s3):
    put(s3, "stylegan2/datasets/a/./_READY")
    put(s3, "stylegan2/datasets/notes.txt", b"text")
    assert find_unhandled(s3, CONFIG, None, now=later(61), grace=GRACE)[0] == []


def test_a_backlog_lengthens_the_grace_until_it_drains():
    now = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    kwargs = {"grace": GRACE, "backlog_grace": timedelta(hours=1), "max_active_runs": 4}
    assert grace_period(active_runs=4, busy_at=None, now=now, **kwargs) == timedelta(hours=1)
    assert grace_period(active_runs=3, busy_at=now - timedelta(seconds=30), now=now, **kwargs) == timedelta(hours=1)
    assert grace_period(active_runs=3, busy_at=now - timedelta(seconds=61), now=now, **kwargs) == GRACE


@pytest.fixture
def workflow_variables(monkeypatch):
    """The Variables the workflows require (placeholders: nothing here talks to SageMaker or SNS); the
    locations at their defaults (the e2e Airflow of the same session sets its own)."""
    for name in [k for k in os.environ if k.startswith("AIRFLOW_VAR_REELFORGE_")
                 and k.endswith(("_BUCKET", "_PREFIX", "_GRACE_SECONDS", "_OVERLAP_SECONDS"))]:
        monkeypatch.delenv(name)
    for name in ("STYLEGAN2_IMAGE_URI", "STYLEGAN2_ROLE_ARN", "STYLEGAN2_TOPIC_ARN", "AVATAR_IMAGE_URI",
                 "AVATAR_ROLE_ARN", "AVATAR_TOPIC_ARN", "ANIMATE_ANYONE_TOPIC_ARN"):
        monkeypatch.setenv(f"AIRFLOW_VAR_REELFORGE_{name}", f"test-{name.lower()}")
    return monkeypatch


def locations(config: WatchConfig) -> tuple[str, str, str, str]:
    return config.ingest_bucket, config.ingest_prefix, config.state_bucket, config.state_prefix


@pytest.mark.parametrize("overridden", [False, True], ids=["defaults", "overridden"])
def test_the_watches_read_the_workflows_own_variables(workflow_variables, overridden):
    from reelforge.animate_anyone.settings import aa_settings
    from reelforge.avatar.settings import avatar_settings
    from reelforge.stylegan2.settings import stylegan2_settings

    if overridden:
        for name, value in [("STYLEGAN2_ARTIFACTS_BUCKET", "sg-art"), ("STYLEGAN2_ARTIFACTS_PREFIX", "sg/a/"),
                            ("AVATAR_INGEST_BUCKET", "av-in"), ("AVATAR_INGEST_PREFIX", "selfies/"),
                            ("AVATAR_ARTIFACTS_BUCKET", "av-art"), ("AVATAR_ARTIFACTS_PREFIX", "av/"),
                            ("ANIMATE_ANYONE_OUTPUT_BUCKET", "aa-out"), ("ANIMATE_ANYONE_OUTPUT_PREFIX", "aa/")]:
            workflow_variables.setenv(f"AIRFLOW_VAR_REELFORGE_{name}", value)
    sg2, avatar, aa = stylegan2_settings(), avatar_settings(), aa_settings()
    assert locations(stylegan2_watch.watch_config())[2:] == (sg2.artifacts_bucket, sg2.artifacts_prefix)
    assert locations(avatar_watch.watch_config()) == (avatar.ingest_bucket, avatar.ingest_prefix,
                                                      avatar.artifacts_bucket, avatar.artifacts_prefix)
    assert locations(animate_anyone_watch.watch_config())[2:] == (aa.output_bucket, aa.output_prefix)

    # a run's success-message receipt lies beside the workflow's claims, named after the run
    run_id = "reconcile__2026-12-06T01:02:03+00:00_ab12"
    assert avatar_watch.watch_config().receipt_uri(run_id) == (
        f"s3://{avatar.artifacts_bucket}/{avatar.artifacts_prefix.rstrip('/')}/_announced/{run_id}.json")
    assert animate_anyone_watch.watch_config().receipt_uri(run_id) == (
        f"s3://{aa.output_bucket}/{aa.output_prefix.rstrip('/')}/_announced/{run_id}.json")


KEYS = ["avatar/incoming/jane/2026-05/_READY", "avatar/incoming/jane/2026-05/a.jpg", "avatar/incoming/jane/_READY",
        "avatar/incoming/_READY", "avatar/incoming/a/b/c/_READY", "avatar/incoming/-x/s/_READY",
        "avatar/incoming/" + "u" * 65 + "/s/_READY", "other/jane/s/_READY", "stylegan2/datasets/anime+faces/_READY",
        "stylegan2/datasets/faces.ZIP", "stylegan2/datasets/x/img001.png", "stylegan2/_READY"]


def test_the_upload_rules_pick_the_uploads_each_workflow_accepts(workflow_variables):
    """The reconciler's rule (``conf_for``) and a notification's (``plan_run``'s reading of asset events)."""
    workflow_variables.setenv("AIRFLOW_VAR_REELFORGE_AVATAR_INGEST_BUCKET", "ingest")
    selfies = avatar_watch.watch_config().conf_for
    accepted_sets = {("ingest", "avatar/incoming/jane/2026-05/_READY"):
                     {"user_id": "jane", "selfies_uri": "s3://ingest/avatar/incoming/jane/2026-05/"}}
    datasets = {"stylegan2/datasets/anime+faces/_READY": "stylegan2/datasets/anime+faces/",
                "stylegan2/datasets/faces.ZIP": "stylegan2/datasets/faces.ZIP", "stylegan2/_READY": "stylegan2/",
                "avatar/incoming/jane/2026-05/_READY": "avatar/incoming/jane/2026-05/",
                "avatar/incoming/jane/_READY": "avatar/incoming/jane/", "avatar/incoming/_READY": "avatar/incoming/",
                "avatar/incoming/a/b/c/_READY": "avatar/incoming/a/b/c/",
                "avatar/incoming/-x/s/_READY": "avatar/incoming/-x/s/",
                "avatar/incoming/" + "u" * 65 + "/s/_READY": "avatar/incoming/" + "u" * 65 + "/s/",
                "other/jane/s/_READY": "other/jane/s/"}
    for bucket in ("ingest", "elsewhere"):
        for key in KEYS:
            assert selfies(S3Object(bucket, key)) == accepted_sets.get((bucket, key)), key
            expected = f"s3://{bucket}/{datasets[key]}" if key in datasets else None
            assert (dataset_conf(S3Object(bucket, key)) or {}).get("dataset_uri") == expected, key
            found = dataset_from_events(events({"uri": f"s3://{bucket}/{key}", "version_id": None, "etag": None}))
            assert found == expected, key


def test_a_selfie_set_is_its_ready_marker_under_a_user_folder(s3, workflow_variables):
    for name, value in [("AVATAR_INGEST_BUCKET", "ingest"), ("AVATAR_ARTIFACTS_BUCKET", "state"),
                        ("AVATAR_RECONCILE_GRACE_SECONDS", "60")]:
        workflow_variables.setenv(f"AIRFLOW_VAR_REELFORGE_{name}", value)
    config = avatar_watch.watch_config()
    assert (config.ingest_prefix, config.grace, config.ledger.prefix) == (
        "avatar/incoming/", GRACE, "avatar/_intake/")
    for i in range(3):
        put(s3, f"avatar/incoming/jane/2026-05/{i}.jpg", b"\xff\xd8\xff")
    marker = put(s3, "avatar/incoming/jane/2026-05/_READY")
    put(s3, "avatar/incoming/jane/_READY")  # no set folder: not a selfie set
    (run,) = find_unhandled(s3, config, None, now=later(61), grace=config.grace)[0]
    assert run["conf"] == {"user_id": "jane", "selfies_uri": "s3://ingest/avatar/incoming/jane/2026-05/",
                           "reelforge_upload": marker}


def test_every_object_under_the_manifest_prefix_is_a_manifest(s3, workflow_variables):
    workflow_variables.setenv("AIRFLOW_VAR_REELFORGE_ANIMATE_ANYONE_MANIFEST_BUCKET", "ingest")
    workflow_variables.setenv("AIRFLOW_VAR_REELFORGE_ANIMATE_ANYONE_OUTPUT_BUCKET", "state")
    config = animate_anyone_watch.watch_config()
    assert (config.ingest_prefix, config.ledger.prefix) == ("animate-anyone/manifests/", "animate-anyone/_intake/")
    manifest = put(s3, "animate-anyone/manifests/dance v2.json", b"[]")
    put(s3, "animate-anyone/other/x.json", b"[]")
    (run,) = find_unhandled(s3, config, None, now=later(config.grace.total_seconds() + 1), grace=config.grace)[0]
    assert run["conf"] == {"manifest_uri": manifest["uri"], "reelforge_upload": manifest}


def test_each_watch_names_its_dag_its_max_active_runs_and_its_tag_and_topic():
    from airflow.dag_processing.dagbag import DagBag

    dags = Path(__file__).resolve().parents[2] / "dags"
    for watch in WATCHES:
        bag = DagBag(dag_folder=str(dags / f"{watch.dag_id}.py"))
        assert not bag.import_errors, bag.import_errors
        dag = bag.dags[watch.dag_id]
        assert dag.max_active_runs == watch.max_active_runs, watch.dag_id
        assert watch.tag in dag.tags, watch.dag_id
        assert dag.default_args["on_failure_callback"].target_arn == variable_template(watch.topic_variable)
        assert dag.task_dict["claim_upload"].downstream_task_ids == {dag.task_dict[t].task_id for t in
                                                                       ("plan", "stage_manifest") if t in dag.task_dict}


def test_the_pass_and_the_claim_never_head_a_ledger_entry_that_may_be_missing(s3):
    """A HEAD of a missing key answers 403, not 404, to a role that may list only some prefixes."""
    def refuse(**_):
        raise AssertionError("HeadObject issued")

    marker = put(s3, "stylegan2/datasets/faces/_READY")
    s3.meta.events.register("before-call.s3.HeadObject", refuse)
    (run,) = find_unhandled(s3, CONFIG, None, now=later(61), grace=GRACE)[0]
    claim_upload(WATCH, run_id=run["trigger_run_id"], conf=run["conf"], events=None, s3_client=s3)
    claim_upload(WATCH, run_id=run["trigger_run_id"], conf=run["conf"], events=None, s3_client=s3)
    assert find_unhandled(s3, CONFIG, None, now=later(61), grace=GRACE)[0] == []
    assert run["conf"]["reelforge_upload"] == marker


@pytest.mark.parametrize(("prefix", "expected"), [("avatar/", "avatar/_announced/"), ("avatar", "avatar/_announced/"),
                                                  ("", "_announced/"), ("/", "_announced/")])
def test_state_folders_never_start_with_a_slash(prefix, expected):
    from reelforge.storage import subfolder

    assert subfolder(prefix, "_announced") == expected
