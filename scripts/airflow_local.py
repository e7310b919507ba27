"""Run the local Airflow (``airflow standalone``: api-server, scheduler, dag-processor, triggerer)
and drive it through its REST API. Used by ``make demo`` and the end-to-end tests.

The local instance binds 127.0.0.1 and lets every request in as admin
(``SIMPLE_AUTH_MANAGER_ALL_ADMINS``): never expose it beyond loopback.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import requests

TERMINAL_RUN_STATES = {"success", "failed"}


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


class AirflowError(RuntimeError):
    """The local Airflow did not do what was asked in time."""


class LocalAirflow:
    def __init__(self, log_path: Path, base_url: str = "http://127.0.0.1:8080") -> None:
        self.log_path = log_path
        self.base_url = base_url.rstrip("/")
        self.proc: subprocess.Popen | None = None

    # ------------------------------------------------------------------ lifecycle
    def start(self, timeout: float = 120) -> None:
        if self._healthy():
            raise AirflowError(f"an Airflow is already answering on {self.base_url}; stop it first")
        env = dict(os.environ, AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS="True")
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            ["airflow", "standalone"], stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AirflowError(f"airflow standalone exited with {self.proc.returncode}; see {self.log_path}")
            if self._healthy():
                return
            time.sleep(1)
        self.stop()
        raise AirflowError(f"Airflow not healthy after {timeout:.0f}s; see {self.log_path}")

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
        # Components that outlive the parent (a triggerer still draining) go too.
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and _group_alive(self.proc.pid):
            time.sleep(0.5)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc = None

    def __enter__(self) -> LocalAirflow:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _healthy(self) -> bool:
        try:
            health = requests.get(f"{self.base_url}/api/v2/monitor/health", timeout=2).json()
        except (requests.RequestException, ValueError):
            return False
        return all(health.get(c, {}).get("status") == "healthy" for c in ("metadatabase", "scheduler", "triggerer"))

    # ------------------------------------------------------------------ REST
    #: GET and PATCH (pause, set a run's state) mean the same thing twice, so a timed-out one is asked again.
    IDEMPOTENT = frozenset({"GET", "PATCH"})

    def api(self, method: str, path: str, **kwargs: Any) -> Any:
        """One REST call. On SQLite the API server waits for the scheduler's write lock (up to 60 s, see
        ``reelforge.airflow_db``), so a busy moment can outlast one read timeout: idempotent calls retry."""
        attempts = 3 if method.upper() in self.IDEMPOTENT else 1
        for attempt in range(1, attempts + 1):
            try:
                response = requests.request(method, f"{self.base_url}/api/v2{path}", timeout=60, **kwargs)
                break
            except (requests.ConnectionError, requests.Timeout):
                if attempt == attempts:
                    raise
                time.sleep(2 * attempt)
        if response.status_code >= 400:
            raise AirflowError(f"{method} {path}: {response.status_code} {response.text[:500]}")
        return response.json() if response.content else None

    def wait_for_dag(self, dag_id: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                self.api("GET", f"/dags/{dag_id}")
                return
            except AirflowError:
                errors = self.api("GET", "/importErrors").get("import_errors", [])
                if any(dag_id in (e.get("filename") or "") or dag_id in (e.get("stack_trace") or "") for e in errors):
                    raise AirflowError(f"{dag_id} has import errors: {errors}") from None
                time.sleep(2)
        raise AirflowError(f"{dag_id} not parsed after {timeout:.0f}s")

    def unpause(self, dag_id: str) -> None:
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": False})

    def pause(self, dag_id: str) -> None:
        self.api("PATCH", f"/dags/{dag_id}", json={"is_paused": True})

    def trigger(self, dag_id: str, conf: dict[str, Any], run_id: str | None = None) -> str:
        body: dict[str, Any] = {"logical_date": None, "conf": conf}
        if run_id:
            body["dag_run_id"] = run_id
        return self.api("POST", f"/dags/{dag_id}/dagRuns", json=body)["dag_run_id"]

    def runs(self, dag_id: str) -> list[dict[str, Any]]:
        """The newest 100 runs, newest first (the local database keeps every run it ever had)."""
        return self.api("GET", f"/dags/{dag_id}/dagRuns", params={"order_by": "-run_after", "limit": 100})[
            "dag_runs"
        ]

    def wait_for_new_run(self, dag_id: str, known: set[str], timeout: float = 120) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for run in self.runs(dag_id):
                if run["dag_run_id"] not in known:
                    return run["dag_run_id"]
            time.sleep(1)
        raise AirflowError(f"no new run of {dag_id} within {timeout:.0f}s")

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 900) -> str:
        deadline = time.monotonic() + timeout
        state = "?"
        while time.monotonic() < deadline:
            state = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}")["state"]
            if state in TERMINAL_RUN_STATES:
                return state
            time.sleep(2)
        raise AirflowError(f"run {run_id} of {dag_id} still {state} after {timeout:.0f}s")

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        tis = self.api("GET", f"/dags/{dag_id}/dagRuns/{run_id}/taskInstances", params={"limit": 1000})
        return {ti["task_id"] + (f"[{ti['map_index']}]" if ti["map_index"] >= 0 else ""): ti["state"]
                for ti in tis["task_instances"]}

    def clear_failed(self, dag_id: str, run_id: str) -> None:
        self.api(
            "POST",
            f"/dags/{dag_id}/clearTaskInstances",
            json={"dag_run_id": run_id, "only_failed": True, "dry_run": False, "reset_dag_runs": True},
        )
