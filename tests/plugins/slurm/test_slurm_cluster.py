"""SlurmHook / SlurmJobOperator / SlurmJobTrigger against the real local Slurm over real SSH.

Every test that takes the ``cluster`` fixture runs twice: with Slurm accounting on (sacct) and off
(squeue + scontrol). The TIMEOUT job is submitted when a mode starts and checked last.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time

import paramiko
import pytest
from airflow.sdk.exceptions import TaskDeferred

from reelforge.hooks.slurm import SlurmHook
from reelforge.hooks.slurm_text import HostKeyPolicyError
from reelforge.operators.slurm import SlurmJobFailedError, SlurmJobOperator
from reelforge.triggers.slurm import SlurmJobTrigger
from tests.plugins.slurm.slurm_helpers import CONN_ID, ROOT, drive, fake_ti, resume, run_trigger, script

pytestmark = pytest.mark.stack


def _op(task_id: str, wd: str, **kwargs) -> SlurmJobOperator:
    kwargs.setdefault("script", script("array_exit.sbatch"))
    kwargs.setdefault("env", {"WORKDIR": wd})
    # first_poll_delay=0: these tests run the trigger in-process, where Airflow's resume race cannot happen.
    return SlurmJobOperator(task_id=task_id, ssh_conn_id=CONN_ID, workdir=wd, time_limit=5, poll_interval=1,
                            first_poll_delay=0, **kwargs)


def _wait_running(hook: SlurmHook, job_id: str, array: str | None, timeout: float = 180) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        states = hook.job_states(job_id, array)
        if states and all(s.state == "RUNNING" for s in states.values()):
            return
        time.sleep(0.5)
    raise AssertionError(f"job {job_id} did not start: {states}")


def test_array_all_tasks_complete(cluster):
    wd = cluster.workdir("complete")
    op = _op("complete", wd, array="0-3", array_throttle=2)
    result = drive(op, fake_ti("complete", cluster.run_id("complete")))

    assert json.loads(json.dumps(result)) == result
    assert result["array"] == "0-3" and result["workdir"] == wd and len(result["job_ids"]) == 1
    assert sorted(result["tasks"], key=int) == ["0", "1", "2", "3"]
    assert {(t["state"], t["exit_code"]) for t in result["tasks"].values()} == {("COMPLETED", 0)}
    job_id, name = result["job_id"], result["job_name"]
    assert cluster.hook.exists(f"{wd}/out/3")
    assert "task 0" in cluster.hook.read_text(f"{wd}/runs/0")
    assert cluster.hook.exists(f"{wd}/logs/{name}_{job_id}_0.out")
    assert cluster.hook.exists(f"{wd}/.slurm/{name}.sbatch")
    detail = cluster.hook.run_command(["scontrol", "-o", "show", "job", job_id]).stdout
    assert "ArrayTaskThrottle=2" in detail


def test_a_short_job_ends_the_task_without_deferring_and_a_long_one_defers(cluster):
    wd = cluster.workdir("short")
    op = _op("short", wd, array="0-1", wait_before_defer=60)
    result = op.execute({"ti": fake_ti("short", cluster.run_id("short"))})  # no TaskDeferred raised
    assert {t["state"] for t in result["tasks"].values()} == {"COMPLETED"}

    wd2 = cluster.workdir("long")
    env = {"WORKDIR": wd2, "MAX_SECONDS": "120"}
    op2 = _op("long", wd2, script=script("wait_release.sbatch"), env=env, wait_before_defer=3)
    started = time.monotonic()
    with pytest.raises(TaskDeferred) as deferred:
        op2.execute({"ti": fake_ti("long", cluster.run_id("long"))})
    assert time.monotonic() - started >= 2, "deferred before its in-task window"
    cluster.hook.run_command(["scancel", deferred.value.trigger.job_id])


def test_failed_index_is_reported_and_a_retry_reruns_only_it(cluster, capfd):
    wd = cluster.workdir("failing")
    run_id = cluster.run_id("failing")
    env = {"WORKDIR": wd, "FAIL_INDEX": "2"}

    with pytest.raises(SlurmJobFailedError) as err:
        drive(_op("failing", wd, array="0-3", env=env), fake_ti("failing", run_id, try_number=1))
    message = str(err.value)
    assert "1 of 4 tasks failed" in message and "index 2: FAILED exit=3" in message
    logged = capfd.readouterr()
    assert "simulated failure (exit 3)" in logged.out + logged.err  # the task's log tail

    cluster.hook.put_text(f"{wd}/fixed", "")
    retry = _op("failing", wd, array="0-3", env=env, deferrable=False)
    result = drive(retry, fake_ti("failing", run_id, try_number=2))

    first, second = result["job_ids"]
    assert {t["state"] for t in result["tasks"].values()} == {"COMPLETED"}
    assert result["tasks"]["2"]["job_id"] == second and result["tasks"]["0"]["job_id"] == first
    state = cluster.hook.read_json(f"{wd}/.slurm/{result['job_name']}.json")
    assert [a["array"] for a in state["attempts"]] == ["0-3", "2"]
    runs = {i: cluster.hook.read_text(f"{wd}/runs/{i}").count("\n") for i in range(4)}
    assert runs == {0: 1, 1: 1, 2: 2, 3: 1}

    # A third try finds everything completed and submits nothing.
    again = drive(_op("failing", wd, array="0-3", env=env), fake_ti("failing", run_id, try_number=3))
    assert again["job_ids"] == [first, second]


def test_on_kill_cancels_the_job(cluster):
    wd = cluster.workdir("kill")
    env = {"WORKDIR": wd, "MAX_SECONDS": "120"}
    op = _op("kill", wd, script=script("wait_release.sbatch"), env=env, array="0-1", deferrable=False)
    outcome: dict = {}

    def worker():
        try:
            outcome["result"] = op.execute({"ti": fake_ti("kill", cluster.run_id("kill"))})
        except BaseException as exc:  # noqa: BLE001 - handed to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=worker, daemon=True)
    thread.start()
    end = time.monotonic() + 60
    while op._job_id is None and time.monotonic() < end:
        time.sleep(0.2)
    _wait_running(cluster.hook, op._job_id, "0-1")
    op.on_kill()
    thread.join(120)
    assert not thread.is_alive()
    assert isinstance(outcome.get("error"), SlurmJobFailedError), outcome
    assert "2 of 2 tasks failed" in str(outcome["error"]) and "CANCELLED" in str(outcome["error"])

    # The deferred path: the trigger's on_kill (user marks the deferred task failed) cancels too.
    wd2 = cluster.workdir("kill-deferred")
    op2 = _op("kill2", wd2, script=script("wait_release.sbatch"), env={"WORKDIR": wd2, "MAX_SECONDS": "120"})
    with pytest.raises(TaskDeferred) as deferred:
        op2.execute({"ti": fake_ti("kill2", cluster.run_id("kill2"))})
    trigger = deferred.value.trigger
    _wait_running(cluster.hook, trigger.job_id, None)
    import asyncio

    asyncio.run(trigger.on_kill())
    event = run_trigger(trigger, timeout=120)
    assert event.payload["status"] == "done"
    assert event.payload["tasks"]["0"]["state"] == "CANCELLED"


def test_retried_task_reattaches_to_its_running_job(cluster):
    wd = cluster.workdir("reattach")
    run_id = cluster.run_id("reattach")
    env = {"WORKDIR": wd, "MAX_SECONDS": "120"}

    def attempt(try_number: int):
        op = _op("reattach", wd, script=script("wait_release.sbatch"), env=env, array="0-2")
        context = {"ti": fake_ti("reattach", run_id, try_number)}
        with pytest.raises(TaskDeferred) as deferred:
            op.execute(context)
        return op, context, deferred.value

    _, _, first = attempt(1)
    job_id = first.trigger.job_id
    name = first.trigger.job_name
    _, _, second = attempt(2)  # the worker died; Airflow retries while the job still runs
    assert (second.trigger.job_id, second.trigger.array) == (job_id, "0-2")
    assert list(cluster.hook.find_jobs(name)) == [job_id]

    # Even without the state file (lost between sbatch and the write) the job is found by name.
    cluster.hook.remove(f"{wd}/.slurm/{name}.json")
    op3, context3, third = attempt(3)
    assert (third.trigger.job_id, third.trigger.array) == (job_id, "0-2")

    cluster.hook.put_text(f"{wd}/release", "")
    result = resume(op3, context3, third)
    assert result["job_ids"] == [job_id]
    assert {t["state"] for t in result["tasks"].values()} == {"COMPLETED"}
    assert list(cluster.hook.find_jobs(name)) == [job_id]


def test_hostile_names_paths_and_values_are_not_executed(cluster):
    base = cluster.workdir("hostile")
    marker = f"{base}/PWNED"
    payload = (
        f"sp ace 'single' \"double\" ; touch {marker} ; $(touch {marker}) `touch {marker}`"
        f"\ntouch {marker}\n %j %x %% \\ ${{HOME}} ! * end"
    )
    # A directory name cannot hold "/": the path's commands touch relative names instead.
    wd = f"{base}/d 'q' \"dq\" ; touch PWNED ; $(touch PWNED) `touch PWNED`\nline2 %j %%"
    op = SlurmJobOperator(
        task_id="hostile",
        ssh_conn_id=CONN_ID,
        script=script("echo_env.sbatch"),
        workdir=wd,
        job_name=payload,
        env={"OUT_DIR": wd, "NASTY": payload},
        script_args=[payload],
        time_limit=2,
        poll_interval=1,
    )
    result = drive(op, fake_ti("hostile", cluster.run_id("hostile")))
    hook = cluster.hook

    assert result["tasks"]["0"]["state"] == "COMPLETED"
    assert hook.read_text(f"{wd}/env_value") == payload
    assert hook.read_text(f"{wd}/arg_value") == payload
    assert hook.read_text(f"{wd}/pwd_value") == wd + "\n"
    name = result["job_name"]
    assert all(c.isalnum() or c in "_.-" for c in name)
    log = f"{wd}/logs/{name}_{result['job_id']}.out"
    assert hook.exists(log)
    assert hook.tail(log, 5) == ""

    # The hook's own env path (`env K=V sbatch ...`) carries the same value intact.
    wd2 = f"{base}/hook-env"
    hook.put_text(f"{wd2}/s.sbatch", script("echo_env.sbatch"))
    job_id = hook.submit(
        f"{wd2}/s.sbatch",
        job_name="pytest-hook-env",
        chdir=wd2,
        output=f"{wd2}/%j.out",
        env={"NASTY": payload, "OUT_DIR": wd2},
        script_args=[payload],
    )
    end = time.monotonic() + 180
    while not (states := hook.job_states(job_id)).get(0, None) or not states[0].terminal:
        assert time.monotonic() < end
        time.sleep(0.5)
    assert states[0].state == "COMPLETED"
    assert hook.read_text(f"{wd2}/env_value") == payload

    for path in (marker, f"{wd}/PWNED", f"{base}/PWNED", "PWNED", f"{wd2}/PWNED"):
        assert not hook.exists(path), f"{path} exists: something was executed"
    assert hook.exists(f"{wd}/env_value")  # the check above can see files


def test_vanished_job_is_a_clear_error(cluster):
    trigger = SlurmJobTrigger(ssh_conn_id=CONN_ID, job_id="987654321", array="0-3", poll_interval=1)
    event = run_trigger(trigger, timeout=30)
    assert event.payload["status"] == "error"
    assert "MinJobAge" in event.payload["message"]
    op = _op("vanished", cluster.workdir("vanished"))
    with pytest.raises(Exception, match="MinJobAge"):
        op.execute_complete({"ti": fake_ti("vanished", cluster.run_id("vanished"))}, event=event.payload)


def test_smoke_dag_defers_and_completes(cluster, tmp_path):
    # an Airflow home of its own: the e2e Airflow of the same session (its triggerer) must not pick up the
    # trigger that `dags test` runs in line
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")} | {"AIRFLOW_HOME": str(tmp_path)}
    airflow = str(ROOT / ".venv" / "bin" / "airflow")
    migrated = subprocess.run([airflow, "db", "migrate"], cwd=tmp_path, env=env, capture_output=True, text=True,
                              timeout=300)
    assert migrated.returncode == 0, migrated.stderr[-2000:]
    proc = subprocess.run(
        [airflow, "dags", "test", "slurm_smoke"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    assert "running trigger in line" in out  # the task deferred on SlurmJobTrigger
    assert "3 of 3 tasks done" in out
    assert "state=success" in out


def test_time_limit_gives_timeout(cluster):
    """Runs last in each mode: the job was submitted when the mode started (~80 s to TIMEOUT)."""
    op, context, deferred = cluster.started["timeout"]
    with pytest.raises(SlurmJobFailedError) as err:
        resume(op, context, deferred, timeout=420)
    assert "index 0: TIMEOUT" in str(err.value)
    state = op.hook.read_json(f"{cluster.workdir('timeout')}/.slurm/{deferred.trigger.job_name}.json")
    assert state["tasks"]["0"]["state"] == "TIMEOUT"


def _conn(monkeypatch, conn_id: str, **extra) -> str:
    base = json.loads(os.environ["AIRFLOW_CONN_SLURM_SSH"])
    base["extra"] = {k: v for k, v in {**base["extra"], **extra}.items() if v is not None}
    monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", json.dumps(base))
    return conn_id


def test_host_keys_are_verified(monkeypatch, tmp_path):
    other_key = " ".join(open(os.environ["REELFORGE_SSH_KEY"] + ".pub").read().split()[:2])  # noqa: SIM115

    # A changed host key (the connection pins a different one) is refused.
    with pytest.raises(paramiko.BadHostKeyException):
        SlurmHook(_conn(monkeypatch, "slurm_badkey", host_key=other_key)).run_command(["true"])

    # known_hosts files: the right one works, a wrong key or a missing host is refused.
    good = _conn(monkeypatch, "slurm_kh", host_key=None, known_hosts=os.environ["REELFORGE_KNOWN_HOSTS"])
    assert SlurmHook(good).run_command(["echo", "ok"]).stdout == "ok\n"
    wrong = tmp_path / "wrong_known_hosts"
    wrong.write_text(f"[127.0.0.1]:2222 {other_key}\n")
    with pytest.raises(paramiko.BadHostKeyException):
        SlurmHook(_conn(monkeypatch, "slurm_kh_wrong", host_key=None, known_hosts=str(wrong))).run_command(["true"])
    empty = tmp_path / "empty_known_hosts"
    empty.write_text("")
    with pytest.raises(HostKeyPolicyError):
        SlurmHook(_conn(monkeypatch, "slurm_kh_empty", host_key=None, known_hosts=str(empty))).run_command(["true"])

    # Turning verification off is refused outright.
    with pytest.raises(HostKeyPolicyError):
        SlurmHook(_conn(monkeypatch, "slurm_nocheck", host_key=None, no_host_key_check=True)).run_command(["true"])


@pytest.mark.skipif(not shutil.which("socat"), reason="socat not installed")
def test_proxy_command_keeps_host_key_checks(monkeypatch):
    """An SSM-style ProxyCommand (here socat) carries the connection; the host key is still verified."""
    proxied = _conn(monkeypatch, "slurm_proxy", proxy_command="socat - TCP:%h:%p")
    hook = SlurmHook(proxied)
    assert hook.run_command(["echo", "via proxy"]).stdout == "via proxy\n"
    assert hook.ssh_hook.host_proxy_cmd == "socat - TCP:127.0.0.1:2222"
    hook.close()
    other_key = " ".join(open(os.environ["REELFORGE_SSH_KEY"] + ".pub").read().split()[:2])  # noqa: SIM115
    bad = _conn(monkeypatch, "slurm_proxy_bad", proxy_command="socat - TCP:%h:%p", host_key=other_key)
    with pytest.raises(paramiko.BadHostKeyException):
        SlurmHook(bad).run_command(["true"])
