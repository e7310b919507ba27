"""The SR estimate against what the local cluster actually takes, and what inverse telecine and held-frame
reuse save.

1. **Calibration.** Two clips (different sizes) are planned and upscaled by the real upscale array on the
   local Slurm (``include/slurm/sr/02-upscale.sbatch``), one task at a time (``--array=…%1``). Each
   segment's record gives its frames and its time; a least-squares line through them gives two of the
   figures a deployment sets as Variables: ``reelforge_sr_task_startup_seconds`` (intercept) and
   ``reelforge_sr_mpix_per_second`` (1 / slope), both for a task running alone. The second clip (one
   segment per node) then runs again with every task at once: ``reelforge_sr_parallel_tasks`` = nodes ×
   (mean task time alone) / (mean task time all at once), the number of tasks' worth of throughput the
   cluster has. On this stack the 3 nodes share the host's cores, so it is far below 3.
2. **ETA.** Three other clips of different sizes: ``reelforge.sr.job.model_estimate`` (what ``read_plan``
   logs) with those figures against the array's measured wall time and task time (the segments' elapsed
   times added up). Target: within ±30 %. The column "all full speed" is the estimate without
   ``reelforge_sr_parallel_tasks`` (every task at once at full speed), for comparison.
3. **Less work.** A telecined clip and a clip held on twos and threes, each with inverse telecine and
   held-frame reuse on, then off: model calls per frame and task time side by side.

Needs the local stack (``make stack``); the cluster's nodes run the tasks (one per node: 2 CPUs each).

    source .local-stack/env.sh && .venv/bin/python bench/eta.py
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "plugins")]
SAMPLES = Path(os.environ.get("REELFORGE_SAMPLES_DIR", ROOT.parent / "shared" / "data" / "video"))
CPUS_PER_TASK = 2
TARGET = 0.30


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-v", "error", "-y", *args], check=True)


def live_clip(dest: Path, width: int, height: int, seconds: float) -> Path:
    ffmpeg("-i", str(SAMPLES / "tears_of_steel_clip_01.mp4"), "-t", str(seconds), "-vf",
           f"scale={width}:{height}:flags=area,fps=24", "-an", "-c:v", "libx264", "-crf", "18", "-g", "24", str(dest))
    return dest


def telecined_clip(dest: Path, width: int, height: int, seconds: float) -> Path:
    """23.976p film telecined to 29.97i (3:2 pulldown), as on NTSC DVDs."""
    ffmpeg("-i", str(SAMPLES / "sintel_clip_03.mp4"), "-t", str(seconds), "-vf",
           f"scale={width}:{height}:flags=area,fps=24000/1001,telecine=first_field=top:pattern=23", "-an",
           "-c:v", "libx264", "-crf", "10", "-flags", "+ildct+ilme", "-x264opts", "tff=1", str(dest))
    return dest


def held_clip(dest: Path, width: int, height: int, seconds: float) -> Path:
    """Animation drawn on twos and threes (each drawing held 2 or 3 frames) with codec noise on top."""
    ffmpeg("-i", str(SAMPLES / "caminandes_clip_02.mp4"), "-t", str(seconds), "-vf",
           f"scale={width}:{height}:flags=area,fps=10,fps=24,noise=alls=2:allf=t", "-an", "-c:v", "libx264",
           "-crf", "18", "-g", "48", str(dest))
    return dest


class Cluster:
    """Plan on a node, run the real upscale array, read the segment records back."""

    def __init__(self, hook: Any) -> None:
        self.hook = hook
        self.root = os.environ.get("AIRFLOW_VAR_REELFORGE_CLUSTER_WORK_ROOT", "/srv/reelforge")
        self.venv = os.environ.get("AIRFLOW_VAR_REELFORGE_SR_WORKER_VENV", "/opt/reelforge/worker-venv")
        self.models = os.environ["REELFORGE_MODEL_DIR"]
        self.base = f"{self.root}/bench/eta-{uuid.uuid4().hex[:8]}"
        self.script = (ROOT / "include/slurm/sr/02-upscale.sbatch").read_text()

    def run(self, clip: Path, name: str, *plan_args: str, throttle: int = 0) -> dict[str, Any]:
        workdir = f"{self.base}/{name}"
        self.hook.mkdir_p(f"{workdir}/logs")
        self.hook.put_file(str(clip), f"{workdir}/source.mp4")
        self.hook.put_text(f"{workdir}/upscale.sbatch", self.script, mode=0o755)
        self.hook.run_command([f"{self.venv}/bin/reelforge-sr", "-q", "plan", "--source", f"{workdir}/source.mp4",
                               "--workdir", workdir, "--model", "anime", *plan_args])
        plan = self.hook.read_json(f"{workdir}/plan.json")
        n = len(plan["segments"])
        start = time.monotonic()
        spec = f"0-{n - 1}" + (f"%{throttle}" if throttle else "")
        job_id = self.hook.submit(f"{workdir}/upscale.sbatch", job_name=f"bench-eta-{name}", array=spec,
                                  partition="gpu", cpus_per_task=CPUS_PER_TASK, chdir=workdir,
                                  output=f"{workdir}/logs/%x_%A_%a.out",
                                  env={"WORKDIR": workdir, "SR_MODEL_DIR": self.models, "SR_VENV": self.venv,
                                       "SR_THREADS": str(CPUS_PER_TASK)})
        while True:
            states = self.hook.job_states(job_id, array=spec)
            if len(states) == n and all(s.terminal for s in states.values()):
                break
            time.sleep(0.5)
        wall = time.monotonic() - start
        if failed := [i for i, s in states.items() if not s.ok]:
            raise SystemExit(f"{name}: tasks {failed} failed (logs in {workdir}/logs)")
        records = [self.hook.read_json(f"{workdir}/segments/{i:05d}.json") for i in range(n)]
        return {"plan": plan, "records": records, "wall_s": wall}

    def clean(self) -> None:
        self.hook.run_command(["rm", "-rf", "--", self.base], check=False)


def fit(points: list[tuple[float, float]]) -> tuple[float, float]:
    """Least squares ``seconds = startup + mpx / rate`` over (megapixels, seconds) points: (startup, rate).
    A negative start-up (noise on a loaded host) is no start-up: the line through the origin instead."""
    n = len(points)
    mx, my = sum(p[0] for p in points) / n, sum(p[1] for p in points) / n
    slope = sum((x - mx) * (y - my) for x, y in points) / sum((x - mx) ** 2 for x, _ in points)
    if my - slope * mx < 0:
        return 0.0, sum(x * x for x, _ in points) / sum(x * y for x, y in points)
    return my - slope * mx, 1 / slope


def segment_points(result: dict[str, Any]) -> list[tuple[float, float]]:
    geo = result["plan"]["geometry"]
    mpx = geo["decode_width"] * geo["decode_height"] / 1e6
    return [(r.get("model_frames", r["frames"]) * mpx, r["elapsed_s"]) for r in result["records"]]


def mean_task(result: dict[str, Any]) -> float:
    return sum(r["elapsed_s"] for r in result["records"]) / len(result["records"])


def calibrate(cluster: Cluster, tmpdir: Path, nodes: int, seconds: float) -> tuple[float, float, float]:
    """(start-up seconds, Mpx/s of one task alone, tasks' worth of throughput with one task per node)."""
    alone = [cluster.run(live_clip(tmpdir / "c160.mp4", 160, 90, seconds), "calib-160", "--segment-seconds", "2",
                         "--reuse-held", "off", throttle=1)]
    shared = live_clip(tmpdir / "c320.mp4", 320, 180, 2.0 * nodes)  # one 2 s segment per node
    alone.append(cluster.run(shared, "calib-320", "--segment-seconds", "2", "--reuse-held", "off", throttle=1))
    startup, rate = fit([p for r in alone for p in segment_points(r)])
    together = cluster.run(shared, "calib-320-together", "--segment-seconds", "2", "--reuse-held", "off")
    n = len(together["records"])
    parallel_tasks = n * mean_task(alone[1]) / mean_task(together)
    print(f"\n1. calibration, one task at a time ({sum(len(r['records']) for r in alone)} segments): "
          f"reelforge_sr_task_startup_seconds = {startup:.1f}, reelforge_sr_mpix_per_second = {rate:.3f}")
    print(f"   {n} tasks at once: {mean_task(together):.1f} s per task against {mean_task(alone[1]):.1f} s alone "
          f"(wall {together['wall_s']:.1f} s against {alone[1]['wall_s']:.1f} s one at a time): "
          f"reelforge_sr_parallel_tasks = {parallel_tasks:.2f}")
    return startup, rate, parallel_tasks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=8.0, help="length of each clip")
    parser.add_argument("--no-less-work", action="store_true", help="skip part 3")
    args = parser.parse_args()

    from reelforge.hooks.slurm import SlurmHook
    from reelforge.sr.job import model_estimate

    nodes = int(subprocess.run(["sinfo", "-h", "-p", "gpu", "-o", "%D"], capture_output=True, text=True,
                               check=True).stdout.split()[0])
    print(f"local cluster: {nodes} nodes, {CPUS_PER_TASK} CPUs per task, {os.cpu_count()} host CPUs; "
          f"host load {os.getloadavg()[0]:.1f}; clips {args.seconds:g} s, 2 s segments")
    with SlurmHook() as hook, tempfile.TemporaryDirectory() as tmp:
        cluster = Cluster(hook)
        tmpdir = Path(tmp)
        try:
            startup, rate, parallel_tasks = calibrate(cluster, tmpdir, nodes, args.seconds)

            print(f"\n2. estimate vs actual, {nodes} tasks at once (target: within ±{TARGET:.0%})")
            print(f"{'clip':>9} {'frames':>6} {'segs':>4} {'est. wall':>9} {'wall':>7} {'error':>6} "
                  f"{'est. task':>9} {'task':>7} {'error':>6} | all full speed: wall, task error")
            worst = 0.0
            for w, h in ((240, 136), (400, 224), (480, 270)):
                got = cluster.run(live_clip(tmpdir / f"t{w}.mp4", w, h, args.seconds), f"eta-{w}",
                                  "--segment-seconds", "2", "--reuse-held", "off")
                est = model_estimate(got["plan"], rate, nodes, startup, parallel_tasks)
                naive = model_estimate(got["plan"], rate, nodes, startup)
                task = sum(r["elapsed_s"] for r in got["records"])
                errors = (est["wall_seconds"] / got["wall_s"] - 1, est["task_seconds"] / task - 1)
                worst = max(worst, *map(abs, errors))
                print(f"{w:>4}x{h:<4} {got['plan']['total_frames']:>6} {len(got['records']):>4} "
                      f"{est['wall_seconds']:>8.1f}s {got['wall_s']:>6.1f}s {errors[0]:>+6.0%} "
                      f"{est['task_seconds']:>8.1f}s {task:>6.1f}s {errors[1]:>+6.0%} | "
                      f"{naive['wall_seconds'] / got['wall_s'] - 1:>+6.0%} {naive['task_seconds'] / task - 1:>+6.0%}")
            print(f"worst error {worst:.0%}: {'within' if worst <= TARGET else 'NOT within'} ±{TARGET:.0%}")
            if not args.no_less_work:
                less_work(cluster, tmpdir, args.seconds)
        finally:
            cluster.clean()
    return 0


