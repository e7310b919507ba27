"""``reelforge-aa`` / ``python -m reelforge_aa``: the commands the sbatch scripts run."""

from __future__ import annotations

import argparse
import json
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="reelforge-aa", description=__doc__)
    sub = parser.add_subparsers(dest="cmd", required=True)
    sub.add_parser("mlflow-run", help="find or create this sweep run's MLflow run; print its id")
    launch = sub.add_parser("launch", help="resume point + config, then exec the distributed launcher")
    launch.add_argument("--dry-run", action="store_true", help="print the plan as JSON instead of exec")
    sub.add_parser("export", help="upload the chosen weights and configs to AA_EXPORT_DEST")
    newest = sub.add_parser("newest-checkpoint", help="print the newest complete checkpoint of a run dir")
    newest.add_argument("run_dir")
    render = sub.add_parser("render-config", help="render a template with variables and overrides (JSON)")
    render.add_argument("template")
    render.add_argument("--vars", default="{}")
    render.add_argument("--overrides", default="{}")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")

    if args.cmd == "mlflow-run":
        from reelforge_aa.tracking import ensure_from_env

        print(ensure_from_env())
    elif args.cmd == "launch":
        from reelforge_aa.launch import main as launch_main

        return launch_main(dry_run=args.dry_run)
    elif args.cmd == "export":
        from reelforge_aa.export import export

        print(json.dumps(export()["manifest_uri"]))
    elif args.cmd == "newest-checkpoint":
        from reelforge_aa.checkpoints import newest_checkpoint

        found = newest_checkpoint(args.run_dir)
        print(found[1] if found else "")
    elif args.cmd == "render-config":
        from reelforge_aa import config

        print(config.dump(config.render(args.template, json.loads(args.vars), json.loads(args.overrides))), end="")
    return 0
