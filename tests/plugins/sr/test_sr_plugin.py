"""Airflow-side SR logic: source resolution, job ids, claims (moto), key safety."""

from __future__ import annotations

import json
from types import SimpleNamespace

import boto3
import pytest
from moto import mock_aws

from reelforge.sr.claims import ClaimOutcome, claim_job
from reelforge.sr.delivery import DeliveryError, success_message, verify_delivery
from reelforge.sr.form import FRAME_RATES
from reelforge.sr.job import (
    InvalidSettingsError,
    array_spec,
    build_job,
    result_settings,
    segment_time_limit,
    worker_env,
)
from reelforge.sr.settings import SRSettings
from reelforge.storage import InvalidSourceError, S3Object, job_id, parse_s3_uri, safe_stem, sr_output_prefix
from reelforge.uploads import (
    further_sources,
    hand_back,
    head_source,
    resolve_source,
    sources_from_asset_events,
)

PARAMS = {"model": "auto", "scale": 4, "container": "mp4", "codec": "libx264", "crf": 18, "ten_bit": "auto",
          "deinterlace": "auto", "sar": "square", "segment_seconds": 10, "preview_seconds": 0,
          "priority": "normal"}
SETTINGS = SRSettings(
    ingest_bucket="ingest", ingest_prefix="sr/incoming/", output_bucket="output", output_prefix="sr/",
    topic_arn="arn:aws:sns:us-east-1:123456789012:t", cluster_work_root="/fsx/reelforge",
    worker_venv="/opt/venv", model_dir="/fsx/models", container_image="", cpu_partition="cpu",
    gpu_partition="gpu", gpu_gres="", array_throttle=4, max_source_bytes=10_000,
)


def s3_event(key: str, *, version: str = "v1", name: str = "ObjectCreated:Put") -> dict:
    return {"Records": [{"eventName": name, "s3": {"bucket": {"name": "ingest"},
                                                   "object": {"key": key, "versionId": version,
                                                              "eTag": "abc", "size": 10}}}]}


def asset_events(*bodies: object) -> dict:
    batch = [{"Body": b if isinstance(b, str) else json.dumps(b)} for b in bodies]
    event = SimpleNamespace(extra={"from_trigger": True, "payload": {"status": "success", "message_batch": batch}})
    return {"asset": [event]}


def test_event_keys_are_url_decoded():
    (src,) = sources_from_asset_events(asset_events(s3_event("sr/incoming/My+Film%3B+%24%28rm%29.mp4")))
    assert src.key == "sr/incoming/My Film; $(rm).mp4"
    assert (src.bucket, src.version_id, src.etag) == ("ingest", "v1", "abc")


def test_sns_wrapped_events_and_test_events():
    wrapped = {"Type": "Notification", "Message": json.dumps(s3_event("a/b%2Fc.mkv"))}
    assert [s.key for s in sources_from_asset_events(asset_events(wrapped))] == ["a/b/c.mkv"]
    test_event = {"Service": "Amazon S3", "Event": "s3:TestEvent", "Bucket": "ingest"}
    assert resolve_source(None, asset_events(test_event)) is None
    assert resolve_source(None, asset_events("not json")) is None
    removed = s3_event("x.mp4", name="ObjectRemoved:Delete")
    assert sources_from_asset_events(asset_events(removed)) == []


def test_form_uri_wins_and_bad_keys_are_refused():
    assert resolve_source("s3://ingest/v.mp4", asset_events(s3_event("other.mp4"))).key == "v.mp4"
    long_key = "s3://ingest/" + "x" * 1100
    bad_uris = ("s3://ingest/", "http://in/v.mp4", "s3://IN_/v.mp4", "s3://ingest/a\nb.mp4", long_key)
    for bad in bad_uris:
        with pytest.raises(InvalidSourceError):
            parse_s3_uri(bad)


def test_a_run_folded_from_several_uploads_hands_the_others_back_once_each():
    # Airflow 3 puts every event since the previous run into one run: three uploads, one duplicated
    events = asset_events(s3_event("a.mp4"), s3_event("b+c%3B.mp4", version="v7"), s3_event("a.mp4"),
                          s3_event("d.mp4"))
    assert resolve_source(None, events).key == "a.mp4"
    assert [(o.key, o.version_id) for o in further_sources(None, events)] == [("b c;.mp4", "v7"), ("d.mp4", "v1")]
    assert further_sources("s3://ingest/x.mp4", events) == []
    assert further_sources(None, asset_events(s3_event("a.mp4"))) == []
    assert further_sources(None, None) == []


