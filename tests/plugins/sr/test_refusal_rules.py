"""Issue 21: what `prepare` refuses is what the cluster's worker refuses, so no bad key costs cluster time,
and the worker marks input it cannot use as a permanent failure (no retries)."""

from __future__ import annotations

import pytest

from reelforge.operators.slurm import PERMANENT_FAILURE_MARKER as OPERATOR_MARKER
from reelforge.storage import InvalidSourceError, validate_key
from reelforge_sr import cli, s3io
from reelforge_sr.errors import AssembleError, ProbeError, SegmentError, StorageError, UnusableObjectError

KEYS = [
    "sr/incoming/film.mp4", "sr/incoming/a b; $(id) `x` 'q' \"d\".mkv", "sr/incoming/ünïcødé 映画.mp4",
    "sr/incoming/../etc/passwd.mp4", "sr/incoming/./a.mp4", "sr/incoming//a.mp4", "/sr/incoming/a.mp4",
    "..", "sr/incoming/..", "sr/incoming/a..b.mp4", "sr/incoming/...mp4", "sr/incoming/a\nb.mp4",
    "sr/incoming/a\x00b.mp4", "sr/incoming/a\x7f.mp4", "x" * 1024, "é" * 513, "sr/incoming/",
    "", "sr/incoming/.hidden.mp4",
]


def _airflow_accepts(key: str) -> bool:
    try:
        validate_key(key)
    except InvalidSourceError:
        return False
    return True


def _worker_accepts(key: str) -> bool:
    try:
        s3io.validate_key(key)
    except StorageError:
        return False
    return True


@pytest.mark.parametrize("key", KEYS, ids=range(len(KEYS)))
def test_prepare_refuses_every_object_key_the_worker_refuses(key):
    # a trailing "/" is a folder marker for prepare (never an object to process); the worker accepts it as a prefix
    worker = _worker_accepts(key) and not key.endswith("/")
    assert _airflow_accepts(key) == worker, key


def test_unusable_input_is_permanent_and_everything_else_is_not():
    assert ProbeError.permanent and UnusableObjectError.permanent
    assert not StorageError.permanent and not SegmentError.permanent and not AssembleError.permanent
    with pytest.raises(UnusableObjectError):
        s3io.validate_key("sr/incoming/../a.mp4")


def test_the_cli_tells_the_operator_a_bad_key_is_permanent(tmp_path, capsys):
    assert cli.PERMANENT_FAILURE_MARKER == OPERATOR_MARKER
    rc = cli.main(["fetch", "s3://reelforge-ingest/sr/incoming/../x.mp4", str(tmp_path / "x.mp4")])
    err = capsys.readouterr().err
    assert rc == 1
    assert f"{OPERATOR_MARKER}S3 key 'sr/incoming/../x.mp4' has an empty, '.' or '..' path segment" in err
