"""The pure pieces split out of the Slurm hook: squeue's job list and the env words for sbatch."""

from __future__ import annotations

import pytest

from reelforge.hooks.sbatch import env_assignments
from reelforge.hooks.slurm_text import join_command, parse_squeue_jobs
from reelforge.hooks.verified_ssh import expand_proxy_command

# `squeue --me -h -r -t all --name=x -o '%F|%i|%T'` with one array (one task pending as a range) and a job
SQUEUE = """\
41|41_0|COMPLETED
41|41_1|RUNNING
41|41_[2-4%2]|PENDING
57|57|FAILED
not|a|job
"""


def test_squeue_jobs_by_id_and_index_with_pending_ranges_expanded():
    assert parse_squeue_jobs(SQUEUE) == {
        "41": {0: "COMPLETED", 1: "RUNNING", 2: "PENDING", 3: "PENDING", 4: "PENDING"},
        "57": {0: "FAILED"},
    }
    assert parse_squeue_jobs("") == {}


def test_env_words_keep_values_whole_and_refuse_names_that_are_not_identifiers():
    words = env_assignments({"A": "x,y\nz", "B": None, "C": "$(id) 'q'"})
    assert words == ["A=x,y\nz", "B=", "C=$(id) 'q'"]
    assert join_command(["env", *words]) == "env 'A=x,y\nz' B= 'C=$(id) '\"'\"'q'\"'\"''"
    for bad in ("1A", "A-B", "A B", "$(id)"):
        with pytest.raises(ValueError, match="not a shell identifier"):
            env_assignments({bad: "v"})


def test_proxy_command_placeholders_are_quoted():
    assert expand_proxy_command("aws ssm start-session --target %h --port %p # %r %%", "i-0abc", 22, "o'neil") == \
        "aws ssm start-session --target i-0abc --port 22 # 'o'\"'\"'neil' %"
