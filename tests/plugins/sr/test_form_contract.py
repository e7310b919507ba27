"""The SR form, the sbatch script and the worker CLI agree: every setting travels from a run's values to
the plan the worker writes.

Both sides run for real: the job spec and environment from ``reelforge.sr.job``, the real
``include/slurm/sr/01-plan.sbatch`` under bash (``srun`` is a double that runs its command here: Slurm
is not ours), the real ``reelforge-sr`` fetching from a moto server and writing ``plan.json``.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import boto3
import pytest
from moto.server import ThreadedMotoServer

from reelforge.sr.form import FIELDS, RESULT_FIELDS, defaults, form_params
from reelforge.sr.job import build_job, worker_env
from reelforge.sr.settings import SRSettings
from reelforge.storage import S3Object

ROOT = Path(__file__).resolve().parents[3]
PLAN_SBATCH = ROOT / "include" / "slurm" / "sr" / "01-plan.sbatch"
VENV_BIN = Path(sys.executable).parent


def sbatch_flags() -> dict[str, str]:
    """SR_* variable → the worker flag 01-plan.sbatch passes it as (``--scale "$SR_SCALE"``)."""
    return {var: flag for flag, var in re.findall(r'(--[a-z-]+) "\$(SR_[A-Z_]+)"', PLAN_SBATCH.read_text())}


def sbatch_fallbacks() -> dict[str, str]:
    """The script's own defaults for a hand-run job (``: "${SR_SCALE:=4}"``)."""
    return dict(re.findall(r':\s+"\$\{(SR_[A-Z_]+):=([^}]*)\}"', PLAN_SBATCH.read_text()))


def test_every_result_setting_reaches_the_worker_with_the_same_default_and_choices():
    from reelforge_sr.cli import _parser

    flags, fallbacks = sbatch_flags(), sbatch_fallbacks()
    plan_cli = next(a for a in _parser()._actions if a.dest == "command").choices["plan"]
    cli = {a.option_strings[0]: a for a in plan_cli._actions if a.option_strings}
    for name, f in RESULT_FIELDS.items():
        flag = flags[f.env]  # the script passes it on
        assert fallbacks[f.env] == str(f.default), (name, "the sbatch fallback differs from the form")
        assert str(cli[flag].default).removesuffix(".0") == str(f.default), (name, "the CLI default differs")
        for value in f.choices or ():
            plan_cli.parse_args(["--source", "s", "--workdir", "w", flag, str(value)])  # exits on a refusal
    assert set(flags) == {f.env for f in RESULT_FIELDS.values()}, "a flag the form does not know"


def test_the_dag_form_is_the_single_definition():
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(ROOT / "dags" / "video_super_resolution.py")).dags["video_super_resolution"]
    params = dag.params.dump()
    assert {k: params[k] for k in FIELDS} == defaults()
    for name, param in form_params().items():
        assert dag.params.get_param(name).schema == param.schema, name


@pytest.fixture(scope="module")
def s3():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", region_name="us-east-1", endpoint_url=endpoint, aws_access_key_id="testing",
                          aws_secret_access_key="testing")
    client.create_bucket(Bucket="ingest")
    yield client, endpoint
    server.stop()


def test_a_run_s_values_arrive_in_the_plan_through_the_real_sbatch_script_and_cli(s3, tmp_path):
    client, endpoint = s3
    clip = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc2=s=64x48:r=25:d=2", "-c:v", "libx264",
                    "-pix_fmt", "yuv420p", str(clip)], check=True)
    put = client.put_object(Bucket="ingest", Key="in/reel 1.mp4", Body=clip.read_bytes())
    # every result setting away from its default
    chosen = {"model": "anime", "scale": 2, "container": "mkv", "codec": "libx265", "crf": 23, "ten_bit": "off",
              "deinterlace": "off", "sar": "keep", "frame_rate": "30", "segment_seconds": 1, "preview_seconds": 1,
              "ivtc": "off", "reuse_held": "off"}
    assert set(chosen) == set(RESULT_FIELDS) and all(chosen[k] != RESULT_FIELDS[k].default for k in chosen)
    settings = SRSettings(
        ingest_bucket="ingest", ingest_prefix="in/", output_bucket="out", output_prefix="sr/", topic_arn="",
        cluster_work_root=str(tmp_path / "fsx"), worker_venv=str(VENV_BIN.parent), model_dir="",
        container_image="", cpu_partition="cpu", gpu_partition="gpu", gpu_gres="", array_throttle=2,
        max_source_bytes=1 << 30,
    )
    job = build_job(S3Object("ingest", "in/reel 1.mp4", put.get("VersionId"), put["ETag"].strip('"')),
                    {**defaults(), **chosen}, settings)
    double = tmp_path / "bin"
    double.mkdir()
    (double / "srun").write_text('#!/bin/bash\n# double of Slurm\'s srun: drop its options, run the command here\n'
                                 'while [[ "${1:-}" == --* ]]; do shift; done\nexec "$@"\n')
    (double / "srun").chmod(0o755)
    env = {"PATH": f"{double}:{os.environ['PATH']}", "HOME": str(tmp_path), "AWS_ENDPOINT_URL": endpoint,
           "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           **worker_env(job, settings)}
    done = subprocess.run(["bash", str(PLAN_SBATCH)], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    plan = json.loads((Path(job["workdir"]) / "plan.json").read_text())
    for name, value in chosen.items():
        assert plan["settings"][name] == value, (name, plan["settings"][name], value)
    assert plan["model"] == "realesr-animevideov3" and plan["frame_map"]["fps"] == "30"
