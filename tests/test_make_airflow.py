"""`make airflow` (`scripts/local-stack airflow`) starts with only the demo's DAG unpaused.

Run against a throwaway Airflow home (a copy of the stack's env.sh pointing elsewhere) where every DAG was
registered unpaused first, as the end-to-end tests leave them; `airflow standalone` is replaced by a stub
on PATH, so nothing binds :8080.
"""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.stack

ROOT = Path(__file__).resolve().parent.parent
STATE = Path(os.environ.get("REELFORGE_STATE_DIR", ROOT / ".local-stack"))


def _paused(env_file: Path) -> dict[str, bool]:
    out = subprocess.run(["bash", "-c", f'source "{env_file}"; airflow dags list -o plain'], capture_output=True,
                         text=True, check=True, timeout=300).stdout
    rows = [ln.split() for ln in out.splitlines() if re.match(r"^[a-z0-9_]+\s+/", ln)]
    return {row[0]: row[-2] == "True" for row in rows if row[-2] in ("True", "False")}


def test_only_the_demo_dag_is_unpaused(tmp_path):
    state = tmp_path / "state"
    (state / "logs").mkdir(parents=True)
    shim = tmp_path / "bin"
    shim.mkdir()
    (shim / "airflow").write_text('#!/bin/bash\n[[ "$1" == standalone ]] && { echo "standalone stub"; exit 0; }\n'
                                  f'exec "{ROOT}/.venv/bin/airflow" "$@"\n')
    (shim / "airflow").chmod(0o755)
    env_text = (STATE / "env.sh").read_text()
    env_text = re.sub(r"(?m)^export AIRFLOW_HOME=.*$", f"export AIRFLOW_HOME={state / 'airflow'}", env_text)
    env_text = re.sub(r"(?m)^export AIRFLOW__LOGGING__BASE_LOG_FOLDER=.*$",
                      f"export AIRFLOW__LOGGING__BASE_LOG_FOLDER={state / 'airflow' / 'logs'}", env_text)
    env_file = state / "env.sh"
    env_file.write_text(env_text + f'\nexport PATH="{shim}:$PATH"\n')
    env = {**os.environ, "REELFORGE_ROOT": str(ROOT)}
    subprocess.run(["bash", "-c", f'source "{env_file}"; airflow db migrate && '
                    'AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False airflow dags reserialize'],
                   env=env, capture_output=True, check=True, timeout=600)
    before = _paused(env_file)
    assert before and not any(before.values()), before  # as the tests leave them: all unpaused

    done = subprocess.run(["bash", str(ROOT / "scripts" / "local-stack"), "airflow"], capture_output=True, text=True,
                          timeout=600, env={**env, "REELFORGE_STATE_DIR": str(state)})
    assert done.returncode == 0, done.stderr[-2000:]
    assert "standalone stub" in done.stdout
    after = _paused(env_file)
    assert set(after) == set(before)
    assert {dag for dag, paused in after.items() if not paused} == {"video_super_resolution"}, after
