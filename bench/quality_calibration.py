"""Where the quality warning's threshold comes from: the consistency check on ordinary content.

For every sample clip in ``$REELFORGE_SAMPLES_DIR`` (``../shared/data/video``), the first ``--seconds``
scaled to ``--height`` lines go through the worker (plan → segments → assemble, the auto model, x4), and
the quality check's figures are printed: mean and worst sampled PSNR (output area-downscaled vs source)
and SSIM. Then the same for a deliberately bad output (the worker's result blurred and shifted), to show
the gap the threshold sits in. The threshold in ``reelforge_sr.quality.WARN_PSNR_DB`` should sit well
below the worst ordinary clip and above the bad ones.

    .venv/bin/python bench/quality_calibration.py [--height 144] [--seconds 1]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "containers" / "sr" / "src"))


def main() -> int:
    from reelforge_sr import quality
    from reelforge_sr.assemble import probe_output
    from reelforge_sr.cli import main as worker

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--height", type=int, default=144)
    parser.add_argument("--seconds", type=float, default=1.0)
    args = parser.parse_args()
    samples = Path(os.environ.get("REELFORGE_SAMPLES_DIR", ROOT.parent / "shared" / "data" / "video"))
    models = os.environ.get("REELFORGE_MODEL_DIR", str(ROOT.parent / "shared" / "data" / "models"))
    clips = sorted(p for p in samples.iterdir() if p.suffix in {".mp4", ".webm", ".mkv", ".mov"})
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for clip in clips:
            small = Path(tmp) / f"{clip.stem}.mp4"
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(clip), "-t", str(args.seconds), "-vf",
                            f"scale=-2:{args.height}:flags=area", "-an", "-c:v", "libx264", "-crf", "16", str(small)],
                           check=True)
            work = Path(tmp) / clip.stem
            assert worker(["-q", "plan", "--source", str(small), "--workdir", str(work)]) == 0
            plan = json.loads((work / "plan.json").read_text())
            for seg in plan["segments"]:
                assert worker(["-q", "segment", "--workdir", str(work), "--index", str(seg["index"]),
                               "--model-dir", models]) == 0
            assert worker(["-q", "assemble", "--workdir", str(work), "--quality-samples", "5",
                           "--previews", "0"]) == 0
            report = json.loads((work / "report.json").read_text())
            q = report["quality"]
            rows.append((clip.name, plan["model"], "ordinary", q["psnr_db_mean"],
                         min(f["psnr_db"] for f in q["frames"]), q["ssim_mean"]))
            # a bad result of the same shape: the output blurred and shifted by two output pixels
            bad = work / "bad.mp4"
            subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(work / "output.mp4"), "-vf",
                            "gblur=sigma=6,crop=iw-2:ih:2:0,pad=iw+2:ih:0:0", "-c:v", "libx264", "-crf", "18",
                            str(bad)], check=True)
            shutil.rmtree(work / "previews", ignore_errors=True)
            qb = quality.check(plan, bad, probe_output(bad, report["frames"]), work / "previews", samples=5,
                               previews=0)
            rows.append((clip.name, plan["model"], "blurred+shifted", qb["psnr_db_mean"],
                         min(f["psnr_db"] for f in qb["frames"]), qb["ssim_mean"]))
    print(f"{'clip':34} {'model':24} {'output':16} {'PSNR mean':>9} {'PSNR min':>9} {'SSIM':>7}")
    for name, model, kind, mean, worst, ssim in rows:
        print(f"{name:34} {model:24} {kind:16} {mean:9.2f} {worst:9.2f} {ssim:7.4f}")
    ordinary = [r[4] for r in rows if r[2] == "ordinary"]
    bad = [r[3] for r in rows if r[2] != "ordinary"]
    print(f"\nworst ordinary sample: {min(ordinary):.2f} dB (threshold {quality.WARN_PSNR_DB} dB, margin "
          f"{min(ordinary) - quality.WARN_PSNR_DB:.2f} dB); blurred+shifted means: {min(bad):.2f}-{max(bad):.2f} dB "
          f"(flat content hides a blur: a threshold cannot catch every defect)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