@mock_aws
def test_handed_back_notifications_parse_as_the_uploads_they_name():
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName="reelforge-sr-ingest-events")["QueueUrl"]
    objs = [S3Object("ingest", "sr/incoming/a b/it's; $(x).mp4", "v2", "e1", 10), S3Object("ingest", "c.mp4")]
    hand_back(sqs, url, objs, run_id="run-1")
    got = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10)["Messages"]
    assert len(got) == 2
    parsed = [sources_from_asset_events(asset_events(m["Body"]))[0] for m in got]
    assert sorted(parsed, key=lambda o: o.key) == sorted(objs, key=lambda o: o.key)
    assert all(json.loads(m["Body"])["Records"][0]["reelforge"]["handed_back_by"] == "run-1" for m in got)
    hand_back(sqs, None, [], run_id="run-1")  # nothing to hand back: no queue needed
    with pytest.raises(RuntimeError, match="no ingest queue"):
        hand_back(sqs, None, objs, run_id="run-1")


def test_job_id_is_deterministic_and_follows_version_and_settings():
    src = S3Object("ingest", "k.mp4", version_id="v1")
    base = result_settings(PARAMS)
    assert job_id(src, base) == job_id(S3Object("ingest", "k.mp4", version_id="v1"), dict(base))
    assert job_id(src, base) != job_id(S3Object("ingest", "k.mp4", version_id="v2"), base)
    assert job_id(src, base) != job_id(src, {**base, "scale": 2})
    # identical bytes uploaded again (new version, same ETag) are the same job
    same_bytes = job_id(S3Object("ingest", "k.mp4", "v1", etag="e1"), base)
    assert same_bytes == job_id(S3Object("ingest", "k.mp4", "v2", etag="e1"), base)
    assert same_bytes != job_id(S3Object("ingest", "k.mp4", "v3", etag="e2"), base)
    # priority does not change the result, so not the id
    high = build_job(src, {**PARAMS, "priority": "high"}, SETTINGS)
    assert high["job_id"] == build_job(src, PARAMS, SETTINGS)["job_id"]


def test_frame_rate_keeps_earlier_job_ids_and_every_form_rate_is_one_the_worker_takes():
    from reelforge_sr.framerate import parse

    src = S3Object("ingest", "k.mp4", version_id="v1", etag="e1")
    # the id a job had before frame_rate, ivtc and reuse_held existed (PARAMS is an older run's conf)
    first = ("model", "scale", "container", "codec", "crf", "ten_bit", "deinterlace", "sar", "segment_seconds",
             "preview_seconds")
    before = job_id(src, {k: v for k, v in result_settings(PARAMS).items() if k in first})
    assert build_job(src, PARAMS, SETTINGS)["job_id"] == before
    assert build_job(src, {**PARAMS, "frame_rate": "source", "ivtc": "auto", "reuse_held": "on"},
                     SETTINGS)["job_id"] == before
    assert build_job(src, {**PARAMS, "reuse_held": "auto"}, SETTINGS)["job_id"] == before  # today's default
    assert build_job(src, {**PARAMS, "reuse_held": "off"}, SETTINGS)["job_id"] != before
    at_25 = build_job(src, {**PARAMS, "frame_rate": "25"}, SETTINGS)
    assert at_25["job_id"] != before and worker_env(at_25, SETTINGS)["SR_FRAME_RATE"] == "25"
    assert worker_env(build_job(src, PARAMS, SETTINGS), SETTINGS)["SR_FRAME_RATE"] == "source"
    with pytest.raises(InvalidSettingsError, match="frame_rate"):
        result_settings({**PARAMS, "frame_rate": "23"})
    for rate in FRAME_RATES:  # the form's choices against the worker's own parser
        parse(rate)


