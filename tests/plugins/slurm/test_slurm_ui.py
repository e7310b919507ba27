"""What the Slurm operator shows in the UI: progress with an ETA, the job's detail section, link XComs."""

from __future__ import annotations

import logging
import os
import uuid

import pytest

from reelforge.hooks.slurm import CommandResult
from reelforge.links import DELIVERY_KEY, SLURM_JOB_KEY
from reelforge.operators import slurm_ui
from reelforge.progress import ArrayProgress, format_duration
from tests.plugins.slurm.slurm_helpers import CONN_ID, fake_ti


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(("seconds", "text"), [(0, "0s"), (7.4, "7s"), (65, "1m05s"), (3725, "1h02m05s"), (-3, "0s")])
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_progress_has_an_eta_from_the_rate_seen_and_reports_only_changes():
    clock = Clock()
    p = ArrayProgress(10, label="segments", clock=clock)
    assert p.update(0, {"PENDING": 10}) == "0 of 10 segments done (0%), ETA unknown; 10 PENDING"
    assert p.update(0, {"PENDING": 10}) is None  # nothing changed: no new line
    clock.now += 30
    assert p.update(0, {"PENDING": 8, "RUNNING": 2}) == "0 of 10 segments done (0%), ETA unknown; 8 PENDING, 2 RUNNING"
    clock.now += 30  # 2 done in 60 s: 8 left take 240 s
    assert p.update(2, {"COMPLETED": 2, "PENDING": 6, "RUNNING": 2}) == (
        "2 of 10 segments done (20%), ETA 4m00s; 2 COMPLETED, 6 PENDING, 2 RUNNING")
    clock.now += 60
    assert p.eta_seconds(5) == pytest.approx(5 * 120 / 5)
    assert p.update(10, {"COMPLETED": 10}) == "10 of 10 segments done (100%); 10 COMPLETED"


def test_progress_of_a_reattached_half_done_array_counts_only_what_finished_while_watched():
    clock = Clock()
    p = ArrayProgress(4, clock=clock)
    p.update(2)  # an earlier try finished two tasks
    clock.now += 100
    assert p.eta_seconds(2) is None
    assert p.update(3) == "3 of 4 tasks done (75%), ETA 1m40s"


class FakeHook:
    """Records commands; answers scontrol/sacct like a cluster where the job is known."""

    def __init__(self, sacct: bool, manifest: object = None) -> None:
        self.sacct, self.manifest, self.argvs = sacct, manifest, []

    def _slurm(self, command: str, *args: object) -> list[str]:
        return [command, *map(str, args)]

    def uses_sacct(self) -> bool:
        return self.sacct

    def run_command(self, argv, *, check=True, timeout=None) -> CommandResult:
        self.argvs.append(argv)
        lines = "\n".join(f"line {i}" for i in range(300)) if argv[0] == "scontrol" else "JobID|State\n7|COMPLETED"
        return CommandResult(argv, 0, lines, "")

    def read_json(self, path: str) -> object:
        self.read = path
        if self.manifest is None:
            raise FileNotFoundError(path)
        return self.manifest


def test_job_detail_runs_scontrol_and_sacct_and_caps_long_output():
    hook = FakeHook(sacct=True)
    text = slurm_ui.job_detail(hook, "7")
    assert hook.argvs == [["scontrol", "show", "job", "7"],
                          ["sacct", "-j", "7", "-P", f"--format={slurm_ui.SACCT_FORMAT}"]]
    assert "$ scontrol show job 7\nline 0" in text and "line 199" in text and "line 200" not in text
    assert "… 100 more lines" in text and "7|COMPLETED" in text
    no_acct = slurm_ui.job_detail(FakeHook(sacct=False), "7")
    assert "sacct not available" in no_acct


def test_log_job_detail_is_a_collapsible_section_and_never_raises(caplog):
    log = logging.getLogger("test.slurm_ui")
    with caplog.at_level(logging.INFO, logger="test.slurm_ui"):
        slurm_ui.log_job_detail(log, FakeHook(sacct=False), "7")
        broken = FakeHook(sacct=True)
        broken.run_command = lambda *a, **k: (_ for _ in ()).throw(OSError("ssh down"))
        slurm_ui.log_job_detail(log, broken, "8")
    messages = [r.getMessage() for r in caplog.records]
    assert messages[0] == "::group::Slurm job 7: scontrol / sacct" and messages[2] == "::endgroup::"
    assert "could not read the job's detail: ssh down" in messages[4]


def test_push_job_and_delivery(monkeypatch):
    ti = fake_ti("assemble", "r1")
    run = {"name": "assemble-0123456789", "workdir": "/w/j", "log_dir": "/w/j/logs"}
    slurm_ui.push_job({"ti": ti}, run, "42")
    assert ti.xcoms[SLURM_JOB_KEY] == {"job_id": "42", "job_name": run["name"], "workdir": "/w/j",
                                       "log_dir": "/w/j/logs"}

    monkeypatch.setattr(slurm_ui, "aws_location", lambda conn_id: ("eu-west-1", None) if conn_id else (None, None))
    log = logging.getLogger("test.slurm_ui")
    slurm_ui.push_delivery({"ti": ti}, log, FakeHook(sacct=False), run, "delivery.json", "aws_default")
    assert DELIVERY_KEY not in ti.xcoms  # no manifest: no links, no failure
    manifest = {"bucket": "b", "prefix": "sr/x/", "objects": [{"role": "video", "bucket": "b", "key": "sr/x/v.mp4"}]}
    hook = FakeHook(sacct=False, manifest=manifest)
    slurm_ui.push_delivery({"ti": ti}, log, hook, run, "delivery.json", "aws_default")
    assert hook.read == "/w/j/delivery.json"
    assert ti.xcoms[DELIVERY_KEY] == {"bucket": "b", "prefix": "sr/x/", "region": "eu-west-1", "endpoint_url": None,
                                      "objects": [{"role": "video", "bucket": "b", "key": "sr/x/v.mp4"}]}
    assert slurm_ui.manifest_path("/w/j", "/abs/d.json") == "/abs/d.json"


