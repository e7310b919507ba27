"""``reelforge-sr``: the worker's command line (called by the Slurm sbatch scripts).

Every command prints a JSON result on stdout and logs to stderr. On error: the message on stderr, the
same message in ``<workdir>/failure`` (SageMaker's contract; the workdir is ``--workdir`` or
``$WORKDIR``), exit status 1 (2 for usage errors).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any

from reelforge_sr import __version__
from reelforge_sr.atomic import write_bytes
from reelforge_sr.errors import ReelForgeError

log = logging.getLogger("reelforge_sr")
FAILURE_NAME = "failure"
#: Process settings applied (unless already set) before torch is imported: libgomp reads OMP_WAIT_POLICY when
#: it loads. PASSIVE: a torch thread that finishes its share of an op sleeps instead of spinning, so the
#: ffmpeg decoder/encoder children get the cycles the model is not using.
RUNTIME_ENV = {"OMP_WAIT_POLICY": "PASSIVE"}


def apply_runtime_env() -> None:
    """Set :data:`RUNTIME_ENV` where the caller's environment does not (no effect once torch is loaded)."""
    for name, value in RUNTIME_ENV.items():
        os.environ.setdefault(name, value)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="reelforge-sr", description="ReelForge video super-resolution worker")
    p.add_argument("--version", action="version", version=f"reelforge-sr {__version__}")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("probe", help="ffprobe facts about a video, as JSON")
    s.add_argument("source")
    s.add_argument("--no-count", action="store_true",
                   help="estimate frames instead of decoding when nb_frames is absent")

    s = sub.add_parser("plan", help="probe, choose the model, cut into segments; writes WORKDIR/plan.json")
    s.add_argument("--source", required=True)
    s.add_argument("--workdir", required=True)
    s.add_argument("--model", default="auto", help="auto | anime | live-action | a registry name")
    s.add_argument("--scale", type=int, default=4, choices=(2, 3, 4))
    s.add_argument("--segment-seconds", type=float, default=10.0)
    s.add_argument("--preview-seconds", type=float, default=0.0, help="> 0: only the first N seconds")
    s.add_argument("--codec", default="libx264", choices=("libx264", "libx265", "h264_nvenc", "hevc_nvenc"))
    s.add_argument("--crf", type=int, default=18)
    s.add_argument("--preset", default="", help="encoder preset (default: veryfast; p5 for NVENC)")
    s.add_argument("--container", default="mp4", choices=("mp4", "mkv"))
    s.add_argument("--ten-bit", default="auto", choices=("auto", "on", "off"))
    s.add_argument("--deinterlace", default="auto", choices=("auto", "on", "off"))
    s.add_argument("--sar", default="square", choices=("square", "keep"))
    s.add_argument("--frame-rate", default="source",
                   help="source (every frame at its source time; VFR stays VFR) | constant (the source's nominal "
                        "rate) | a rate such as 25 or 30000/1001: frames dropped or repeated, never retimed")
    s.add_argument("--ivtc", default="auto", choices=("auto", "on", "off"),
                   help="inverse telecine: auto (when 3:2 pulldown is detected) | on | off")
    s.add_argument("--reuse-held", default="auto", choices=("auto", "on", "off"),
                   help="a frame repeating the last upscaled one reuses its output: auto (drawn content) | on | off")

    s = sub.add_parser("segment", help="upscale one segment of the plan (one Slurm array task)")
    s.add_argument("--workdir", required=True)
    s.add_argument("--index", type=int, default=None, help="segment index (default: $SLURM_ARRAY_TASK_ID)")
    s.add_argument("--model-dir", default=None, help="weights directory (also $REELFORGE_MODEL_DIR)")
    s.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    s.add_argument("--threads", type=int, default=None, help="CPU threads (default: $SLURM_CPUS_PER_TASK or all)")
    s.add_argument("--batch", type=int, default=None, help="max frames per forward pass")
    s.add_argument("--precision", default="auto", choices=("auto", "fp32", "fp16", "bf16"))
    s.add_argument("--max-pixels", type=int, default=None, help="input pixels per forward pass before tiling")
    s.add_argument("--offline", action="store_true", help="never download weights")

    s = sub.add_parser("assemble", help="concatenate segments, mux audio/subtitles/chapters, check quality")
    s.add_argument("--workdir", required=True)
    s.add_argument("--output", default=None, help="default: WORKDIR/output.<container>")
    s.add_argument("--quality-samples", type=int, default=5)
    s.add_argument("--previews", type=int, default=3)

    s = sub.add_parser("fetch", help="download s3://bucket/key to DEST (skips when already there)")
    s.add_argument("uri")
    s.add_argument("dest")
    s.add_argument("--version-id", default=None)
    s.add_argument("--max-bytes", type=int, default=None)
    s.add_argument("--workdir", default=None, help="where to write `failure` (default: $WORKDIR)")

    s = sub.add_parser("deliver", help="upload output, previews and report.json (last) to s3://bucket/prefix/")
    s.add_argument("--workdir", required=True)
    s.add_argument("--dest", required=True)
    s.add_argument("--name", default=None, help="the video's file name under DEST (default: the output's own)")

    s = sub.add_parser("serve", help="SageMaker-style HTTP inference server (/ping, /invocations)")
    s.add_argument("--port", type=int, default=int(os.environ.get("SAGEMAKER_BIND_TO_PORT", "8080")))
    s.add_argument("--model-dir", default=None)
    return p


