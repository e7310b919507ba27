"""Connection arguments for Airflow's metadata database (``[database] sql_alchemy_connect_args``).

The local stack runs every Airflow component, plus CLI calls such as ``airflow backfill create``, on
one SQLite file. SQLite lets one writer in at a time and makes the others wait for its busy timeout,
5 s by default, before they fail with "database is locked"; a busy scheduler holds the lock longer
than that on a small machine. A longer wait serialises them instead. Any other database gets no
extra arguments, so the same setting is harmless where ``sql_alchemy_conn`` points at PostgreSQL.
"""

from __future__ import annotations

from airflow.configuration import conf

SQLITE_BUSY_TIMEOUT_S = 60.0


def _connect_args() -> dict[str, float]:
    url = conf.get("database", "sql_alchemy_conn", fallback="")
    return {"timeout": SQLITE_BUSY_TIMEOUT_S} if url.startswith("sqlite") else {}


#: ``AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS=reelforge.airflow_db.CONNECT_ARGS`` (and ``..._ASYNC``).
CONNECT_ARGS = _connect_args()
