"""scripts/moto_server.py: the local AWS endpoint decides a conditional write atomically, as S3 does.

moto checks ``If-None-Match: *`` and then writes; between the two another request's thread can run. The
window is microseconds, so these tests widen it (a 50 ms pause after moto looks the key up) and race
claims through a real moto server in this process: with the wrapper's lock one claim wins, without it
several do.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator

import boto3
import moto_server
import pytest
from moto.moto_server.threaded_moto_server import ThreadedMotoServer
from moto.s3.models import S3Backend
from moto.s3.responses import S3Response

from reelforge.sr.claims import ClaimOutcome, claim_job

RACERS = 6


@pytest.fixture
def endpoint(monkeypatch) -> Iterator[str]:
    looked_up = S3Backend.get_object

    def slow_lookup(self, *args, **kwargs):
        found = looked_up(self, *args, **kwargs)
        time.sleep(0.05)  # between the condition's check and the write
        return found

    monkeypatch.setattr(S3Backend, "get_object", slow_lookup)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        yield f"http://127.0.0.1:{server.get_host_and_port()[1]}"
    finally:
        server.stop()


def race(endpoint: str) -> dict[str, ClaimOutcome]:
    """RACERS runs claim one job at the same moment; their outcomes."""
    s3 = boto3.client("s3", endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
                      aws_secret_access_key="testing")  # moto's documented dummy keys
    bucket = f"race-{uuid.uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    start, outcomes = threading.Barrier(RACERS), {}

    def claim(run_id: str) -> None:
        start.wait()
        outcomes[run_id] = claim_job(s3, bucket=bucket, done_markers=[], claims_prefix="_claims/", jid="job",
                                     run_id=run_id, source_uri="s3://ingest/clip.mp4")[0]

    threads = [threading.Thread(target=claim, args=(f"run-{i}",)) for i in range(RACERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(outcomes) == RACERS
    return outcomes


def test_racing_claims_have_one_winner_on_the_local_endpoint(endpoint):
    assert S3Response.put_object is moto_server._atomic_put_object
    outcomes = race(endpoint)
    assert sorted(outcomes.values()) == sorted([ClaimOutcome.CLAIMED] + [ClaimOutcome.DUPLICATE] * (RACERS - 1))


def test_plain_moto_lets_racing_claims_both_win(endpoint, monkeypatch):
    """The defect the wrapper removes: the same race on moto's own put_object has several winners."""
    monkeypatch.setattr(S3Response, "put_object", moto_server._put_object)
    winners = [r for r, o in race(endpoint).items() if o is ClaimOutcome.CLAIMED]
    assert len(winners) > 1, winners
