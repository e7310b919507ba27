"""Unit tests of the Slurm parsers, command building and naming, on text captured from Slurm 22.05."""

from __future__ import annotations

import json
import shlex
import subprocess

import pytest

from reelforge.hooks.sbatch import build_sbatch_argv, inject_env, slurm_filename_literal
from reelforge.hooks.slurm_text import (
    TaskState,
    compress_indices,
    expand_array,
    join_command,
    normalize_state,
    parse_exit_code,
    parse_sacct,
    parse_scontrol,
    parse_squeue,
    split_throttle,
)
from reelforge.operators.slurm import SlurmJobOperator, slurm_job_name
from reelforge.triggers.slurm import SlurmJobTrigger

# `sacct -n -P -X -j 3 --format=JobID,State,ExitCode,Reason` while array 0-5%2 ran (captured).
SACCT_RUNNING = """\
3_0|COMPLETED|0:0|None
3_1|COMPLETED|0:0|None
3_[2-5%2]|PENDING|0:0|None
"""
SACCT_DONE = """\
3_0|COMPLETED|0:0|None
3_1|COMPLETED|0:0|None
3_2|COMPLETED|0:0|JobArrayTaskLimit
3_3|FAILED|3:0|JobArrayTaskLimit
3_4|COMPLETED|0:0|JobArrayTaskLimit
3_5|COMPLETED|0:0|JobArrayTaskLimit
"""
# Right after the last task leaves squeue, sacct can show the array job without the _N suffix.
SACCT_LAGGING = """\
7|COMPLETED|0:0|None
7_1|RUNNING|0:0|None
"""
SACCT_OTHER_STATES = """\
21|CANCELLED by 1001|0:15|None
22|TIMEOUT|0:0|None
23_4|OUT_OF_MEMORY|0:125|None
23_5|NODE_FAIL|1:0|None
"""
SQUEUE = """\
3_1|COMPLETED|None
3_0|COMPLETED|None
3_2|PENDING|JobArrayTaskLimit
3_3|FAILED|NonZeroExitCode
3_4|PENDING|JobArrayTaskLimit
"""
SCONTROL = (
    "JobId=9 ArrayJobId=3 ArrayTaskId=5 ArrayTaskThrottle=2 JobName=exp UserId=reelforge(1001) "
    "JobState=COMPLETED Reason=None Dependency=(null) ExitCode=0:0 RunTime=00:00:02 "
    "WorkDir=/srv/reelforge/exp StdOut=/srv/reelforge/exp/exp_3_5.out Power= \n"
    "JobId=7 ArrayJobId=3 ArrayTaskId=3 ArrayTaskThrottle=2 JobName=exp UserId=reelforge(1001) "
    "JobState=FAILED Reason=NonZeroExitCode Dependency=(null) ExitCode=3:0 RunTime=00:00:02 "
    # A path with spaces, a newline and a fake field must not confuse the parser.
    "WorkDir=/srv/a dir ExitCode=0:0\nJobState=COMPLETED StdOut=/srv/x.out Power= \n"
    "JobId=3 ArrayJobId=3 ArrayTaskId=6-9%2 ArrayTaskThrottle=2 JobName=exp JobState=PENDING "
    "Reason=JobArrayTaskLimit ExitCode=0:0\n"
)


def test_parse_sacct_running_expands_pending_range():
    states = parse_sacct(SACCT_RUNNING, "3", is_array=True)
    assert sorted(states) == [0, 1, 2, 3, 4, 5]
    assert states[0] == TaskState("COMPLETED", 0, 0, None)
    assert all(states[i].state == "PENDING" and not states[i].terminal for i in range(2, 6))


def test_parse_sacct_done_reports_failed_exit_code():
    states = parse_sacct(SACCT_DONE, 3, is_array=True)
    assert states[3] == TaskState("FAILED", 3, 0, None)
    assert [i for i, s in states.items() if not s.ok] == [3]
    assert all(s.terminal for s in states.values())


def test_parse_sacct_ignores_bare_row_of_an_array():
    states = parse_sacct(SACCT_LAGGING, "7", is_array=True)
    assert states == {1: TaskState("RUNNING", 0, 0, None)}