def less_work(cluster: Cluster, tmpdir: Path, seconds: float) -> None:
    print("\n3. less work per film: on vs off (model calls per frame, task time)")
    for label, clip in (("telecined 320x240", telecined_clip(tmpdir / "tc.mp4", 320, 240, seconds)),
                        ("held 2s/3s 320x180", held_clip(tmpdir / "held.mp4", 320, 180, seconds))):
        runs = {mode: cluster.run(clip, f"{label.split()[0]}-{mode}", "--segment-seconds", "2",
                                  "--ivtc", "auto" if mode == "on" else "off", "--reuse-held", mode)
                for mode in ("on", "off")}
        cells = []
        for mode, got in runs.items():
            frames = sum(r.get("shown_frames", r["frames"]) for r in got["records"])
            calls = sum(r.get("model_frames", r["frames"]) for r in got["records"])
            task = sum(r["elapsed_s"] for r in got["records"])
            cells.append((mode, frames, calls, task, got["wall_s"]))
        (_, f_on, c_on, t_on, w_on), (_, f_off, c_off, t_off, w_off) = cells
        print(f"{label:>20}: on {c_on}/{f_on} frames through the model ({c_on / f_on:.2f} per frame), "
              f"task {t_on:.1f} s, wall {w_on:.1f} s | off {c_off}/{f_off} ({c_off / f_off:.2f}), task "
              f"{t_off:.1f} s, wall {w_off:.1f} s | task time on/off {t_on / t_off:.2f}")


if __name__ == "__main__":
    sys.exit(main())