def test_invalid_settings_and_extensions():
    with pytest.raises(InvalidSettingsError):
        result_settings({**PARAMS, "scale": 5})
    with pytest.raises(InvalidSettingsError):
        result_settings({**PARAMS, "crf": 99})
    with pytest.raises(InvalidSourceError):
        build_job(S3Object("ingest", "notes.txt", version_id="v"), PARAMS, SETTINGS)


@pytest.mark.parametrize(
    "key", ["../../etc/passwd.mp4", "a/$(touch x);`id`.mp4", "ünïcødé 映画.mkv", "'quote\".webm", "-rf.mp4"]
)
def test_derived_names_never_carry_user_text_into_paths(key):
    job = build_job(S3Object("ingest", key, version_id="v"), PARAMS, SETTINGS)
    assert job["workdir"] == f"/fsx/reelforge/sr/{job['job_id']}"
    stem = safe_stem(key)
    assert set(stem) <= set("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-")
    assert not stem.startswith(("-", ".")) and ".." not in stem.split("/")
    assert job["output_prefix"] == sr_output_prefix("sr/", key, job["job_id"])
    assert job["output_prefix"].startswith("sr/") and "/../" not in job["output_prefix"]
    assert job["output_prefix"].count("/") == 3 and "/" not in job["output_name"]
    env = worker_env(job, SETTINGS)
    assert env["SOURCE_URI"] == f"s3://ingest/{key}" and env["WORKDIR"] == job["workdir"]


@pytest.mark.parametrize(("key", "folder", "name"), [
    ("in/ünïcødé 映画.mkv", "ünïcødé 映画", "ünïcødé 映画.x4.mp4"),
    ("in/Episode 01 (1994).VOB", "Episode 01 (1994)", "Episode 01 (1994).x4.mp4"),
    ("in/....mp4", "video", "video.x4.mp4"),  # only dots: not a name
    ("in/..hidden.mp4", "..hidden", "..hidden.x4.mp4"),
    ("in/" + "長" * 100 + ".mp4", "長" * 53, "長" * 53 + ".x4.mp4"),  # 160 bytes, cut on a character
])
def test_delivered_video_keeps_the_source_name_in_utf8_and_old_deliveries_still_count(key, folder, name):
    job = build_job(S3Object("ingest", key, version_id="v"), PARAMS, SETTINGS)
    assert job["output_prefix"] == f"sr/{folder}/{job['job_id']}/"
    assert job["output_name"] == name and worker_env(job, SETTINGS)["OUTPUT_NAME"] == name
    # where versions before UTF-8 names delivered the same job: its report marks the job done too
    assert job["done_markers"][0] == f"{job['output_prefix']}report.json"
    assert job["done_markers"][-1] == f"sr/{safe_stem(key)}/{job['job_id']}/report.json"
    preview = build_job(S3Object("ingest", key, version_id="v"), {**PARAMS, "preview_seconds": 5,
                                                                     "container": "mkv", "scale": 2}, SETTINGS)
    assert preview["output_name"] == name.replace(".x4.mp4", ".x2.preview.mkv")


def test_segment_time_limit_scales_with_the_longest_segment():
    plan = {"probe": {"video": {"width": 640, "height": 360}},
            "segments": [{"start_frame": 0, "end_frame": 240}, {"start_frame": 240, "end_frame": 300}]}
    short = {**plan, "segments": [{"start_frame": 0, "end_frame": 24}]}
    assert segment_time_limit(plan, 2.0) > segment_time_limit(short, 2.0) >= 5
    assert segment_time_limit(plan, 0.02) > segment_time_limit(plan, 2.0)
    # 240 frames × 0.2304 Mpx / 2 Mpx/s × 4 = 110.6 s → 2 min + 5
    assert segment_time_limit(plan, 2.0) == 7


def test_array_spec():
    assert array_spec({"segments": [{}] * 5}) == "0-4"
    assert array_spec({"segments": [{}]}) == "0"
    with pytest.raises(ValueError):
        array_spec({"segments": []})