def test_parse_sacct_plain_jobs_and_states():
    assert parse_sacct(SACCT_OTHER_STATES, "21", is_array=False) == {0: TaskState("CANCELLED", 0, 15, None)}
    assert parse_sacct(SACCT_OTHER_STATES, "22", is_array=False)[0].state == "TIMEOUT"
    arr = parse_sacct(SACCT_OTHER_STATES, "23", is_array=True)
    assert arr[4].state == "OUT_OF_MEMORY" and arr[5] == TaskState("NODE_FAIL", 1, 0, None)
    assert parse_sacct(SACCT_OTHER_STATES, "23", is_array=False) == {}
    assert parse_sacct("", "23", is_array=True) == {}


def test_parse_squeue():
    states = parse_squeue(SQUEUE, "3", is_array=True)
    assert states[3] == TaskState("FAILED", None, None, "NonZeroExitCode")
    assert states[2] == TaskState("PENDING", None, None, "JobArrayTaskLimit")
    assert states[0].reason is None
    assert parse_squeue("12|RUNNING|None\n", "12", is_array=False) == {0: TaskState("RUNNING")}


def test_parse_scontrol_uses_first_fields_only():
    states = parse_scontrol(SCONTROL, "3", is_array=True)
    assert states == {
        5: TaskState("COMPLETED", 0, 0, None),
        3: TaskState("FAILED", 3, 0, "NonZeroExitCode"),
    }
    plain = "JobId=44 JobName=x JobState=TIMEOUT Reason=TimeLimit Dependency=(null) ExitCode=0:15\n"
    assert parse_scontrol(plain, "44", is_array=False) == {0: TaskState("TIMEOUT", 0, 15, "TimeLimit")}


def test_state_and_exit_code_helpers():
    assert normalize_state("CANCELLED by 1001") == "CANCELLED"
    assert normalize_state("FAILED+") == "FAILED"
    assert parse_exit_code("3:0") == (3, 0)
    assert parse_exit_code("0:15") == (0, 15)
    assert parse_exit_code("") == (None, None)
    assert TaskState.from_dict(TaskState("TIMEOUT", 0, 15, "x").to_dict()) == TaskState("TIMEOUT", 0, 15, "x")


@pytest.mark.parametrize(
    ("spec", "indices", "compressed"),
    [
        ("0-5", [0, 1, 2, 3, 4, 5], "0-5"),
        ("0-9%2", list(range(10)), "0-9"),
        ("1,3,5-7", [1, 3, 5, 6, 7], "1,3,5-7"),
        ("0-8:4", [0, 4, 8], "0,4,8"),
        ("7", [7], "7"),
    ],
)
def test_array_specs(spec, indices, compressed):
    assert expand_array(spec) == indices
    assert compress_indices(indices) == compressed


@pytest.mark.parametrize("bad", ["", "a", "1-", "5-2", "0-3%0", "1;2", "0-9%x", "$(id)"])
def test_bad_array_specs(bad):
    with pytest.raises(ValueError):
        expand_array(bad)


def test_split_throttle():
    assert split_throttle("0-9%3") == ("0-9", 3)
    assert split_throttle("4") == ("4", None)


def test_sbatch_argv_is_quoted_word_by_word():
    nasty = "a b'c\"d;e$(f)`g`\nh"
    argv = build_sbatch_argv(
        f"/w/{nasty}/s.sbatch",
        job_name="j",
        array="0-3",
        throttle=2,
        partition="gpu",
        time_limit=5,
        gres="gpu:1",
        cpus_per_task="2",
        mem="4G",
        dependency="afterok:1",
        chdir=f"/w/{nasty}",
        output=f"/w/{slurm_filename_literal(nasty)}/%x_%A_%a.out",
        extra_args=["--nice=100"],
        script_args=[nasty],
    )
    assert argv[:3] == ["sbatch", "--parsable", "--job-name=j"]
    assert "--array=0-3%2" in argv and "--cpus-per-task=2" in argv and "--time=5" in argv
    assert argv[-1] == nasty and argv[-2] == f"/w/{nasty}/s.sbatch"
    assert shlex.split(join_command(argv)) == argv
    with pytest.raises(ValueError):
        build_sbatch_argv("s", extra_args=["rm -rf /"])
    assert slurm_filename_literal("/a%b") == "/a%%b"


