"""The SR DAG under the CeleryExecutor: PostgreSQL + Redis on 127.0.0.1, two Celery workers, and the
scheduler, dag-processor, triggerer and api-server as separate processes.

Each worker reports its own hostname (``hostname_callable``), so the test can see where tasks ran.
"""

from __future__ import annotations

import os
import secrets
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest
import requests

from airflow_local import LocalAirflow
from reelforge.operators.slurm import slurm_job_name
from reelforge.storage import display_stem
from tests.media_utils import make_clip, probe

pytestmark = [pytest.mark.stack, pytest.mark.slow]
ROOT = Path(__file__).resolve().parents[2]
DB = "reelforge_celery_test"
PORT = 8091


def _psql(sql: str) -> None:
    subprocess.run(["psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", "-c", sql],
                   check=True, capture_output=True)


def _redis_up() -> bool:
    try:
        import redis

        return bool(redis.Redis(host="127.0.0.1", port=6379, socket_timeout=2).ping())
    except Exception:  # noqa: BLE001
        return False


class CeleryStack:
    """The separate Airflow processes of this module; each can be killed and started again."""

    def __init__(self, env: dict[str, str], logs: Path, commands: dict[str, list[str]]) -> None:
        self.env, self.logs, self.commands = env, logs, commands
        self.procs: dict[str, subprocess.Popen] = {}
        self.client = LocalAirflow(logs / "unused.log", base_url=f"http://127.0.0.1:{PORT}")

    def start(self, name: str) -> None:
        env = dict(self.env, REELFORGE_TEST_HOSTNAME=name if name.startswith("worker") else f"{name}-host")
        with (self.logs / f"{name}.log").open("ab") as log:
            self.procs[name] = subprocess.Popen(self.commands[name], env=env, stdout=log, stderr=subprocess.STDOUT,
                                                start_new_session=True, cwd=ROOT)

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)

    def stop_all(self) -> None:
        for proc in self.procs.values():
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for proc in self.procs.values():
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def celery_stack(tmp_path_factory):
    if subprocess.run(["pg_isready", "-h", "127.0.0.1", "-p", "5432"], capture_output=True).returncode != 0:
        pytest.skip("PostgreSQL is not running on 127.0.0.1:5432")
    if not _redis_up():
        pytest.skip("Redis is not running on 127.0.0.1:6379")
    _psql(f"DROP DATABASE IF EXISTS {DB} WITH (FORCE)")
    _psql(f"CREATE DATABASE {DB}")
    home = tmp_path_factory.mktemp("celery-airflow")
    env = dict(os.environ)
    env.pop("REELFORGE_SR_INGEST_QUEUE_URL", None)  # no asset watcher: the other Airflow owns the queue
    env.update({
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"postgresql+psycopg2://postgres@127.0.0.1:5432/{DB}",
        "AIRFLOW__CELERY__BROKER_URL": "redis://127.0.0.1:6379/7",
        "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql://postgres@127.0.0.1:5432/{DB}",
        "AIRFLOW__CELERY__WORKER_CONCURRENCY": "2",
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "tests.celery_hostname.hostname",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{PORT}/execution/",
        "AIRFLOW__API__PORT": str(PORT),
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS": "True",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": "8897",
        # a killed triggerer's triggers move to a live one once its heartbeat is this old
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "15",
        "REELFORGE_RETRY_DELAY_SECONDS": "2",
        # every Slurm wait defers at once, so the restart test always finds one in the triggerer
        "REELFORGE_SLURM_WAIT_BEFORE_DEFER_SECONDS": "0",
        "PYTHONPATH": os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
    })
    subprocess.run(["airflow", "db", "migrate"], env=env, check=True, capture_output=True)
    logs = home / "proc-logs"
    logs.mkdir()
    commands = {
        "api-server": ["airflow", "api-server", "--host", "127.0.0.1", "--port", str(PORT)],
        "scheduler": ["airflow", "scheduler"],
        "dag-processor": ["airflow", "dag-processor"],
        "triggerer": ["airflow", "triggerer"],
        "worker-1": ["airflow", "celery", "worker", "--celery-hostname", "worker-1@%h", "--skip-serve-logs"],
        "worker-2": ["airflow", "celery", "worker", "--celery-hostname", "worker-2@%h", "--skip-serve-logs"],
    }
    stack = CeleryStack(env, logs, commands)
    try:
        for name in commands:
            stack.start(name)
        _wait_healthy(stack.procs, logs)
        yield stack
    finally:
        stack.stop_all()


@pytest.fixture(scope="module")
def celery_airflow(celery_stack) -> LocalAirflow:
    return celery_stack.client


