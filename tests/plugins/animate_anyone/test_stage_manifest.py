"""stage_manifest on the local stack (moto S3, the real SSH/SFTP hook): a run the upload reconciler started
stages the manifest version it claimed, even when a newer version has landed since."""

from __future__ import annotations

import json
import uuid

import pytest

pytestmark = [pytest.mark.stack]


def test_a_reconciler_run_stages_the_version_it_claimed_not_a_newer_one():
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    from reelforge.animate_anyone.tasks import stage_manifest
    from reelforge.hooks.slurm import SlurmHook
    from reelforge.settings import AWS_CONN_ID, HYPERPOD_CONN_ID
    from reelforge.storage import S3Object
    from reelforge.upload_watch import upload_conf
    from reelforge.uploads import pin_source

    s3 = S3Hook(aws_conn_id=AWS_CONN_ID).get_conn()
    key = f"animate-anyone/manifests/stage-{uuid.uuid4().hex[:6]}/dance.json"
    first = [{"video_path": "/fsx/a.mp4", "kps_path": "/fsx/a_kps.mp4"}]
    s3.put_object(Bucket="reelforge-ingest", Key=key, Body=json.dumps(first).encode())
    claimed = pin_source(s3, S3Object("reelforge-ingest", key))
    s3.put_object(Bucket="reelforge-ingest", Key=key, Body=json.dumps(first * 3).encode())  # lands later
    run_id = f"reconcile__{uuid.uuid4().hex[:12]}"
    conf = {"manifest_uri": claimed.uri, "reelforge_upload": upload_conf(claimed)}
    staged = stage_manifest(params={"manifest_uri": claimed.uri}, dag_id="animate_anyone_training", run_id=run_id,
                            events=None, conf=conf)
    try:
        assert staged["manifest_version"] == claimed.version_id and staged["entries"] == 1
        with SlurmHook(HYPERPOD_CONN_ID) as hook:
            assert hook.read_json(staged["manifest_path"]) == first
        # a form run (no claim) takes the latest version
        latest = stage_manifest(params={"manifest_uri": claimed.uri}, dag_id="animate_anyone_training",
                                run_id=run_id + "-form", events=None, conf={"manifest_uri": claimed.uri})
        assert latest["entries"] == 3 and latest["manifest_version"] != claimed.version_id
    finally:
        with SlurmHook(HYPERPOD_CONN_ID) as hook:
            for root in {staged["root"], *([latest["root"]] if "latest" in locals() else [])}:
                hook.run_command(["rm", "-rf", "--", root], check=False)
        for v in s3.list_object_versions(Bucket="reelforge-ingest", Prefix=key).get("Versions", []):
            s3.delete_object(Bucket="reelforge-ingest", Key=key, VersionId=v["VersionId"])