class FakeS3:
    def generate_presigned_url(self, method: str, Params: dict, ExpiresIn: int) -> str:  # noqa: N803 (boto's names)
        assert ExpiresIn == slurm_ui.PRESIGN_SECONDS
        return f"http://s3.local/{method}/{Params['Bucket']}/{Params.get('Key', Params.get('Prefix'))}?Signature=x"


def test_a_custom_endpoint_gets_presigned_links(monkeypatch):
    """moto (or any non-AWS endpoint) has no console: the links are presigned when the delivery is recorded."""
    original = slurm_ui.presigned_links
    monkeypatch.setattr(slurm_ui, "aws_location", lambda conn_id: ("us-east-1", "http://s3.local"))
    monkeypatch.setattr(slurm_ui, "presigned_links", lambda record, conn_id: original(record, conn_id, FakeS3()))
    ti = fake_ti("assemble", "r1")
    manifest = {"bucket": "b", "prefix": "sr/x/", "objects": [
        {"role": "video", "bucket": "b", "key": "sr/x/v.mp4"},
        {"role": "preview", "bucket": "b", "key": "sr/x/previews/p.png"}]}
    run = {"name": "n", "workdir": "/w/j", "log_dir": "/w/j/logs"}
    slurm_ui.push_delivery({"ti": ti}, logging.getLogger("t"), FakeHook(False, manifest), run, "delivery.json", "aws")
    assert ti.xcoms[DELIVERY_KEY]["urls"] == {
        "Output (S3)": "http://s3.local/list_objects_v2/b/sr/x/?Signature=x",
        "Delivered video": "http://s3.local/get_object/b/sr/x/v.mp4?Signature=x",
        "Preview image": "http://s3.local/get_object/b/sr/x/previews/p.png?Signature=x",
        "Previews (S3)": "http://s3.local/list_objects_v2/b/sr/x/previews/?Signature=x",
    }


def test_aws_location_reads_the_connection(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_LINKS_TEST", '{"conn_type": "aws", "extra": {"region_name": "eu-north-1", '
                                                  '"endpoint_url": "http://127.0.0.1:5000"}}')
    assert slurm_ui.aws_location("links_test") == ("eu-north-1", "http://127.0.0.1:5000")
    assert slurm_ui.aws_location(None) == (None, None)


@pytest.mark.stack
def test_operator_on_the_cluster_pushes_link_xcoms_and_logs_progress_and_detail(capfd):
    """A plain job that writes a delivery manifest, watched from the task (no deferral), on the real Slurm."""
    from reelforge.hooks.slurm import SlurmHook
    from reelforge.operators.slurm import SlurmJobOperator

    root = os.environ.get("AIRFLOW_VAR_REELFORGE_CLUSTER_WORK_ROOT", "/srv/reelforge")
    workdir = f"{root}/pytest-slurm-ui/{uuid.uuid4().hex[:8]}"
    script = ("#!/bin/bash\n#SBATCH --ntasks=1\nset -eu\n"
              'printf \'{"bucket": "out", "prefix": "sr/%s/", "objects": [{"role": "video", "bucket": "out", '
              '"key": "sr/%s/v.mp4"}]}\' "$NAME" "$NAME" > delivery.json\n')
    op = SlurmJobOperator(task_id="ui", ssh_conn_id=CONN_ID, script=script, workdir=workdir, env={"NAME": "clip"},
                          time_limit=5, poll_interval=1, wait_before_defer=120, delivery_manifest="delivery.json")
    ti = fake_ti("ui", f"manual__ui-{uuid.uuid4().hex[:6]}")
    try:
        result = op.execute({"ti": ti})
    finally:
        with SlurmHook(CONN_ID) as hook:
            hook.run_command(["rm", "-rf", workdir], check=False)
    assert result["tasks"]["0"]["state"] == "COMPLETED"
    assert ti.xcoms[SLURM_JOB_KEY]["job_id"] == result["job_id"]
    delivery = ti.xcoms[DELIVERY_KEY]
    assert delivery["objects"] == [{"role": "video", "bucket": "out", "key": "sr/clip/v.mp4"}]
    assert delivery["endpoint_url"] == os.environ["REELFORGE_AWS_ENDPOINT_URL"]  # the aws_default connection
    assert set(delivery["urls"]) == {"Output (S3)", "Delivered video"}
    assert all(u.startswith(delivery["endpoint_url"]) and "Signature=" in u for u in delivery["urls"].values())
    out = capfd.readouterr()
    logged = out.out + out.err
    assert "1 of 1 tasks done (100%)" in logged
    assert f"::group::Slurm job {result['job_id']}: scontrol / sacct" in logged
    assert f"$ scontrol show job {result['job_id']}" in logged