@mock_aws
def test_claims_dedupe_runs_and_skip_delivered_jobs():
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="output")
    kw = {"bucket": "output", "done_markers": ["sr/f/j1/report.json", "sr/f_old/j1/report.json"],
          "claims_prefix": "sr/_claims/", "jid": "j1", "source_uri": "s3://ingest/f.mp4"}
    assert claim_job(s3, run_id="run-a", **kw) == (ClaimOutcome.CLAIMED, "run-a")
    assert claim_job(s3, run_id="run-a", **kw) == (ClaimOutcome.CLAIMED, "run-a")  # retry of the same run
    assert claim_job(s3, run_id="run-b", **kw) == (ClaimOutcome.DUPLICATE, "run-a")
    assert claim_job(s3, run_id="run-c", force=True, **kw) == (ClaimOutcome.CLAIMED, "run-c")
    s3.put_object(Bucket="output", Key="sr/f_old/j1/report.json", Body=b"{}")  # delivered where it was before
    assert claim_job(s3, run_id="run-d", **kw)[0] is ClaimOutcome.DONE


@mock_aws
def test_head_source_pins_version_and_refuses_empty_or_huge_or_missing():
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="ingest")
    s3.put_bucket_versioning(Bucket="ingest", VersioningConfiguration={"Status": "Enabled"})
    v1 = s3.put_object(Bucket="ingest", Key="v.mp4", Body=b"x" * 100)["VersionId"]
    s3.put_object(Bucket="ingest", Key="v.mp4", Body=b"y" * 200)
    pinned = head_source(s3, S3Object("ingest", "v.mp4", version_id=v1), 10_000)
    assert (pinned.version_id, pinned.size) == (v1, 100)
    assert head_source(s3, S3Object("ingest", "v.mp4"), 10_000).size == 200
    s3.put_object(Bucket="ingest", Key="empty.mp4", Body=b"")
    with pytest.raises(InvalidSourceError, match="empty"):
        head_source(s3, S3Object("ingest", "empty.mp4"), 10_000)
    with pytest.raises(InvalidSourceError, match="over the limit"):
        head_source(s3, S3Object("ingest", "v.mp4"), 150)
    with pytest.raises(InvalidSourceError, match="does not exist"):
        head_source(s3, S3Object("ingest", "missing.mp4"), 10_000)


@mock_aws
def test_verify_delivery_checks_sizes():
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="output")
    s3.put_object(Bucket="output", Key="p/v.mp4", Body=b"x" * 10)
    good = {"objects": [{"bucket": "output", "key": "p/v.mp4", "size": 10, "role": "video"}]}
    assert verify_delivery(s3, good)[0]["uri"] == "s3://output/p/v.mp4"
    with pytest.raises(DeliveryError):
        verify_delivery(s3, {"objects": [{"bucket": "output", "key": "p/v.mp4", "size": 11}]})
    with pytest.raises(DeliveryError):
        verify_delivery(s3, {"objects": []})


def test_catalog_summary_reads_the_run_states_the_task_sdk_returns(monkeypatch):
    """The SDK hands back DagRunState enums; str() of one is "DagRunState.SUCCESS", never "success"."""
    from airflow.sdk.api.datamodels._generated import DagRunState
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance

    from reelforge.sr import catalog_tasks

    states = {"run-ok": DagRunState.SUCCESS, "run-bad": DagRunState.FAILED}
    monkeypatch.setattr(RuntimeTaskInstance, "get_dagrun_state", staticmethod(lambda dag_id, run_id: states[run_id]))
    monkeypatch.setattr(RuntimeTaskInstance, "get_task_states", staticmethod(
        lambda dag_id, run_ids: {r: {"upscale_segments": "failed", "read_plan": "success"} for r in run_ids}))
    monkeypatch.setattr(catalog_tasks, "sr_settings", lambda: SETTINGS)
    day_plan = {"todo": [{"run_id": "run-ok", "source": "s3://a/ok.mp4", "output": "s3://o/ok/"},
                         {"run_id": "run-bad", "source": "s3://a/bad.mp4", "output": "s3://o/bad/"}],
                "skipped": [], "invalid": []}
    with mock_aws():
        s3 = boto3.client("s3", region_name="us-east-1")
        s3.create_bucket(Bucket="output")
        monkeypatch.setattr(catalog_tasks, "_s3", lambda: s3)
        summary = catalog_tasks.summarize_catalog_day(day_plan, "2026-03-01")
        stored = json.loads(s3.get_object(Bucket="output", Key="sr/_catalog_reports/2026-03-01.json")["Body"].read())
    assert summary["counts"] == stored["counts"] == {"done": 1, "skipped": 0, "failed": 1}
    assert summary["failed"][0]["reason"] == "SR run run-bad ended failed (failed: upscale_segments)"


