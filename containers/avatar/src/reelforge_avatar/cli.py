"""Command line: ``reelforge-avatar preprocess`` (a SageMaker processing job's entry) and ``stamp-base``."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from reelforge_avatar.base_model import PRODUCTION_BASE_ID, PRODUCTION_BASE_REVISION, read_identity, write_identity
from reelforge_avatar.errors import UserError
from reelforge_avatar.preprocess import DEFAULT_MIN_FACES, preprocess

log = logging.getLogger("reelforge_avatar")


def _opt_ml() -> Path:
    """``/opt/ml`` (``REELFORGE_OPT_ML`` moves it; tests use a temporary tree)."""
    return Path(os.environ.get("REELFORGE_OPT_ML", "/opt/ml"))


def _write_message(text: str, *, failure: bool) -> None:
    """``/opt/ml/output/message`` (processing ExitMessage) and ``failure`` when failing."""
    out = _opt_ml() / "output"
    try:
        out.mkdir(parents=True, exist_ok=True)
        (out / "message").write_text(text[:1024])
        if failure:
            (out / "failure").write_text(text[:1024])
    except OSError as err:
        log.warning("cannot write %s: %s", out, err)


def main(argv: list[str] | None = None) -> int:
    processing = _opt_ml() / "processing"
    parser = argparse.ArgumentParser(prog="reelforge-avatar")
    sub = parser.add_subparsers(dest="command", required=True)
    prep = sub.add_parser("preprocess", help="selfies → 512² face crops + report.json")
    prep.add_argument("--input", type=Path, default=processing / "input" / "selfies")
    prep.add_argument("--output", type=Path, default=processing / "output" / "crops")
    prep.add_argument("--min-faces", type=int, default=DEFAULT_MIN_FACES)
    prep.add_argument("--size", type=int, default=512)
    prep.add_argument("--margin", type=float, default=0.6)
    stamp = sub.add_parser("stamp-base", help="record a local base pipeline's hub id + revision beside it")
    stamp.add_argument("--dir", type=Path, required=True)
    stamp.add_argument("--id", default=PRODUCTION_BASE_ID)
    stamp.add_argument("--revision", default=PRODUCTION_BASE_REVISION)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    if args.command == "stamp-base":
        if not (args.dir / "model_index.json").is_file():
            log.error("%s is not a diffusers pipeline folder", args.dir)
            return 2
        write_identity(args.dir, args.id, args.revision)
        print(json.dumps(read_identity(args.dir)))
        return 0
    try:
        report = preprocess(args.input, args.output, min_faces=args.min_faces, size=args.size, margin=args.margin)
    except UserError as err:
        _write_message(f"preprocess: {err}", failure=True)
        log.error("preprocess failed: %s", err)
        return 2
    summary = {"accepted": report["accepted"], "rejected": report["rejected_by_reason"]}
    _write_message(f"preprocess: {json.dumps(summary)}", failure=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
