"""``reelforge-stylegan2 {prep,train,export,generate}``: the container's entry point.

SageMaker training runs the image as ``docker run IMAGE train``; processing jobs set the entry point
and arguments (``reelforge-stylegan2 prep …``, ``reelforge-stylegan2 generate …``).
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from reelforge_stylegan2.sm import OptML, run_entry


def _parser() -> argparse.ArgumentParser:
    opt_ml = OptML()
    proc = opt_ml.processing
    parser = argparse.ArgumentParser(prog="reelforge-stylegan2", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    prep = sub.add_parser("prep", help="images → StyleGAN2-ADA dataset zip + report")
    prep.add_argument("--input", type=Path, default=proc / "input" / "images")
    prep.add_argument("--output", type=Path, default=proc / "output" / "dataset")
    prep.add_argument("--resolution", type=int, required=True)
    prep.add_argument("--min-size", type=int, default=None, help="shorter side below this is 'tiny' "
                      "(default: resolution / 2)")
    prep.add_argument("--min-images", type=int, default=1)
    prep.add_argument("--workers", type=int, default=0, help="decode processes (default: CPU count)")

    sub.add_parser("train", help="SageMaker training job (hyperparameters.json, channel 'train')")

    export = sub.add_parser("export", help="network snapshot pickle → TorchScript generator")
    export.add_argument("--snapshot", type=Path, required=True)
    export.add_argument("--out", type=Path, required=True)

    gen = sub.add_parser("generate", help="images from seeds, requests and projections")
    gen.add_argument("--model", type=Path, default=proc / "input" / "model",
                     help="generator.pt, a folder holding it, or model.tar.gz")
    gen.add_argument("--out", type=Path, default=proc / "output" / "samples")
    gen.add_argument("--seeds", default=None, help="e.g. 0-63 or 1,5,9")
    gen.add_argument("--truncation", type=float, default=0.7)
    gen.add_argument("--class", dest="class_idx", type=int, default=None)
    gen.add_argument("--inputs", type=Path, default=None, help="folder of *.json requests and images to project")
    gen.add_argument("--steps", type=int, default=300, help="projection steps per image")
    gen.add_argument("--device", default="auto")
    return parser


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        stream=sys.stdout)
    args = _parser().parse_args(argv)

    if args.command == "prep":
        def entry() -> str:
            import os

            from reelforge_stylegan2.prep import prepare_dataset, summary

            report = prepare_dataset(args.input, args.output, resolution=args.resolution, min_size=args.min_size,
                                     min_images=args.min_images, workers=args.workers or os.cpu_count() or 1)
            return summary(report)

    elif args.command == "train":
        def entry() -> str:
            from reelforge_stylegan2.training import train

            return train()

    elif args.command == "export":
        def entry() -> str:
            from reelforge_stylegan2.export import export_generator, load_snapshot_generator

            meta = export_generator(load_snapshot_generator(args.snapshot), args.out, source=args.snapshot.name)
            return f"export: {meta['img_resolution']}px generator written to {args.out}"

    else:
        def entry() -> str:
            from reelforge_stylegan2.generate import run_batch, summary

            manifest = run_batch(args.model, args.out, seeds=args.seeds, truncation=args.truncation,
                                 class_idx=args.class_idx, inputs=args.inputs, steps=args.steps,
                                 device=args.device)
            return summary(manifest)

    return run_entry(args.command, entry)
