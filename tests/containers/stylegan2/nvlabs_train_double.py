"""TEST DOUBLE of NVlabs' ``stylegan2-ada-pytorch/train.py`` (which cannot be cloned here).

It mimics only what the training entry relies on: the command line, a new ``<outdir>/<NNNNN>-<desc>/``
run dir per start, ``network-snapshot-<kimg:06d>.pkl`` pickles holding ``G_ema`` (a real
:class:`tiny_generator.TinyGenerator`, continued from ``--resume``), ``metric-<name>.jsonl`` lines
and the metric JSON lines on stdout. One "tick" is 4 kimg, as in NVlabs' default.

Controlled by environment variables:

* ``DOUBLE_ARGV_LOG`` — append this start's argv (JSON) to that file;
* ``DOUBLE_FAIL_AFTER_KIMG`` — after the snapshot at that kimg, write a truncated next snapshot (an
  interruption mid-write) and exit 1 with a CUDA-looking error;
* ``DOUBLE_HANG_AFTER_FIRST`` — after the first snapshot, touch that file and sleep (for SIGTERM tests);
* ``DOUBLE_FID`` — FID reported for the final snapshot (earlier ones report more).
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import re
import sys
import time
from pathlib import Path

import torch
from tiny_generator import TinyGenerator

KIMG_PER_TICK = 4


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--outdir", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--kimg", type=int, required=True)
    parser.add_argument("--gpus", type=int, default=1)
    parser.add_argument("--snap", type=int, default=50)
    parser.add_argument("--metrics", default="fid50k_full")
    parser.add_argument("--resume", default=None)
    args, _other = parser.parse_known_args()
    if log := os.environ.get("DOUBLE_ARGV_LOG"):
        with open(log, "a") as f:
            f.write(json.dumps(sys.argv[1:]) + "\n")
    if not Path(args.data).is_file():
        print(f"--data: {args.data} does not exist", file=sys.stderr)
        return 2

    outdir = Path(args.outdir)
    outdir.mkdir(parents=True, exist_ok=True)
    ids = [int(m.group(1)) for p in outdir.iterdir() if (m := re.match(r"^(\d+)-", p.name))]
    run_dir = outdir / f"{max(ids, default=-1) + 1:05d}-{Path(args.data).stem}-auto{args.gpus}-kimg{args.kimg}"
    run_dir.mkdir()
    (run_dir / "training_options.json").write_text(json.dumps({"total_kimg": args.kimg, "resume_pkl": args.resume}))

    if args.resume:
        with open(args.resume, "rb") as f:
            G = pickle.load(f)["G_ema"]  # noqa: S301 - test data written by this double
    else:
        G = TinyGenerator(seed=0)
    final_fid = float(os.environ.get("DOUBLE_FID", "20.0"))
    fail_after = os.environ.get("DOUBLE_FAIL_AFTER_KIMG")
    hang_marker = os.environ.get("DOUBLE_HANG_AFTER_FIRST")

    kimg, tick = 0, 0
    while True:
        done = kimg >= args.kimg
        if done or tick % args.snap == 0:
            with torch.no_grad():  # "training": nudge the weights a little
                for p in G.parameters():
                    p.add_(0.001)
            name = f"network-snapshot-{kimg:06d}.pkl"
            with open(run_dir / name, "wb") as f:
                pickle.dump({"G": G, "D": None, "G_ema": G, "augment_pipe": None}, f)
            fid = final_fid if done else final_fid + 10.0 * (args.kimg - kimg)
            for metric, value in (("fid50k_full", fid), ("kid50k_full", fid / 5000)):
                if metric not in args.metrics.split(","):
                    continue
                line = json.dumps({"results": {metric: value}, "metric": metric, "total_time": 0.1, "num_gpus": 1,
                                   "snapshot_pkl": name, "timestamp": time.time()})
                print(line, flush=True)
                with open(run_dir / f"metric-{metric}.jsonl", "a") as f:
                    f.write(line + "\n")
            if hang_marker:
                Path(hang_marker).touch()
                time.sleep(120)
            if fail_after is not None and kimg >= int(fail_after):
                (run_dir / f"network-snapshot-{kimg + KIMG_PER_TICK:06d}.pkl").write_bytes(b"\x80\x04\x95partial")
                print("RuntimeError: CUDA error: an illegal memory access was encountered", file=sys.stderr)
                return 1
        if done:
            return 0
        print(f"tick {tick}  kimg {kimg}", flush=True)
        kimg += KIMG_PER_TICK
        tick += 1


if __name__ == "__main__":
    sys.exit(main())