def test_inject_env_goes_after_the_header_and_round_trips_through_bash(tmp_path):
    value = "sp ace 'q' \"dq\" ; $(touch MARK) `touch MARK` \\ \n second line, comma %j"
    script = "#!/bin/bash\n#SBATCH --ntasks=1\n\n# comment\nset -eu\nprintf '%s' \"$V\"\n"
    out = inject_env(script, {"V": value, "EMPTY": None})
    lines = out.splitlines()
    assert lines[:4] == ["#!/bin/bash", "#SBATCH --ntasks=1", "", "# comment"]
    assert out.index("export V=") < out.index("set -eu")
    path = tmp_path / "s.sh"
    path.write_text(out)
    result = subprocess.run(["bash", str(path)], cwd=tmp_path, capture_output=True, text=True, check=True)
    assert result.stdout == value
    assert not (tmp_path / "MARK").exists()
    with pytest.raises(ValueError):
        inject_env(script, {"BAD-KEY": "x"})
    with pytest.raises(ValueError):
        inject_env("echo no shebang\n", {"V": "x"})


def test_job_name_is_deterministic_and_slurm_safe():
    a = slurm_job_name("dag", "manual__2026-01-01T00:00:00+00:00", "upscale", -1)
    assert a == slurm_job_name("dag", "manual__2026-01-01T00:00:00+00:00", "upscale", -1)
    assert a != slurm_job_name("dag", "manual__2026-01-01T00:00:01+00:00", "upscale", -1)
    assert a != slurm_job_name("dag", "manual__2026-01-01T00:00:00+00:00", "upscale", 3)
    nasty = slurm_job_name("d", "r", "t", prefix="x; $(rm -rf /) `id`\n'\"")
    assert all(c.isalnum() or c in "_.-" for c in nasty)


def test_trigger_serializes_to_json():
    trigger = SlurmJobTrigger(ssh_conn_id="slurm_ssh", job_id="42", array="0-3", job_name="n", poll_interval=3)
    path, kwargs = trigger.serialize()
    assert path == "reelforge.triggers.slurm.SlurmJobTrigger"
    assert json.loads(json.dumps(kwargs)) == kwargs
    assert SlurmJobTrigger(**kwargs).serialize() == (path, kwargs)
    assert kwargs["first_poll_delay"] == 10.0  # the default keeps a fast job from racing the deferral
    with pytest.raises(ValueError):
        SlurmJobTrigger(ssh_conn_id="x", job_id="1; id")


def test_operator_template_fields():
    op = SlurmJobOperator(task_id="t", script="slurm/examples/hello_array.sbatch", workdir="/w")
    for name in (
        "script",
        "script_args",
        "array",
        "env",
        "workdir",
        "job_name",
        "partition",
        "time_limit",
        "dependency",
        "extra_args",
        "gres",
        "array_throttle",
    ):
        assert name in op.template_fields
    assert set(op.template_ext) == {".sbatch", ".sh"}


@pytest.mark.parametrize("workdir", ["relative/dir", "/srv/a\\b", ""])
def test_workdir_is_checked(workdir):
    from types import SimpleNamespace

    op = SlurmJobOperator(task_id="t", script="#!/bin/bash\n", workdir=workdir)
    ti = SimpleNamespace(dag_id="d", run_id="r", task_id="t", map_index=-1, try_number=1)
    with pytest.raises(ValueError, match="workdir"):
        op._run({"ti": ti})


def test_run_layout():
    from types import SimpleNamespace

    op = SlurmJobOperator(task_id="up", script="#!/bin/bash\n", workdir="/w/job/", array="0-4%2")
    ti = SimpleNamespace(dag_id="d", run_id="r", task_id="up", map_index=-1, try_number=2)
    run = op._run({"ti": ti})
    name = slurm_job_name("d", "r", "up")
    assert run["name"] == name and run["array"] == "0-4" and run["throttle"] == 2
    assert run["indices"] == [0, 1, 2, 3, 4] and run["try_number"] == 2
    assert run["script_path"] == f"/w/job/.slurm/{name}.sbatch"
    assert run["state_path"] == f"/w/job/.slurm/{name}.json"
    assert op.log_path(run, "12", 3) == f"/w/job/logs/{name}_12_3.out"
