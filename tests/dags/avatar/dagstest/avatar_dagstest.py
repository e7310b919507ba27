"""DAG file for ``airflow dags test`` only: the real avatar DAGs, the personalisation one without its deadline.

``airflow dags test`` cannot evaluate deadline alerts (it exits 1 for a DAG that declares one); the
tests assert that ``dags/`` declares it and run this variant, built by the same ``build_dag``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[4] / "dags"))

from avatar_endpoints import dag as endpoints_dag  # noqa: E402
from avatar_personalization import build_dag  # noqa: E402

personalization_dag = build_dag(with_deadline=False)
__all__ = ["endpoints_dag", "personalization_dag"]
