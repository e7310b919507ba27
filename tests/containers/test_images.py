"""Every image in containers/ is built here and its entrypoint answers the way its platform calls it.

The images come from ``scripts/push-images --bases local`` (``make images``) on the bases ``scripts/local-docker``
makes (no registry): tag ``:local``. A missing image is built by the session fixture (minutes: the model images
install their Python stacks). Each check runs the container as its platform would: SageMaker with ``train`` or
``serve`` or a processing entrypoint, Slurm/pyxis with a command, compose with the daemons' entrypoint, and checks
the user the image runs as (tests/test_deploy_files.py: RUNS_AS says why each is root or not).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import uuid
from pathlib import Path

import pytest

from tests.test_deploy_files import RUNS_AS

pytestmark = pytest.mark.stack
ROOT = Path(__file__).resolve().parents[2]
TAG = "local"


def _images() -> dict[str, str]:
    """``{image repository: "folder/Dockerfile name"}``, named as scripts/push-images names them."""
    out = {}
    for path in sorted((ROOT / "containers").glob("*/Dockerfile*")):
        variant = path.name.removeprefix("Dockerfile").removeprefix(".")
        out[f"reelforge-{path.parent.name.replace('_', '-')}" + (f"-{variant}" if variant else "")] = \
            f"{path.parent.name}/{path.name}"
    return out


IMAGES = _images()


def docker(*args: str, timeout: float = 300, check: bool = False) -> subprocess.CompletedProcess:
    result = subprocess.run(["docker", *args], capture_output=True, text=True, timeout=timeout)
    if check:
        assert result.returncode == 0, f"docker {' '.join(args)}: {result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="session")
def built() -> dict[str, str]:
    """Docker answers and every image exists (missing ones are built with scripts/push-images --bases local)."""
    if shutil.which("docker") is None:
        pytest.fail("no docker CLI: `scripts/local-stack up` installs docker.io")
    if docker("info", timeout=30).returncode != 0:
        pytest.fail("dockerd does not answer on /var/run/docker.sock: `scripts/local-stack up` starts it")
    missing = sorted({IMAGES[repo].split("/")[0] for repo in IMAGES
                      if docker("image", "inspect", f"{repo}:{TAG}", timeout=30).returncode != 0})
    if missing:
        build = subprocess.run(["bash", str(ROOT / "scripts/push-images"), "--bases", "local", "--tag", TAG, *missing],
                               capture_output=True, text=True, timeout=3 * 3600)
        assert build.returncode == 0, f"building {missing} failed:\n{build.stdout[-4000:]}\n{build.stderr[-4000:]}"
    return {repo: f"{repo}:{TAG}" for repo in IMAGES}


def run(image: str, *args: str, entrypoint: str | None = None, user: str | None = None,
        volumes: tuple[str, ...] = (), timeout: float = 300) -> subprocess.CompletedProcess:
    """``docker run --rm --network none`` (no registry, no internet: as offline as a SageMaker network-isolated job)."""
    cmd = ["run", "--rm", "--network", "none"]
    if entrypoint is not None:
        cmd += ["--entrypoint", entrypoint]
    if user is not None:
        cmd += ["--user", user]
    for volume in volumes:
        cmd += ["-v", volume]
    return docker(*cmd, image, *args, timeout=timeout)


def test_every_dockerfile_has_an_image(built):
    assert set(built) == set(IMAGES)
    for ref in built.values():
        assert docker("image", "inspect", ref).returncode == 0, ref


@pytest.mark.parametrize("repo", sorted(IMAGES))
def test_image_runs_as_its_platform_requires(built, repo):
    config = json.loads(docker("image", "inspect", built[repo], check=True).stdout)[0]["Config"]
    want = RUNS_AS[IMAGES[repo]]
    assert (config.get("User") or "root") == want
    who = run(built[repo], "id", "-un", entrypoint="")
    assert who.returncode == 0, who.stderr
    assert who.stdout.strip() == want


# ---------------------------------------------------------------- super-resolution (Slurm + SageMaker)
def test_sr_worker_cli_answers_and_has_ffmpeg(built):
    image = built["reelforge-sr"]
    help_ = run(image)  # CMD: reelforge-sr --help
    assert help_.returncode == 0, help_.stderr
    for command in ("plan", "segment", "assemble", "serve"):
        assert command in help_.stdout
    version = run(image, "ffmpeg", "-hide_banner", "-version")
    assert version.returncode == 0 and version.stdout.startswith("ffmpeg version"), version.stderr
    torch = run(image, "python", "-c", "import torch, reelforge_sr; print(torch.__version__)")
    assert torch.returncode == 0 and torch.stdout.strip().startswith("2."), torch.stderr


def test_sr_serve_answers_ping(built, shared_data):
    """SageMaker starts serving containers as ``docker run IMAGE serve`` with the model data in /opt/ml/model
    (read-only here; offline, so the weights must be there); /ping answers 200 on :8080."""
    name = f"reelforge-test-sr-serve-{uuid.uuid4().hex[:8]}"
    models = f"{shared_data / 'models'}:/opt/ml/model:ro"
    started = docker("run", "-d", "--name", name, "--network", "none", "-v", models, built["reelforge-sr"], "serve",
                     check=True)
    assert started.stdout.strip()
    try:
        probe = ("import urllib.request; "
                 "print(urllib.request.urlopen('http://127.0.0.1:8080/ping', timeout=2).status)")
        deadline = time.monotonic() + 60
        while True:
            ping = docker("exec", name, "python", "-c", probe, timeout=30)
            if ping.returncode == 0 or time.monotonic() > deadline:
                break
            time.sleep(1)
        assert ping.stdout.strip() == "200", (ping.stderr, docker("logs", name).stderr)
    finally:
        docker("rm", "-f", name)


# ---------------------------------------------------------------- StyleGAN2 (SageMaker training + processing)
def test_stylegan2_train_with_an_empty_opt_ml_fails_with_a_failure_file(built, tmp_path):
    """``docker run IMAGE train`` as SageMaker does: no hyperparameters or data → non-zero exit and output/failure."""
    opt_ml = tmp_path / "opt_ml"
    opt_ml.mkdir()
    result = run(built["reelforge-stylegan2"], "train", volumes=(f"{opt_ml}:/opt/ml",))
    assert result.returncode != 0
    failure = opt_ml / "output" / "failure"
    assert failure.is_file(), (result.stdout, result.stderr)
    assert failure.read_text().strip()


def test_stylegan2_processing_entrypoints_answer_and_upstream_is_pinned(built):
    image = built["reelforge-stylegan2"]
    for command in ("prep", "generate", "export"):
        result = run(image, command, "--help")
        assert result.returncode == 0, (command, result.stderr)
    upstream = run(image, "-c", "import os, sys; d = os.environ['STYLEGAN2_ADA_DIR']; sys.path.insert(0, d); "
                   "import dnnlib, legacy; print(os.path.isfile(os.environ['STYLEGAN2_TRAIN_SCRIPT']))",
                   entrypoint="python")
    assert upstream.returncode == 0 and upstream.stdout.strip() == "True", upstream.stderr


# ---------------------------------------------------------------- avatars (SageMaker processing + endpoints)
def test_avatar_preprocess_fails_cleanly_without_input_and_handler_loads(built, tmp_path):
    image = built["reelforge-avatar"]
    opt_ml = tmp_path / "opt_ml"
    (opt_ml / "processing").mkdir(parents=True)
    # Processing: ContainerEntrypoint ["reelforge-avatar", "preprocess", ...] with no selfies → a failure message.
    result = run(image, "preprocess", entrypoint="reelforge-avatar", volumes=(f"{opt_ml}:/opt/ml",))
    assert result.returncode != 0
    assert (opt_ml / "output" / "failure").is_file(), (result.stdout, result.stderr)
    # Endpoint: the handler module SAGEMAKER_PROGRAM names imports with its four functions.
    handler = run(image, "python", "-c", "import os, sys; "
                  "sys.path.insert(0, os.environ['SAGEMAKER_SUBMIT_DIRECTORY']); "
                  "import inference; print(sorted(inference.__all__))")
    assert handler.returncode == 0, handler.stderr
    assert handler.stdout.strip() == "['input_fn', 'model_fn', 'output_fn', 'predict_fn']"


def test_avatar_triton_model_repository_entry_loads(built):
    image = built["reelforge-avatar-triton"]
    result = run(image, "python", "-c", "import runpy; "
                 "m = runpy.run_path('/opt/reelforge/triton/avatar_base/1/model.py'); "
                 "print('TritonPythonModel' in m)")
    assert result.returncode == 0 and result.stdout.strip() == "True", result.stderr
    config = run(image, "cat", "/opt/reelforge/triton/avatar_base/config.pbtxt")
    assert 'backend: "python"' in config.stdout


# ---------------------------------------------------------------- AnimateAnyone (HyperPod, pyxis)
def test_animate_anyone_cli_answers_on_the_pinned_upstream(built):
    image = built["reelforge-animate-anyone"]
    result = run(image, "python", "-m", "reelforge_aa", "--help")
    assert result.returncode == 0, result.stderr
    for command in ("launch", "export", "newest-checkpoint"):
        assert command in result.stdout
    upstream = run(image, "sh", "-c",
                   'test -f "$AA_CODE_DIR/train_stage_1.py" && python -c "import diffusers, deepspeed"')
    assert upstream.returncode == 0, upstream.stderr


# ---------------------------------------------------------------- Airflow
def test_airflow_image_answers_version(built):
    result = run(built["reelforge-airflow"], "version", timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "3.3.2"
    # the plugins import, with what their tasks need from the worker package (preflight's truncation rule)
    plugins = run(built["reelforge-airflow"], "python", "-c",
                  "import sys; sys.path.insert(0, '/opt/airflow/plugins'); import reelforge.sr.preflight; print('ok')")
    assert plugins.stdout.strip() == "ok", plugins.stderr


# ---------------------------------------------------------------- Slurm (docker-compose)
def test_slurm_head_daemons_answer_their_version_checks(built):
    image = built["reelforge-slurm"]
    for daemon in (["slurmctld", "-V"], ["munged", "--version"]):
        result = run(image, *daemon)
        assert result.returncode == 0, (daemon, result.stderr)
        assert (result.stdout + result.stderr).strip(), daemon
    sshd = run(image, "/usr/sbin/sshd", "-t", "-f", "/etc/ssh/sshd_config", user="0:0")
    # No host key is in the image (created at first start into a volume): sshd -t says exactly that.
    assert "no hostkeys available" in sshd.stderr.lower() or sshd.returncode == 0, sshd.stderr


def test_slurm_compute_has_slurmd_and_the_sr_worker(built):
    image = built["reelforge-slurm-compute"]
    result = run(image, "slurmd", "-V")
    assert result.returncode == 0 and result.stdout.startswith("slurm"), result.stderr
    worker = run(image)  # CMD: $SR_VENV/bin/reelforge-sr --help, through the entrypoint
    assert worker.returncode == 0 and "segment" in worker.stdout, worker.stderr
    torch = run(image, "sh", "-c", '"$SR_VENV/bin/python" -c "import torch, numpy, boto3, reelforge_sr"')
    assert torch.returncode == 0, torch.stderr


# ---------------------------------------------------------------- the compose stack's Slurm cluster
@pytest.fixture
def compose_slurm(built, tmp_path):
    """docker-compose.yaml's slurm-keys, slurm-head and slurm-n1 on the built images (Debian's docker-compose v1).

    This machine's Docker has no NAT (``--iptables=false``), so a bridge network cannot reach the upstream DNS and
    a name that is not a running service takes 20 s to fail: slurmctld, retrying the names of nodes not yet
    started, misses its healthcheck and the nodes (which wait for a healthy head) never start. So an override file
    cuts the cluster's shape to the one node and lets the node start once the head runs (the test itself waits
    for the node to be idle in the head's sinfo).
    """
    exe = shutil.which("docker-compose")
    if exe is None:
        pytest.fail("no docker-compose: `scripts/local-stack up` installs Debian's package")
    project = f"rfimages{uuid.uuid4().hex[:6]}"
    override = tmp_path / "one-node.yaml"
    override.write_text(
        "services:\n"
        "  slurm-head:\n"
        "    environment:\n      REELFORGE_SLURM_NODES: slurm-n1\n"
        '    healthcheck:\n      test: ["CMD", "true"]\n'
        "  slurm-n1:\n"
        "    environment:\n      REELFORGE_SLURM_NODES: slurm-n1\n")
    # The Airflow services need a JWT secret to interpolate; none of them is started here.
    env = {"PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "AIRFLOW_JWT_SECRET": "unused"}
    base = [exe, "-f", str(ROOT / "docker-compose.yaml"), "-f", str(override), "-p", project]

    def compose(*args: str, timeout: float = 300, check: bool = True) -> subprocess.CompletedProcess:
        result = subprocess.run([*base, *args], capture_output=True, text=True, timeout=timeout, env=env)
        if check:
            assert result.returncode == 0, f"docker-compose {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
        return result

    try:
        compose("up", "-d", "--no-build", "slurm-head", "slurm-n1", timeout=300)
        yield compose
    finally:
        logs = compose("logs", "--no-color", "slurm-head", "slurm-n1", check=False).stdout
        compose("down", "-v", "--remove-orphans", check=False)
        print(logs[-3000:])


def test_compose_slurm_cluster_runs_an_sr_segment_on_the_compute_image(compose_slurm, shared_data, tmp_path):
    compose = compose_slurm
    deadline = time.monotonic() + 300
    while True:
        state = compose("exec", "-T", "slurm-head", "sinfo", "-h", "-N", "-n", "slurm-n1", "-o", "%t", check=False)
        if state.stdout.strip().startswith("idle") or time.monotonic() > deadline:
            break
        time.sleep(2)
    assert state.stdout.strip().startswith("idle"), (state.stdout, state.stderr)
    clip = tmp_path / "clip.mp4"
    subprocess.run(["ffmpeg", "-v", "error", "-f", "lavfi", "-i", "testsrc=size=64x36:rate=10", "-t", "1",
                    "-pix_fmt", "yuv420p", str(clip)], check=True, timeout=60)
    head = compose("ps", "-q", "slurm-head").stdout.strip()
    job = "/shared/reelforge/imgtest"
    docker("exec", head, "install", "-d", "-o", "reelforge", "-g", "reelforge", job, check=True)
    docker("cp", str(clip), f"{head}:{job}/clip.mp4", check=True)
    weights = shared_data / "models" / "realesr-animevideov3.pth"
    docker("cp", str(weights), f"{head}:/shared/models/realesr-animevideov3.pth", check=True)
    docker("exec", head, "chown", "-R", "reelforge:reelforge", job, "/shared/models", check=True)
    sr = "/opt/reelforge/worker-venv/bin/reelforge-sr"
    wrap = (f"{sr} plan --source {job}/clip.mp4 --workdir {job}/work --model realesr-animevideov3 && "
            f"{sr} segment --workdir {job}/work --index 0 --model-dir /shared/models --offline --device cpu")
    submitted = compose("exec", "-T", "-u", "reelforge", "slurm-head", "sbatch", "--wait", "--parsable",
                        "-w", "slurm-n1", "-o", f"{job}/slurm-%j.out", "--wrap", wrap, timeout=600, check=False)
    out = docker("exec", head, "sh", "-c", f"cat {job}/slurm-*.out").stdout
    assert submitted.returncode == 0, (submitted.stdout, submitted.stderr, out)
    listing = docker("exec", head, "ls", f"{job}/work/segments", check=True).stdout.split()
    assert "00000.mkv" in listing, (listing, out)