def _segment_index(value: int | None) -> int:
    if value is not None:
        return value
    env = os.environ.get("SLURM_ARRAY_TASK_ID", "")
    if not env.isdigit():
        raise ReelForgeError("no --index given and $SLURM_ARRAY_TASK_ID is not set")
    return int(env)


def _run(args: argparse.Namespace) -> Any:
    if args.command == "probe":
        from reelforge_sr.probe import probe

        return probe(args.source, count_frames=not args.no_count).to_dict()
    if args.command == "plan":
        from reelforge_sr.plan import PlanSettings, build_plan, write_plan

        settings = PlanSettings(model=args.model, scale=args.scale, segment_seconds=args.segment_seconds,
                                preview_seconds=args.preview_seconds, codec=args.codec, crf=args.crf,
                                preset=args.preset, container=args.container, ten_bit=args.ten_bit,
                                deinterlace=args.deinterlace, sar=args.sar, frame_rate=args.frame_rate,
                                ivtc=args.ivtc, reuse_held=args.reuse_held)
        plan = build_plan(args.source, args.workdir, settings)
        path = write_plan(plan, args.workdir)
        (Path(args.workdir) / FAILURE_NAME).unlink(missing_ok=True)
        return {"plan": str(path), "segments": len(plan["segments"]), "total_frames": plan["total_frames"],
                "output_frames": plan["output_frames"], "ivtc": plan["ivtc"]["verdict"],
                "ivtc_applied": plan["ivtc"]["applied"],
                "model": plan["model"], "model_choice": plan["model_choice"].get("method"),
                "output": f"{plan['geometry']['out_width']}x{plan['geometry']['out_height']}"}
    if args.command == "segment":
        from reelforge_sr.segment import run_segment

        return run_segment(args.workdir, _segment_index(args.index), model_dir=args.model_dir, device=args.device,
                           threads=args.threads, batch=args.batch, precision=args.precision,
                           max_pixels=args.max_pixels, allow_download=False if args.offline else None)
    if args.command == "assemble":
        from reelforge_sr.assemble import assemble

        report = assemble(args.workdir, args.output, quality_samples=args.quality_samples, previews=args.previews)
        (Path(args.workdir) / FAILURE_NAME).unlink(missing_ok=True)
        return {"output": report["output"]["path"], "frames": report["frames"],
                "psnr_db_mean": report["quality"].get("psnr_db_mean"), "ssim_mean": report["quality"].get("ssim_mean"),
                "report": str(Path(args.workdir).resolve() / "report.json")}
    if args.command == "fetch":
        from reelforge_sr.s3io import DEFAULT_MAX_BYTES, fetch

        return fetch(args.uri, args.dest, version_id=args.version_id, max_bytes=args.max_bytes or DEFAULT_MAX_BYTES)
    if args.command == "deliver":
        from reelforge_sr.s3io import deliver

        return deliver(args.workdir, args.dest, args.name)
    if args.command == "serve":
        from reelforge_sr.serving import serve

        serve(args.port, args.model_dir)
        return None
    raise AssertionError(args.command)


#: A log line starting with this says "retrying cannot help" (read by reelforge.operators.slurm).
PERMANENT_FAILURE_MARKER = "reelforge: permanent failure: "


def _write_failure(args: argparse.Namespace, message: str) -> None:
    workdir = getattr(args, "workdir", None) or os.environ.get("WORKDIR")
    if not workdir or not Path(workdir).is_dir():
        return
    label = args.command + (f" {args.index}" if getattr(args, "index", None) is not None else "")
    try:
        write_bytes(Path(workdir) / FAILURE_NAME, f"reelforge-sr {label}: {message}\n".encode())
    except OSError:
        pass


def _terminate(signum: int, _frame: Any) -> None:
    """Slurm sends SIGTERM on cancel/timeout: unwind (temp files removed, children killed) and report."""
    raise ReelForgeError(f"terminated by signal {signum}")


def main(argv: list[str] | None = None) -> int:
    apply_runtime_env()
    args = _parser().parse_args(argv)
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _terminate) if in_main else None
    try:
        return _main(args)
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, previous)


def _main(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.WARNING if args.quiet else logging.INFO, stream=sys.stderr,
                        format="[reelforge-sr] %(levelname)s %(message)s")
    try:
        result = _run(args)
    except ReelForgeError as exc:
        print(f"reelforge-sr {args.command}: error: {exc}", file=sys.stderr)
        if exc.permanent:
            # The input itself is unusable (bad media, bad key, missing object). This line tells the
            # Slurm operator that a retry cannot help: it fails the task at once, with this reason,
            # instead of re-running the job three more times on the cluster.
            print(f"{PERMANENT_FAILURE_MARKER}{exc}", file=sys.stderr)
        _write_failure(args, str(exc))
        return 1
    except KeyboardInterrupt:
        _write_failure(args, "interrupted")
        return 130
    except Exception as exc:  # an unexpected bug: keep the traceback
        traceback.print_exc()
        _write_failure(args, f"unexpected {type(exc).__name__}: {exc}")
        return 1
    if result is not None:
        print(json.dumps(result, indent=2, default=str))
    return 0
