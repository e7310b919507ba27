"""Every way the worker CLI ends: its exit status, what stderr says, and the ``failure`` file.

The Slurm operator reads these: exit 0 and JSON on stdout; exit 1 with the worker's sentence, plus the
permanent-failure line when a retry cannot help; 130 when interrupted; 2 for a usage error.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys

import pytest

from reelforge_sr import cli
from reelforge_sr.cli import PERMANENT_FAILURE_MARKER, main
from reelforge_sr.errors import ModelError, ProbeError, StorageError, UnusableObjectError


@pytest.fixture
def workdir(tmp_path):
    d = tmp_path / "job"
    d.mkdir()
    return d


def test_success_prints_json_and_exits_0(clips, capsys):
    assert main(["-q", "probe", str(clips["av"])]) == 0
    assert json.loads(capsys.readouterr().out)["video"]["width"] == 64


def test_a_permanent_input_failure_says_so_once_with_the_reason(workdir, tmp_path, capsys):
    text = tmp_path / "notes.mp4"
    text.write_text("not a video\n" * 100)
    assert main(["plan", "--source", str(text), "--workdir", str(workdir)]) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith(PERMANENT_FAILURE_MARKER)]
    assert len(lines) == 1 and "not a media file or corrupt" in lines[0]
    assert "Traceback" not in err
    assert "not a media file or corrupt" in (workdir / "failure").read_text()


@pytest.mark.parametrize(("error", "permanent"), [
    (StorageError("s3://b/k: connection reset (4 attempts)"), False),
    (ModelError("weights for realesr-animevideov3 not found in /fsx/models"), False),
    (UnusableObjectError("s3://b/k: no such key"), True),
    (ProbeError("/w/source.mp4: no video stream (streams: audio)"), True),
])
def test_each_error_class_is_exit_1_and_only_permanent_ones_carry_the_marker(error, permanent, workdir, monkeypatch,
                                                                             capsys):
    def fail(_args):
        raise error

    monkeypatch.setattr(cli, "_run", fail)
    assert main(["segment", "--workdir", str(workdir), "--index", "3"]) == 1
    err = capsys.readouterr().err
    assert f"reelforge-sr segment: error: {error}" in err
    assert (PERMANENT_FAILURE_MARKER in err) is permanent
    assert (workdir / "failure").read_text() == f"reelforge-sr segment 3: {error}\n"


def test_an_unexpected_bug_keeps_its_traceback_and_is_not_called_permanent(workdir, monkeypatch, capsys):
    def bug(_args):
        raise KeyError("frames")

    monkeypatch.setattr(cli, "_run", bug)
    assert main(["assemble", "--workdir", str(workdir)]) == 1
    err = capsys.readouterr().err
    assert "Traceback" in err and "KeyError" in err and PERMANENT_FAILURE_MARKER not in err
    assert "unexpected KeyError" in (workdir / "failure").read_text()


def test_an_interrupt_is_130(workdir, monkeypatch):
    def interrupted(_args):
        raise KeyboardInterrupt

    monkeypatch.setattr(cli, "_run", interrupted)
    assert main(["assemble", "--workdir", str(workdir)]) == 130
    assert (workdir / "failure").read_text().strip() == "reelforge-sr assemble: interrupted"


def test_a_usage_error_is_2_before_anything_runs(workdir, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["segment", "--workdir", str(workdir), "--index", "not-a-number"])
    assert exit_.value.code == 2 and "invalid int value" in capsys.readouterr().err
    assert not (workdir / "failure").exists()


def test_sigterm_from_slurm_is_a_transient_failure_with_a_failure_file(workdir, tmp_path):
    """Slurm cancels with SIGTERM: the worker unwinds, reports and exits 1 (a retry may succeed)."""
    script = tmp_path / "slow.py"
    script.write_text(
        "import sys, time\n"
        "from reelforge_sr import cli\n"
        "cli._run = lambda args: (print('ready', flush=True), time.sleep(60))\n"
        "sys.exit(cli.main(sys.argv[1:]))\n"
    )
    proc = subprocess.Popen([sys.executable, str(script), "assemble", "--workdir", str(workdir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=dict(os.environ))
    assert proc.stdout.readline().strip() == "ready"  # the handler is installed before the step runs
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1
    assert "terminated by signal 15" in err and PERMANENT_FAILURE_MARKER not in err
    assert "terminated by signal 15" in (workdir / "failure").read_text()
