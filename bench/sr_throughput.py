"""Super-resolution throughput on this machine: model only, the worker end to end, and a frame-by-frame baseline.

For each size (160×90 and 320×180; 640×360 with ``--large``), on the same clip and in one run:

* **model only** — frames decoded into memory first, then the worker's engine (channels_last, batched,
  tiled when over the pixel budget) upscales them, timed from the first pass (model loaded before the clock
  starts; ~0.5 s here): the ceiling for the worker;
* **worker end to end** — ``reelforge_sr.segment.run_segment`` on a one-segment plan: ffmpeg decode pipe →
  model → ffmpeg encode pipe (libx264, the plan's defaults), overlapped in threads; wall time of the call,
  model loading included;
* **frame-by-frame baseline** — what a RealESRGANer-style script does: extract PNG files to disk, then per
  frame read PNG → contiguous NCHW fp32 tensor → model → PNG written, one frame at a time, then encode the
  video from the images (same x264 settings). PNGs are written uncompressed-filter/zlib level 1 like
  OpenCV's default, read with zlib (no ffmpeg spawn per frame, which would penalise the baseline).

The model-only and worker phases run with the worker CLI's process settings (``reelforge_sr.cli.RUNTIME_ENV``:
``OMP_WAIT_POLICY=PASSIVE`` unless set), as ``reelforge-sr segment`` would; the baseline with the environment as is.
Each phase runs in its own process so its peak RSS and CPU time can be reported; phases are interleaved and repeated
(``--repeats``, best run reported) because other processes share the machine. Prints frames/s, the ratios
(end to end / model only; ours / baseline) and the targets; on a busy machine the best runs of two phases may
come from moments of different load, so the e2e/model ratio of each repeat's adjacent pair and the ratio of
CPU seconds (load-independent work, ffmpeg included) are printed too. Run: ``make bench`` or
``.venv/bin/python bench/sr_throughput.py [--large] [--sizes 320x180] [--clip PATH] [--threads N] [--repeats N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "containers" / "sr" / "src"))
SIZES = [(160, 90, 96), (320, 180, 72)]
LARGE = (640, 360, 24)
TARGET_E2E = 0.85
TARGET_BASELINE = 1.8


def model_dir() -> Path:
    return Path(os.environ.get("REELFORGE_MODEL_DIR", ROOT.parent / "shared" / "data" / "models"))


def default_clip() -> Path:
    return Path(os.environ.get("REELFORGE_SAMPLES_DIR", ROOT.parent / "shared" / "data" / "video")) / \
        "caminandes_clip_02.mp4"


def make_source(clip: Path, width: int, height: int, frames: int, dest: Path) -> Path:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(clip), "-an", "-vf", f"scale={width}:{height}:flags=area",
                    "-frames:v", str(frames), "-c:v", "libx264", "-crf", "18", "-pix_fmt", "yuv420p", str(dest)],
                   check=True)
    return dest


# ---------------------------------------------------------------- minimal PNG (filter type 0) I/O for the baseline
def png_write(path: Path, image) -> None:
    h, w, _ = image.shape
    raw = b"".join(b"\x00" + image[y].tobytes() for y in range(h))

    def chunk(tag: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw, 1)) + chunk(b"IEND", b""))


def png_read(path: Path):
    import numpy as np

    data = path.read_bytes()
    pos, idat, w, h = 8, [], 0, 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        tag, body = data[pos + 4:pos + 8], data[pos + 8:pos + 8 + length]
        if tag == b"IHDR":
            w, h = struct.unpack(">II", body[:8])
        elif tag == b"IDAT":
            idat.append(body)
        pos += 12 + length
    rows = np.frombuffer(zlib.decompress(b"".join(idat)), np.uint8).reshape(h, 1 + 3 * w)
    if rows[:, 0].any():
        raise ValueError(f"{path.name}: PNG rows use filters; extract with -pred none")
    return rows[:, 1:].reshape(h, w, 3)


# ---------------------------------------------------------------- phases (each in its own process)
def phase_model(src: Path, threads: int, model: str, precision: str, device: str = "cpu") -> dict:
    import numpy as np

    from reelforge_sr.engine import Upscaler
    from reelforge_sr.models import load_model
    from reelforge_sr.probe import probe

    v = probe(src).video
    raw = subprocess.run(["ffmpeg", "-v", "error", "-i", str(src), "-f", "rawvideo", "-pix_fmt", "rgb24", "-"],
                         capture_output=True, check=True).stdout
    frames = np.frombuffer(bytearray(raw), np.uint8).reshape(-1, v.height, v.width, 3)
    engine = Upscaler(load_model(model, model_dir(), allow_download=False).net, threads=threads, precision=precision,
                      device=device)
    step = engine.frames_per_pass(v.height, v.width)
    if str(engine.info.device).startswith("cuda"):
        engine(frames[:step])  # warm-up (CUDA context, cuDNN autotuning): not timed
    start = time.perf_counter()
    for i in range(0, len(frames), step):
        engine(frames[i:i + step])
    elapsed = time.perf_counter() - start
    return {"frames": len(frames), "seconds": elapsed, "fps": len(frames) / elapsed, "frames_per_pass": step}


def phase_worker(src: Path, threads: int, model: str, precision: str, work: Path, device: str = "cpu",
                 codec: str = "libx264") -> dict:
    from reelforge_sr.plan import PlanSettings, build_plan, write_plan
    from reelforge_sr.segment import run_segment

    # every frame through the model, as in the other phases: the pipeline's own cost, not held-frame savings
    plan = build_plan(src, work, PlanSettings(model=model, segment_seconds=1e6, codec=codec, reuse_held="off",
                                              ivtc="off"))
    write_plan(plan, work)
    start = time.perf_counter()
    record = run_segment(work, 0, model_dir=str(model_dir()), threads=threads, precision=precision,
                         allow_download=False, device=device)
    elapsed = time.perf_counter() - start
    return {"frames": record["frames"], "seconds": elapsed, "fps": record["frames"] / elapsed,
            "model_s": record["model_s"]}


def phase_baseline(src: Path, threads: int, model: str, work: Path, device: str = "cpu") -> dict:
    import numpy as np
    import torch

    from reelforge_sr.models import SRVGGNetCompact, load_model

    torch.set_num_threads(threads)
    loaded = load_model(model, model_dir(), allow_download=False)
    net = SRVGGNetCompact(num_feat=loaded.spec.num_feat, num_conv=loaded.spec.num_conv, upscale=loaded.spec.scale)
    net.load_state_dict(loaded.net.state_dict())
    net.eval().to(device)
    frames_in, frames_out = work / "in", work / "out"
    frames_in.mkdir(parents=True)
    frames_out.mkdir()
    start = time.perf_counter()
    subprocess.run(["ffmpeg", "-v", "error", "-i", str(src), "-pred", "none", str(frames_in / "%06d.png")], check=True)
    files = sorted(frames_in.glob("*.png"))
    for path in files:
        img = png_read(path).astype(np.float32) / 255.0
        x = torch.from_numpy(np.transpose(img, (2, 0, 1)).copy()).unsqueeze(0).to(device)  # contiguous NCHW fp32
        with torch.no_grad():
            y = net(x)
        out = y.squeeze(0).float().clamp_(0, 1).cpu().numpy()
        out = (np.transpose(out, (1, 2, 0)) * 255.0).round().astype(np.uint8)
        png_write(frames_out / path.name, out)
    fps = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=r_frame_rate",
                          "-of", "csv=p=0", str(src)], capture_output=True, text=True, check=True).stdout.strip()
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-framerate", fps, "-i", str(frames_out / "%06d.png"), "-c:v",
                    "libx264", "-crf", "18", "-preset", "veryfast", "-pix_fmt", "yuv420p", str(work / "out.mp4")],
                   check=True)
    elapsed = time.perf_counter() - start
    return {"frames": len(files), "seconds": elapsed, "fps": len(files) / elapsed}


def run_phase(name: str, src: Path, threads: int, model: str, precision: str, work: Path, device: str = "cpu",
              codec: str = "libx264") -> dict:
    """Run one phase in a child process; add its peak RSS (MiB) and CPU seconds (ffmpeg children included)."""
    from reelforge_sr.cli import RUNTIME_ENV  # no torch import

    work.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "REELFORGE_OFFLINE": "1"}
    if name != "baseline":
        env = {**RUNTIME_ENV, **env}
    proc = subprocess.Popen([sys.executable, __file__, "--phase", name, "--src", str(src), "--threads", str(threads),
                             "--model", model, "--precision", precision, "--work", str(work), "--device", device,
                             "--codec", codec],
                            stdout=subprocess.PIPE, env=env)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"phase {name} failed ({proc.returncode})")
    return {**json.loads(out), "peak_rss_mib": usage.ru_maxrss / 1024, "cpu_s": usage.ru_utime + usage.ru_stime}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--large", action="store_true", help="also 640x360")
    ap.add_argument("--sizes", default=None, help="only these sizes, e.g. 320x180 or 160x90,320x180")
    ap.add_argument("--clip", type=Path, default=None, help="source clip (default: Caminandes sample)")
    ap.add_argument("--threads", type=int, default=len(os.sched_getaffinity(0)))
    ap.add_argument("--model", default="realesr-animevideov3")
    ap.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                    help="ours (model only, worker); the baseline is always fp32 like RealESRGANer on CPU")
    ap.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N (all three phases)")
    ap.add_argument("--codec", default="libx264", help="the worker's encoder (h264_nvenc on a GPU with NVENC)")
    ap.add_argument("--repeats", type=int, default=2, help="runs per phase; the best is reported (shared machines)")
    ap.add_argument("--phase", choices=("model", "worker", "baseline"), help=argparse.SUPPRESS)
    ap.add_argument("--src", type=Path, help=argparse.SUPPRESS)
    ap.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phase:
        fn = {"model": lambda: phase_model(args.src, args.threads, args.model, args.precision, args.device),
              "worker": lambda: phase_worker(args.src, args.threads, args.model, args.precision, args.work,
                                             args.device, args.codec),
              "baseline": lambda: phase_baseline(args.src, args.threads, args.model, args.work, args.device)}[
            args.phase]
        print(json.dumps(fn()))
        return 0

    clip = args.clip or default_clip()
    if not clip.is_file() or not (model_dir() / "realesr-animevideov3.pth").is_file():
        print(f"sr_throughput: needs the sample clip {clip} and weights in {model_dir()}", file=sys.stderr)
        return 1
    sizes = SIZES + ([LARGE] if args.large else [])
    if args.sizes:
        wanted = set(args.sizes.split(","))
        sizes = [s for s in sizes if f"{s[0]}x{s[1]}" in wanted]
    load = os.getloadavg()[0]
    print(f"sr_throughput: {args.model}, x4, {args.device}, precision {args.precision}, encoder {args.codec}, "
          f"{args.threads} CPU threads, clip {clip.name}, "
          f"load average {load:.1f}, "
          f"best of {args.repeats} runs per phase ({max(1, args.repeats - 1)} for the baseline)")
    print(f"{'size':>9} {'frames':>6} {'model-only':>11} {'worker e2e':>11} {'e2e/model':>9} {'baseline':>9} "
          f"{'ours/base':>9}   peak RSS MiB (model / worker / baseline)")
    results = []
    with tempfile.TemporaryDirectory(prefix="sr-bench-") as tmp:
        for width, height, frames in sizes:
            src = make_source(clip, width, height, frames, Path(tmp) / f"src_{width}x{height}.mp4")
            runs: dict[str, list[dict]] = {"model": [], "worker": [], "baseline": []}
            for rep in range(args.repeats):  # interleaved, so that load from other processes hits all phases
                for name in runs:
                    if name == "baseline" and rep >= max(1, args.repeats - 1):
                        continue  # the slow baseline gets one run fewer
                    work = Path(tmp) / f"{name}_{width}_{rep}"
                    runs[name].append(run_phase(name, src, args.threads, args.model, args.precision, work,
                                                args.device, args.codec))
                    shutil.rmtree(work, ignore_errors=True)
            res = {name: {**max(rs, key=lambda r: r["fps"]), "peak_rss_mib": max(r["peak_rss_mib"] for r in rs),
                          "all_fps": [round(r["fps"], 2) for r in rs], "all_cpu": [round(r["cpu_s"], 1) for r in rs]}
                   for name, rs in runs.items()}
            paired = sorted(w["fps"] / m["fps"] for m, w in zip(runs["model"], runs["worker"], strict=True))
            cpu_ratio = min(r["cpu_s"] for r in runs["model"]) / min(r["cpu_s"] for r in runs["worker"])
            e2e_ratio = res["worker"]["fps"] / res["model"]["fps"]
            base_ratio = res["worker"]["fps"] / res["baseline"]["fps"]
            results.append((width, height, e2e_ratio, base_ratio))
            print(f"{width:>4}x{height:<4} {frames:>6} {res['model']['fps']:>8.2f}/s {res['worker']['fps']:>8.2f}/s "
                  f"{e2e_ratio:>9.2f} {res['baseline']['fps']:>7.2f}/s {base_ratio:>9.2f}   "
                  f"{res['model']['peak_rss_mib']:.0f} / {res['worker']['peak_rss_mib']:.0f} / "
                  f"{res['baseline']['peak_rss_mib']:.0f}", flush=True)
            print(f"{'':>16} runs, frames/s: model {res['model']['all_fps']}, worker {res['worker']['all_fps']}, "
                  f"baseline {res['baseline']['all_fps']}; CPU s: model {res['model']['all_cpu']}, "
                  f"worker {res['worker']['all_cpu']}", flush=True)
            print(f"{'':>16} e2e/model paired by repeat (same moment's load): {[round(r, 2) for r in paired]}, "
                  f"median {paired[len(paired) // 2]:.2f}; CPU time model / worker {cpu_ratio:.2f}", flush=True)
    for width, height, e2e_ratio, base_ratio in results:
        if (width, height) == (320, 180):
            print(f"targets at 320x180: end to end ≥ {TARGET_E2E} × model only: {e2e_ratio:.2f} "
                  f"({'met' if e2e_ratio >= TARGET_E2E else 'NOT met'}); ours ≥ {TARGET_BASELINE} × baseline: "
                  f"{base_ratio:.2f} ({'met' if base_ratio >= TARGET_BASELINE else 'NOT met'})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
