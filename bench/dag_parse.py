"""Parse time of each DAG file (median of several parses), warm and cold.

* warm: in a process that already imported what other DAG files import (a long-running processor);
* cold: the first parse in a fresh interpreter that has imported only ``airflow`` itself, so the
  file pays for its own provider and plugin imports (the worst case).

Prints one line per file and whether the slowest cold parse is under the 0.5 s budget. Run: `make bench` or
`source .local-stack/env.sh && .venv/bin/python bench/dag_parse.py`.
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUDGET_S = 0.5
REPEATS = 5
COLD = """
import sys, time
sys.path[:0] = {paths!r}
from airflow.dag_processing.dagbag import DagBag
start = time.perf_counter()
bag = DagBag(dag_folder={file!r})
print(time.perf_counter() - start, len(bag.import_errors))
"""


def cold_parse(path: Path) -> float:
    code = COLD.format(paths=[str(ROOT / "plugins"), str(ROOT / "dags")], file=str(path))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    seconds, errors = out.split()[-2:]
    if int(errors):
        raise SystemExit(f"{path.name}: import errors")
    return float(seconds)


def main() -> int:
    sys.path[:0] = [str(ROOT / "plugins"), str(ROOT / "dags")]
    from airflow.dag_processing.dagbag import DagBag

    DagBag(dag_folder=str(ROOT / "dags"))  # warm imports shared by all files (airflow, providers)
    worst = 0.0
    print(f"{'DAG file':40} {'warm median s':>13} {'cold median s':>13}  DAGs")
    for path in sorted((ROOT / "dags").glob("*.py")):
        times, n = [], 0
        for _ in range(REPEATS):
            start = time.perf_counter()
            bag = DagBag(dag_folder=str(path))
            times.append(time.perf_counter() - start)
            n = len(bag.dags)
            if bag.import_errors:
                print(f"{path.name}: import errors {bag.import_errors}")
                return 1
        cold = statistics.median(cold_parse(path) for _ in range(3))
        worst = max(worst, cold)
        print(f"{path.name:40} {statistics.median(times):13.3f} {cold:13.3f}  {n}")
    print(f"slowest cold median {worst:.3f} s; budget {BUDGET_S} s: {'OK' if worst < BUDGET_S else 'OVER'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