def test_each_summary_of_a_day_has_its_own_receipt_and_an_empty_prefix_gives_no_leading_slash(monkeypatch):
    from dataclasses import replace

    from reelforge.sr import catalog_tasks

    monkeypatch.setattr(catalog_tasks, "sr_settings", lambda: SETTINGS)
    run = "backfill__2026-03-01T00:00:00+00:00"
    first, cleared = (catalog_tasks.summary_receipt_uri("2026-03-01", run, n) for n in (1, 2))
    assert first == f"s3://output/sr/_catalog_reports/2026-03-01.announced/{run}.1.json"
    assert cleared != first  # a cleared day summarizes again and sends its new summary
    monkeypatch.setattr(catalog_tasks, "sr_settings", lambda: replace(SETTINGS, output_prefix=""))
    assert catalog_tasks.summary_receipt_uri("2026-03-01", run, 1) == (
        f"s3://output/_catalog_reports/2026-03-01.announced/{run}.1.json")


def test_the_success_message_carries_the_quality_warning_when_the_worker_wrote_one():
    job = {"job_id": "j1", "source": {"uri": "s3://ingest/a.mp4"}, "output_uri": "s3://output/sr/j1/"}
    objects = [{"uri": "s3://output/sr/j1/a.mp4", "role": "video"}, {"uri": "s3://output/sr/j1/report.json",
                                                                     "role": "report"}]
    warned = {"frames": 10, "quality": {"psnr_db_mean": 14.2, "warning": "low consistency with the source: PSNR 14.2"}}
    assert json.loads(success_message(job, objects, warned))["quality_warning"].startswith("low consistency")
    fine = {"frames": 10, "quality": {"psnr_db_mean": 31.0, "warning": None}}
    assert json.loads(success_message(job, objects, fine))["quality_warning"] is None


def test_the_estimate_counts_the_frames_the_model_sees_and_packs_segments_onto_parallel_tasks():
    from reelforge.sr.delivery import success_message
    from reelforge.sr.job import model_estimate

    # 4 segments of 100, 100, 100, 50 frames at 640x360 (0.2304 Mpx), 2.304 Mpx/s: 10 s per 100 frames
    plan = {"geometry": {"decode_width": 640, "decode_height": 360},
            "segments": [{"start_frame": a, "end_frame": b} for a, b in ((0, 100), (100, 200), (200, 300),
                                                                         (300, 350))]}
    assert model_estimate(plan, 2.304, 2) == {"model_seconds": 35.0, "task_seconds": 35.0, "wall_seconds": 20.0,
                                              "mpix_per_second": 2.304, "startup_seconds": 0.0, "parallel": 2,
                                              "full_speed_tasks": 2.0}
    assert model_estimate(plan, 2.304, 8)["wall_seconds"] == 10.0
    # 3 s to start each task: 4 start-ups in all, two on the busier of 2 parallel tasks
    with_startup = model_estimate(plan, 2.304, 2, startup_seconds=3)
    assert (with_startup["task_seconds"], with_startup["wall_seconds"]) == (47.0, 26.0)
    # a plan that drops every fifth frame (inverse telecine, a lower constant rate): 80 frames per 100
    plan["frame_map"] = {"mode": "constant", "repeats": [[1, 4], [0, 1]] * 70}
    assert model_estimate(plan, 2.304, 1)["model_seconds"] == 28.0
    report = {"estimate": model_estimate(plan, 2.304, 1), "segments": {"elapsed_s_total": 42.0}}
    job = {"job_id": "j1", "source": {"uri": "s3://ingest/a.mp4"}, "output_uri": "s3://output/sr/j1/"}
    body = json.loads(success_message(job, [{"uri": "s3://output/sr/j1/a.x4.mp4", "role": "video"}], report))
    assert body["estimate"] == {"task_seconds": 28.0, "wall_seconds": 28.0, "actual_task_seconds": 42.0,
                                "actual_over_estimate": 1.5}
