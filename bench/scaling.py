"""Scaling of the SR upscale array across Slurm nodes on the local stack.

The same clip (default 160x90, 12 s at 24 fps, 1 s segments → 12 array tasks, ≥ 4 per node at 3
nodes) is planned once; then the upscale array runs with the cluster limited to 1, 2 and 3 nodes
(the others drained; CPUs per node fixed, one task per node at a time with --cpus-per-task=2).
Prints wall time per node count and parallel efficiency E(n) = T(1) / (n · T(n)).

Read the figures against the host: the local "nodes" are slurmd processes on ONE machine, so they
share its cores. On a 2-core host, 3 nodes × 2 CPUs oversubscribe it and efficiency falls with n
for that reason alone; on real nodes each brings its own cores (or GPU).

    source .local-stack/env.sh && .venv/bin/python bench/scaling.py [--seconds 12]
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "plugins")]

NODES = ["n1", "n2", "n3"]


def limit_nodes(n: int) -> None:
    """Drain all but the first ``n`` nodes (resuming an idle node is refused by Slurm: ignore that)."""
    for i, node in enumerate(NODES):
        if i < n:
            subprocess.run(["scontrol", "update", f"nodename={node}", "state=resume"], capture_output=True)
        else:
            subprocess.run(["scontrol", "update", f"nodename={node}", "state=drain", "reason=bench-scaling"],
                           check=True, capture_output=True)


def resume_all() -> None:
    limit_nodes(len(NODES))


def make_clip(seconds: float, path: Path) -> Path:
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"testsrc2=size=160x90:rate=24:duration={seconds}",
         "-c:v", "libx264", "-g", "24", "-pix_fmt", "yuv420p", str(path)],
        check=True,
    )
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=12.0)
    parser.add_argument("--cpus-per-task", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch threads per task (0: = cpus per task)")
    args = parser.parse_args()

    from reelforge.hooks.slurm import SlurmHook

    root = os.environ.get("AIRFLOW_VAR_REELFORGE_CLUSTER_WORK_ROOT", "/srv/reelforge")
    venv = os.environ.get("AIRFLOW_VAR_REELFORGE_SR_WORKER_VENV", "/opt/reelforge/worker-venv")
    models = os.environ["REELFORGE_MODEL_DIR"]
    workdir = f"{root}/bench/scaling-{uuid.uuid4().hex[:8]}"
    script = (ROOT / "include/slurm/sr/02-upscale.sbatch").read_text()
    results: dict[int, float] = {}
    with SlurmHook() as hook, tempfile.TemporaryDirectory() as tmp:
        hook.mkdir_p(f"{workdir}/logs")
        hook.put_file(str(make_clip(args.seconds, Path(tmp) / "clip.mp4")), f"{workdir}/source.mp4")
        hook.put_text(f"{workdir}/upscale.sbatch", script, mode=0o755)
        hook.run_command([f"{venv}/bin/reelforge-sr", "-q", "plan", "--source", f"{workdir}/source.mp4",
                          "--workdir", workdir, "--model", "anime", "--segment-seconds", "1"])
        plan = hook.read_json(f"{workdir}/plan.json")
        n_segments = len(plan["segments"])
        print(f"clip 160x90, {args.seconds:g} s, {plan['total_frames']} frames, {n_segments} segments; "
              f"--cpus-per-task={args.cpus_per_task}, threads {args.threads or args.cpus_per_task}; "
              f"host cores: {os.cpu_count()}")
        try:
            for n in (1, 2, 3):
                limit_nodes(n)
                hook.run_command(["rm", "-rf", "--", f"{workdir}/segments"])
                start = time.monotonic()
                job_id = hook.submit(
                    f"{workdir}/upscale.sbatch", job_name=f"bench-scaling-{n}", array=f"0-{n_segments - 1}",
                    partition="gpu", cpus_per_task=args.cpus_per_task, chdir=workdir,
                    output=f"{workdir}/logs/%x_%A_%a.out",
                    env={"WORKDIR": workdir, "SR_MODEL_DIR": models, "SR_VENV": venv,
                         "SR_THREADS": str(args.threads or args.cpus_per_task)},
                )
                while True:
                    states = hook.job_states(job_id, array=f"0-{n_segments - 1}")
                    if len(states) == n_segments and all(s.terminal for s in states.values()):
                        break
                    time.sleep(0.5)
                results[n] = time.monotonic() - start
                failed = [i for i, s in states.items() if not s.ok]
                if failed:
                    print(f"{n} node(s): tasks {failed} failed: " + shlex.join(s.describe() for s in states.values()))
                    return 1
                nodes_used = hook.run_command(["sacct", "-n", "-X", "-P", "-j", job_id, "--format=NodeList"],
                                              check=False).stdout.split()
                print(f"{n} node(s): wall {results[n]:6.1f} s  efficiency {results[1] / (n * results[n]):.2f}"
                      + (f"  nodes used: {sorted(set(nodes_used))}" if nodes_used else ""))
        finally:
            resume_all()
            hook.run_command(["rm", "-rf", "--", workdir], check=False)
    print(f"speed-up 3 nodes vs 1: {results[1] / results[3]:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
