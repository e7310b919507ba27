"""Issue 15: no upload is lost when notifications are lost, late or repeated (the reconciler, end to end).

Chaos: some uploads land while the ingest bucket's S3 notifications are switched off (for Airflow, a
notification deleted before it saw it; S3 itself may drop or coalesce them), others get their
notification twice. Every upload must be delivered exactly once, the lost ones by the reconciler,
with exactly one reconciler run each.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from collections import Counter
from datetime import datetime

import pytest

from reelforge.intake import reconcile_run_id
from reelforge.storage import S3Object
from tests.e2e.conftest import AIRFLOW_ENV, RECONCILER
from tests.e2e.test_sr_dag import DAG_ID, INGEST, job_for, sr_dag  # noqa: F401
from tests.media_utils import make_clip
from tests.reliability.e2e_helpers import delete_versions, s3_event

pytestmark = [pytest.mark.stack, pytest.mark.slow]
QUEUE_URL = os.environ.get("REELFORGE_SR_INGEST_QUEUE_URL", "")


@contextlib.contextmanager
def notifications_off(s3):
    """The ingest bucket sends no S3 notifications inside the block (restored after, whatever happens)."""
    saved = s3.get_bucket_notification_configuration(Bucket=INGEST)
    saved.pop("ResponseMetadata", None)
    assert saved.get("QueueConfigurations"), "the local stack should notify the ingest queue"
    s3.put_bucket_notification_configuration(Bucket=INGEST, NotificationConfiguration={})
    try:
        yield
    finally:
        s3.put_bucket_notification_configuration(Bucket=INGEST, NotificationConfiguration=saved)


@pytest.fixture
def reconciler(sr_dag):  # noqa: F811
    sr_dag.unpause(RECONCILER)
    yield sr_dag
    sr_dag.pause(RECONCILER)


def test_lost_and_repeated_notifications_still_deliver_every_upload_once(reconciler, aws, sns_inbox, shared_data,
                                                                          tmp_path):
    src = shared_data / "video" / "moviepy_doc_example2_bbb.mp4"
    clips = [make_clip(src, tmp_path / f"c{i}.mp4", width=32, height=18, seconds=0.5, tone=700 + 40 * i)
             for i in range(4)]
    prefix = f"sr/incoming/reconcile-{uuid.uuid4().hex[:6]}/"
    puts: dict[str, dict] = {}
    put_at: dict[str, float] = {}
    try:
        with notifications_off(aws.s3):
            for i in (0, 1):  # lost: S3 never tells anyone
                key = f"{prefix}lost {i}; $(id).mp4"
                put_at[key] = time.time()
                puts[key] = aws.s3.put_object(Bucket=INGEST, Key=key, Body=clips[i].read_bytes())
        for i in (2, 3):  # notified, and the notification delivered a second time
            key = f"{prefix}twice-{i}.mp4"
            put_at[key] = time.time()
            puts[key] = aws.s3.put_object(Bucket=INGEST, Key=key, Body=clips[i].read_bytes())
            body = s3_event(INGEST, key, puts[key], clips[i].stat().st_size)
            aws.sqs.send_message(QueueUrl=QUEUE_URL, MessageBody=body)

        jobs = {key: job_for(key, put) for key, put in puts.items()}
        succeeded: Counter[str] = Counter()
        deadline = time.monotonic() + 420
        while len(succeeded) < len(jobs) and time.monotonic() < deadline:
            for m in sns_inbox():
                if m.get("event") == "sr_succeeded":
                    succeeded[m.get("job_id")] += 1
            time.sleep(2)
        time.sleep(5)  # a late duplicate would announce itself now
        succeeded.update(m.get("job_id") for m in sns_inbox() if m.get("event") == "sr_succeeded")

        missing = [k for k, j in jobs.items() if j["job_id"] not in succeeded]
        assert not missing, f"never delivered: {missing}"
        assert {k: succeeded[j["job_id"]] for k, j in jobs.items()} == dict.fromkeys(jobs, 1)
        for key, job in jobs.items():
            report = f"{job['output_prefix']}report.json"
            versions = aws.s3.list_object_versions(Bucket="reelforge-output", Prefix=report)
            assert len(versions.get("Versions", [])) == 1, key

        # each lost upload: exactly one SR run, the reconciler's, named after the upload version
        runs = reconciler.runs(DAG_ID)
        recovery_s = []
        for key, put in puts.items():
            if "lost" not in key:
                continue
            ours = [r for r in runs if (r.get("conf") or {}).get("source_uri") == f"s3://{INGEST}/{key}"]
            expected = reconcile_run_id(S3Object(INGEST, key, etag=put["ETag"].strip('"')))
            assert [r["dag_run_id"] for r in ours] == [expected], ours
            assert reconciler.wait_for_run(DAG_ID, expected, timeout=60) == "success"
            recovery_s.append(datetime.fromisoformat(ours[0]["queued_at"]).timestamp() - put_at[key])
        print(f"lost notification → reconciler run queued after {min(recovery_s):.0f}-{max(recovery_s):.0f} s "
              f"(period {AIRFLOW_ENV['REELFORGE_SR_RECONCILE_SECONDS']} s, "
              f"grace {AIRFLOW_ENV['AIRFLOW_VAR_REELFORGE_SR_RECONCILE_GRACE_SECONDS']} s)")
    finally:
        for key in puts:
            delete_versions(aws.s3, key)
