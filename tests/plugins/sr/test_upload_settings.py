"""Settings that travel with an upload: folder profiles and object metadata, validated like the form."""

from __future__ import annotations

import boto3
import pytest
from moto import mock_aws

from reelforge.sr.job import InvalidSettingsError, build_job
from reelforge.sr.settings import SRSettings
from reelforge.sr.upload_settings import parse_profiles, upload_params
from reelforge.storage import S3Object
from reelforge.uploads import pin_source_and_metadata

DEFAULTS = {"model": "auto", "scale": 4, "container": "mp4", "codec": "libx264", "crf": 18, "ten_bit": "auto",
            "deinterlace": "auto", "sar": "square", "segment_seconds": 10, "preview_seconds": 0,
            "frame_rate": "source", "priority": "normal", "force": False, "source_uri": ""}
SETTINGS = SRSettings(
    ingest_bucket="ingest", ingest_prefix="sr/incoming/", output_bucket="output", output_prefix="sr/",
    topic_arn="", cluster_work_root="/fsx/reelforge", worker_venv="/opt/venv", model_dir="/fsx/models",
    container_image="", cpu_partition="cpu", gpu_partition="gpu", gpu_gres="", array_throttle=4,
    max_source_bytes=1 << 30,
)


def settings_for(key: str, metadata: dict, conf: dict | None = None, profiles: str | None = None) -> dict:
    params, _ = upload_params(DEFAULTS, conf, key=key, ingest_prefix="sr/incoming/", metadata=metadata,
                              profiles=parse_profiles(profiles))
    return build_job(S3Object("ingest", key, version_id="v1"), params, SETTINGS)["settings"]


@mock_aws
def test_metadata_set_on_the_upload_reaches_the_job_settings():
    s3 = boto3.client("s3", region_name="us-east-1")
    s3.create_bucket(Bucket="ingest")
    s3.put_bucket_versioning(Bucket="ingest", VersioningConfiguration={"Status": "Enabled"})
    put = s3.put_object(Bucket="ingest", Key="sr/incoming/a.mp4", Body=b"x",
                        Metadata={"reelforge-scale": "2", "reelforge-frame-rate": "25", "owner": "ops"})
    s3.put_object(Bucket="ingest", Key="sr/incoming/a.mp4", Body=b"y")  # a later version without metadata
    pinned, meta = pin_source_and_metadata(s3, S3Object("ingest", "sr/incoming/a.mp4", version_id=put["VersionId"]))
    assert (pinned.version_id, pinned.size) == (put["VersionId"], 1)
    got = settings_for("sr/incoming/a.mp4", meta)
    assert (got["scale"], got["frame_rate"], got["model"]) == (2, "25", "auto")


def test_precedence_conf_then_metadata_then_folder_profile_then_defaults():
    assert settings_for("sr/incoming/x2/a.mp4", {})["scale"] == 2
    assert settings_for("sr/incoming/x3/deep/a.mp4", {})["scale"] == 3
    assert settings_for("sr/incoming/other/x2/a.mp4", {})["scale"] == 4  # only folders right under the prefix
    assert settings_for("sr/incoming/x2/a.mp4", {"reelforge-scale": "3"})["scale"] == 3
    assert settings_for("sr/incoming/x2/a.mp4", {"reelforge-scale": "3"}, conf={"scale": 4})["scale"] == 4
    # a reconciler's run names only the source: the upload's settings still apply
    assert settings_for("sr/incoming/x2/a.mp4", {}, conf={"source_uri": "s3://ingest/sr/incoming/x2/a.mp4"})[
        "scale"] == 2
    anime = '{"anime/": {"model": "anime"}, "anime/x2/": {"model": "anime", "scale": 2}}'
    got = settings_for("sr/incoming/anime/x2/a.mp4", {}, profiles=anime)
    assert (got["model"], got["scale"]) == ("anime", 2)
    assert settings_for("sr/incoming/anime/a.mp4", {}, profiles=anime)["scale"] == 4


@pytest.mark.parametrize(("metadata", "profiles", "reason"), [
    ({"reelforge-scale": "5"}, None, "setting 'scale'=5"),
    ({"reelforge-scale": "two"}, None, "'scale' is missing or not a int"),
    ({"reelforge-crf": "99"}, None, "crf must be within"),
    ({"reelforge-force": "true"}, None, "object metadata .* unknown setting.*'force'"),
    ({"reelforge-colour": "red"}, None, "unknown setting"),
    ({"reelforge-priority": "urgent"}, None, "priority 'urgent'"),
    ({"reelforge-frame-rate": "23"}, None, "setting 'frame_rate'"),
    ({}, "[1, 2]", "must map folders"),
    ({}, "{not json", "is not JSON"),
    ({}, '{"x2": {"scale": 2}}', "must end with '/'"),
    ({}, '{"x2/": {"bitrate": 2}}', "profile 'x2/'.*unknown"),
])
def test_bad_upload_settings_are_refused_naming_where_they_came_from(metadata, profiles, reason):
    with pytest.raises(InvalidSettingsError, match=reason):
        settings_for("sr/incoming/x2/a.mp4", metadata, profiles=profiles)
