"""The full ingest load: 30 uploads within a minute, each processed exactly once (reconciler on).

Runs ``tests/reliability/test_load.py`` (CI runs its bounded 8-upload burst) with the full burst,
so the exactly-once assertions are the same, then prints the figures it wrote: videos/min,
upload→delivery p50/p95/max, runs started by the reconciler, the longest queues (runs queued and
running, Slurm jobs pending), API health latency and scheduler heartbeat age.

Needs the local stack (`make stack`) and no other Airflow on :8080.

    source .local-stack/env.sh && .venv/bin/python bench/load.py [--uploads 30] [--window 60] [--repeat 1]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--uploads", type=int, default=30)
    parser.add_argument("--window", type=float, default=60.0, help="seconds over which the uploads are spread")
    parser.add_argument("--repeat", type=int, default=1, help="runs in a row (one Airflow start each)")
    args = parser.parse_args()
    state = Path(os.environ.get("REELFORGE_STATE_DIR", ROOT / ".local-stack"))
    figures = state / "logs" / "load-test.json"
    env = dict(os.environ, REELFORGE_LOAD_UPLOADS=str(args.uploads), REELFORGE_LOAD_WINDOW_S=str(args.window))
    results = []
    for i in range(args.repeat):
        figures.unlink(missing_ok=True)
        rc = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                             "tests/reliability/test_load.py"], cwd=ROOT, env=env).returncode
        got = json.loads(figures.read_text()) if rc == 0 and figures.exists() else None
        results.append(got)
        print(f"run {i + 1}/{args.repeat}: " + (json.dumps(got) if got else f"FAILED (pytest exit {rc})"))
    ok = [r for r in results if r]
    print(f"\n{len(ok)} of {len(results)} runs delivered all {args.uploads} uploads exactly once")
    cols = ("wall_s", "throughput_videos_per_min", "upload_to_delivery_p50_s", "upload_to_delivery_p95_s",
            "runs_started_by_the_reconciler", "runs_that_skipped_as_duplicates", "max_runs_queued",
            "max_slurm_pending", "max_health_latency_s",
            "max_scheduler_heartbeat_age_s")
    print(" | ".join(cols))
    for r in ok:
        print(" | ".join(str(r.get(c)) for c in cols))
    return 0 if len(ok) == len(results) else 1


if __name__ == "__main__":
    sys.exit(main())
