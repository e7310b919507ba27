"""The intake ledger and the reconciler's pass, against moto's S3 (no Airflow, no stack)."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta

import boto3
import pytest
from moto import mock_aws

from reelforge.intake import Ledger, Window, parse_watermark, reconcile_run_id, version_digest
from reelforge.sr.settings import MAX_ACTIVE_RUNS, SRSettings
from reelforge.sr.watch import find_unhandled, grace_period, sr_ledger
from reelforge.storage import InvalidSourceError, S3Object
from reelforge.uploads import check_size, pin_source

SETTINGS = SRSettings(
    ingest_bucket="ingest", ingest_prefix="sr/incoming/", output_bucket="output", output_prefix="sr/",
    topic_arn="", cluster_work_root="/fsx/reelforge", worker_venv="/opt/venv", model_dir="/fsx/models",
    container_image="", cpu_partition="cpu", gpu_partition="gpu", gpu_gres="", array_throttle=4,
    max_source_bytes=10_000, reconcile_grace_seconds=60, reconcile_overlap_seconds=3600,
)


@pytest.fixture
def s3():
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        for bucket in ("ingest", "output"):
            client.create_bucket(Bucket=bucket)
        client.put_bucket_versioning(Bucket="ingest", VersioningConfiguration={"Status": "Enabled"})
        yield client


def upload(s3, key: str, body: bytes = b"video") -> S3Object:
    put = s3.put_object(Bucket="ingest", Key=key, Body=body)
    return S3Object("ingest", key, etag=put["ETag"].strip('"'))


def later(seconds: float) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


def test_the_window_trails_now_by_the_grace_and_reaches_back_by_the_overlap():
    now = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)
    first = Window.after(None, now=now, grace=timedelta(minutes=2), overlap=timedelta(hours=12))
    assert (first.start, first.end) == (now - timedelta(hours=12, minutes=2), now - timedelta(minutes=2))
    mark = now - timedelta(minutes=7)
    nxt = Window.after(mark, now=now, grace=timedelta(minutes=2), overlap=timedelta(minutes=30))
    assert (nxt.start, nxt.end) == (mark - timedelta(minutes=30), now - timedelta(minutes=2))
    # a watermark from a clock ahead of ours never makes the window run backwards
    ahead = Window.after(now + timedelta(hours=1), now=now, grace=timedelta(0), overlap=timedelta(0))
    assert ahead.start <= ahead.end


def test_only_unrecorded_acceptable_uploads_past_the_grace_get_a_run(s3):
    recorded = upload(s3, "sr/incoming/a.mp4", b"a")
    lost = upload(s3, "sr/incoming/show/b; $(id).mkv", b"b")
    upload(s3, "sr/incoming/notes.txt", b"text")  # prepare refuses it by name: no run could help
    upload(s3, "elsewhere/c.mp4", b"c")           # outside the ingest prefix
    sr_ledger(SETTINGS).record(s3, recorded, "asset_triggered__1")

    too_soon, mark = find_unhandled(s3, SETTINGS, None, now=later(30))
    assert too_soon == [] and mark <= later(-29)  # still within the grace period: the notification's turn

    runs, _ = find_unhandled(s3, SETTINGS, None, now=later(61))
    assert runs == [{"trigger_run_id": reconcile_run_id(lost), "conf": {"source_uri": lost.uri}}]
    # the run id depends on the upload alone: a second pass asks for the same run (a no-op in Airflow)
    again, _ = find_unhandled(s3, SETTINGS, None, now=later(120))
    assert again == runs


def test_a_backlog_holds_uploads_back_for_the_backlog_grace_then_they_are_recovered(s3):
    """At max_active_runs Airflow keeps asset events queued: their uploads are waiting, not lost."""
    settings = dataclasses.replace(SETTINGS, reconcile_backlog_grace_seconds=600)
    waiting = upload(s3, "sr/incoming/queued.mp4")
    now = later(120)  # well past the 60 s grace
    busy = grace_period(settings, active_runs=MAX_ACTIVE_RUNS, busy_at=None, now=now)
    assert busy == timedelta(seconds=600)
    assert find_unhandled(s3, settings, None, now=now, grace=busy)[0] == []
    # just after the backlog drains: one more grace period of patience for the last queued events
    drained = grace_period(settings, active_runs=MAX_ACTIVE_RUNS - 1, busy_at=now, now=now + timedelta(seconds=30))
    assert drained == busy
    idle = grace_period(settings, active_runs=MAX_ACTIVE_RUNS - 1, busy_at=now, now=now + timedelta(seconds=61))
    assert idle == timedelta(seconds=60)
    (run,) = find_unhandled(s3, settings, None, now=now + timedelta(seconds=61), grace=idle)[0]
    assert run["trigger_run_id"] == reconcile_run_id(waiting)
    # a backlog that never drains: a stranded event is still recovered once the backlog grace has passed
    assert len(find_unhandled(s3, settings, None, now=later(601), grace=busy)[0]) == 1


def test_a_recorded_upload_is_never_reconciled_and_a_new_version_is(s3):
    first = upload(s3, "sr/incoming/film.mp4", b"v1")
    sr_ledger(SETTINGS).record(s3, first, "run-1")
    assert find_unhandled(s3, SETTINGS, None, now=later(61))[0] == []
    second = upload(s3, "sr/incoming/film.mp4", b"v2")  # same key, new content: a new upload
    (run,) = find_unhandled(s3, SETTINGS, None, now=later(61))[0]
    assert run["trigger_run_id"] == reconcile_run_id(second) != reconcile_run_id(first)


def test_the_watermark_limits_the_pass_to_recent_uploads_plus_the_overlap(s3):
    upload(s3, "sr/incoming/old.mp4")
    settings = dataclasses.replace(SETTINGS, reconcile_overlap_seconds=60)
    # a watermark two hours after the upload: outside the 60 s overlap, so the old upload is not rechecked
    assert find_unhandled(s3, settings, later(7200), now=later(7300))[0] == []
    # with the overlap covering it (as for a long multipart upload dated by its start) it is found
    wide = dataclasses.replace(settings, reconcile_overlap_seconds=3 * 3600)
    assert len(find_unhandled(s3, wide, later(7200), now=later(7300))[0]) == 1


def test_ledger_keys_name_the_version_not_the_user_text(s3):
    obj = S3Object("ingest", "sr/incoming/../x\"; rm -rf.mp4", etag="e1")
    ledger = Ledger("output", "sr/_intake/")
    assert ledger.key(obj) == f"sr/_intake/{version_digest(obj)}.json"
    assert not ledger.has(s3, obj)
    ledger.record(s3, obj, "r")
    assert ledger.has(s3, obj)
    assert version_digest(obj) != version_digest(S3Object("ingest", obj.key, etag="e2"))


def test_pin_then_check_size_lets_prepare_record_an_empty_upload_before_refusing_it(s3):
    empty = pin_source(s3, upload(s3, "sr/incoming/empty.mp4", b""))
    assert empty.size == 0 and empty.etag and empty.version_id
    with pytest.raises(InvalidSourceError, match="empty"):
        check_size(empty, 10_000)
    with pytest.raises(InvalidSourceError, match="over the limit"):
        check_size(pin_source(s3, upload(s3, "sr/incoming/big.mp4", b"x" * 200)), 100)


def test_unreadable_watermarks_fall_back_to_the_overlap():
    assert parse_watermark("") is None and parse_watermark("yesterday") is None
    assert parse_watermark("2026-12-05T12:00:00").tzinfo is UTC
