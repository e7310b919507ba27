"""
### Slurm smoke test

**Owner:** platform · **Trigger:** manual (or `airflow dags test slurm_smoke`). **Runs on:** the
Slurm cluster behind the `slurm_ssh` connection.

Checks the whole Slurm path end to end in under a minute:

| step | where | what |
|---|---|---|
| `hello_array` | Slurm, 3-task array | render `slurm/examples/hello_array.sbatch`, SFTP it, `sbatch`, defer |
| `verify` | Airflow | every task `COMPLETED`; read one task's output back over SFTP |

**Outputs:** `<reelforge_cluster_work_root>/smoke/<run>/` on shared storage (`out/`, `logs/`,
`.slurm/`). Safe to rerun; a failed array task is retried on its own.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pendulum
from airflow.sdk import DAG, task

from reelforge import dag_defaults
from reelforge.operators.slurm import SlurmJobOperator
from reelforge.settings import SLURM_CONN_ID
from reelforge.sr import settings as sr

INCLUDE_DIR = str(Path(__file__).resolve().parent.parent / "include")
WORKDIR = (
    "{{ var.value.get('reelforge_cluster_work_root', '/fsx/reelforge') }}/smoke/"
    "{{ run_id | replace(':', '') | replace('+', '') }}"
)

with DAG(
    dag_id="slurm_smoke",
    description="Submit a tiny Slurm array over SSH and wait for it (deferred).",
    doc_md=__doc__,
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["reelforge", "slurm", "maintenance"],
    template_searchpath=[INCLUDE_DIR],
    # the cluster serves SR first: a failed smoke test is reported on its topic
    default_args=dag_defaults.default_args(
        owner="platform", retries=2, retry_seconds=10, max_retry_delay=timedelta(minutes=2),
        topic_variable=sr.TOPIC_VARIABLE, event="slurm_smoke_failed", title="ReelForge Slurm smoke test failed",
    ),
):
    hello = SlurmJobOperator(
        task_id="hello_array",
        ssh_conn_id=SLURM_CONN_ID,
        script="slurm/examples/hello_array.sbatch",
        workdir=WORKDIR,
        array="0-2",
        array_throttle=2,
        time_limit=2,
        env={"GREETING": "hello from {{ dag.dag_id }}", "OUT_DIR": WORKDIR + "/out"},
        poll_interval=2,
        execution_timeout=timedelta(minutes=10),
    )

    @task(execution_timeout=timedelta(minutes=2))
    def verify(result: dict) -> dict:
        """Every array task completed and wrote its greeting to shared storage."""
        from reelforge.hooks.slurm import SlurmHook

        states = {i: t["state"] for i, t in result["tasks"].items()}
        if set(states.values()) != {"COMPLETED"}:
            raise ValueError(f"not every task completed: {states}")
        with SlurmHook(SLURM_CONN_ID) as hook:
            greeting = hook.read_text(f"{result['workdir']}/out/hello_0.txt").strip()
        if greeting != "hello from slurm_smoke":
            raise ValueError(f"unexpected output {greeting!r}")
        return {"job_id": result["job_id"], "tasks": len(states), "greeting": greeting}

    verify(hello.output)