def _wait_healthy(procs: dict[str, subprocess.Popen], logs: Path, timeout: float = 180) -> None:
    """Until the API reports the database, scheduler and triggerer healthy; fail at once if a process dies."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for name, proc in procs.items():
            if proc.poll() is not None:
                tail = (logs / f"{name}.log").read_text(errors="replace")[-2000:]
                pytest.fail(f"{name} exited with {proc.returncode} during start-up; end of its log:\n{tail}")
        try:
            health = requests.get(f"http://127.0.0.1:{PORT}/api/v2/monitor/health", timeout=2).json()
            if all(health.get(c, {}).get("status") == "healthy" for c in ("metadatabase", "scheduler", "triggerer")):
                return
        except (requests.RequestException, ValueError):
            pass
        time.sleep(2)
    pytest.fail(f"Celery Airflow not healthy after {timeout:.0f}s; logs in {logs}")


DAG_ID = "video_super_resolution"


def _upload_and_trigger(client: LocalAirflow, aws, clip: Path, folder: str) -> tuple[str, str]:
    """Upload ``clip`` outside the notified prefix and trigger the SR DAG on it from the form; (run id, key)."""
    client.wait_for_dag(DAG_ID, timeout=180)
    client.unpause(DAG_ID)
    key = f"manual/{folder}/{uuid.uuid4().hex[:8]}.mp4"
    aws.s3.put_object(Bucket="reelforge-ingest", Key=key, Body=clip.read_bytes())
    return client.trigger(DAG_ID, {"source_uri": f"s3://reelforge-ingest/{key}", "segment_seconds": 1}), key


def test_sr_dag_runs_on_two_celery_workers(celery_airflow, aws, shared_data, tmp_path):
    dag_id = DAG_ID
    clip = make_clip(shared_data / "video" / "moviepy_doc_example2_bbb.mp4", tmp_path / "c.mp4",
                     width=64, height=36, seconds=2.0, tone=880)
    run_id, _ = _upload_and_trigger(celery_airflow, aws, clip, "celery")
    state = celery_airflow.wait_for_run(dag_id, run_id, timeout=600)
    assert state == "success", celery_airflow.task_states(dag_id, run_id)
    tis = celery_airflow.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
    hosts = {ti["hostname"] for ti in tis if ti["state"] == "success"}
    assert {"worker-1", "worker-2"} <= hosts, hosts


def _slurm_jobs(name: str, states: str = "all") -> list[str]:
    out = subprocess.run(["squeue", "-h", "-t", states, "-n", name, "-o", "%i"], capture_output=True, text=True,
                         check=True)
    return out.stdout.split()


def test_scheduler_and_triggerer_killed_during_a_deferred_slurm_wait(celery_stack, aws, shared_data, tmp_path):
    """Issue 10: both crash (SIGKILL) while upscale_segments waits on Slurm; the job finishes meanwhile.

    Started again, the triggerer takes over the orphaned trigger, which re-attaches to the same Slurm
    job: the run succeeds with one submission and no retry, and the video is complete.
    """
    client, dag_id = celery_stack.client, DAG_ID
    clip = make_clip(shared_data / "video" / "moviepy_doc_example2_bbb.mp4", tmp_path / "r.mp4",
                     width=64, height=36, seconds=3.0, tone=660)
    run_id, key = _upload_and_trigger(client, aws, clip, "restart")
    deadline = time.monotonic() + 300
    while client.task_states(dag_id, run_id).get("upscale_segments") != "deferred":
        assert time.monotonic() < deadline, client.task_states(dag_id, run_id)
        assert client.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"] in ("queued", "running")
        time.sleep(1)
    job_name = slurm_job_name(dag_id, run_id, "upscale_segments")
    (job_id,) = set(j.split("_")[0] for j in _slurm_jobs(job_name))
    celery_stack.kill("scheduler")
    celery_stack.kill("triggerer")
    # the cluster goes on without Airflow: the whole array ends while nothing watches it
    deadline = time.monotonic() + 300
    while _slurm_jobs(job_name, "PENDING,RUNNING,CONFIGURING,COMPLETING"):
        assert time.monotonic() < deadline, "the Slurm array did not finish"
        time.sleep(2)
    assert client.task_states(dag_id, run_id)["upscale_segments"] == "deferred"
    celery_stack.start("scheduler")
    celery_stack.start("triggerer")

    state = client.wait_for_run(dag_id, run_id, timeout=600)
    assert state == "success", client.task_states(dag_id, run_id)
    tis = client.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
    upscale = next(ti for ti in tis if ti["task_id"] == "upscale_segments")
    assert upscale["try_number"] == 1, "the wait was retried instead of resumed"
    assert {j.split("_")[0] for j in _slurm_jobs(job_name)} == {job_id}, "the array was submitted again"
    stem = key.rsplit("/", 1)[1].removesuffix(".mp4")
    listed = aws.s3.list_objects_v2(Bucket="reelforge-output", Prefix=f"sr/{display_stem(key)}/")["Contents"]
    (video,) = [o["Key"] for o in listed if o["Key"].endswith(".mp4") and stem in o["Key"]]
    out = tmp_path / "out.mp4"
    aws.s3.download_file("reelforge-output", video, str(out))
    frames = [s["nb_read_frames"] for s in probe(out)["streams"] if s["codec_type"] == "video"]
    assert frames == [s["nb_read_frames"] for s in probe(clip)["streams"] if s["codec_type"] == "video"]
