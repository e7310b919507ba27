"""SageMaker training entry around NVlabs' ``stylegan2-ada-pytorch/train.py``.

What it adds to ``train.py``:

* **Hyper-parameters** from ``hyperparameters.json`` are validated and mapped to ``train.py``
  options (:data:`HYPERPARAMETERS`); unknown ones fail the job at once.
* **Resume, not restart.** ``train.py`` writes ``<outdir>/<NNNNN>-<desc>/network-snapshot-<kimg>.pkl``
  where ``kimg`` counts from the start of *that* run. The output dir lives under
  ``/opt/ml/checkpoints``, which SageMaker syncs to the checkpoint S3 URI and restores when a managed
  spot job restarts (or when a retry starts a new job on the same URI). Each start resumes from the
  newest complete snapshot (``--resume``) and trains only what is left of the total ``kimg`` (the sum
  of the runs' progress). ``train.py`` does not carry ADA's ``p`` across a resume; with ``--resume``
  it re-adapts ``p`` five times faster (``ada_kimg=100``).
* **Disk.** Older snapshots of the current run are pruned (``keep_snapshots``); each run keeps its
  newest one, which is what the progress count needs.
* **Metrics.** FID/KID are on (``fid50k_full,kid50k_full``). ``train.py`` prints each metric result
  as a JSON line, matched by the job's metric definitions; the wrapper prints the final snapshot's
  metrics last, so SageMaker's final metric value is the final model's, and writes them to
  ``model/metrics.json`` and ``checkpoints/reelforge-metrics.json``.
* **Export.** The final generator is exported to TorchScript (``model/generator.pt``).
"""

from __future__ import annotations

import collections
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from reelforge_stylegan2.sm import Interrupted, OptML, UserError

log = logging.getLogger(__name__)

TRAIN_SCRIPT_ENV = "STYLEGAN2_TRAIN_SCRIPT"
DEFAULT_TRAIN_SCRIPT = "/opt/stylegan2-ada-pytorch/train.py"
RUNS_DIR = "runs"
METRICS_FILE = "reelforge-metrics.json"
SNAPSHOT_RE = re.compile(r"^network-snapshot-(\d{6})\.pkl$")
RUN_DIR_RE = re.compile(r"^(\d+)-")
_PICKLE_STOP = b"."


def _bool(value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("1", "true", "yes", "on"):
        return True
    if lowered in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"not a boolean: {value!r}")


def _choice(*allowed: str):
    def parse(value: str) -> str:
        if value not in allowed:
            raise ValueError(f"{value!r} is not one of {', '.join(allowed)}")
        return value

    return parse


def _metrics(value: str) -> str:
    names = [m.strip() for m in value.split(",") if m.strip()]
    if not names or any(not re.fullmatch(r"[a-z0-9_]+", m) for m in names):
        raise ValueError(f"not a comma-separated list of metric names: {value!r}")
    return ",".join(names)


#: hyper-parameter → (parser, train.py option or None when the wrapper consumes it).
HYPERPARAMETERS = {
    "kimg": (int, None),  # total training length; each start passes what is left as --kimg
    "gpus": (int, "--gpus"),
    "snap": (int, "--snap"),
    "metrics": (_metrics, "--metrics"),
    "seed": (int, "--seed"),
    "mirror": (_bool, "--mirror"),
    "cfg": (_choice("auto", "stylegan2", "paper256", "paper512", "paper1024", "cifar"), "--cfg"),
    "gamma": (float, "--gamma"),
    "batch": (int, "--batch"),
    "aug": (_choice("ada", "noaug", "fixed"), "--aug"),
    "p": (float, "--p"),
    "target": (float, "--target"),
    "augpipe": (_choice("blit", "geom", "color", "filter", "noise", "cutout", "bg", "bgc", "bgcf", "bgcfn",
                        "bgcfnc"), "--augpipe"),
    "freezed": (int, "--freezed"),
    "fp32": (_bool, "--fp32"),
    "workers": (int, "--workers"),
    "transfer": (str, None),  # starting network for a fresh run: ffhq256, …, or a path/URL
    "keep_snapshots": (int, None),
}
DEFAULTS = {"kimg": "25000", "snap": "50", "metrics": "fid50k_full,kid50k_full", "aug": "ada", "mirror": "1",
            "keep_snapshots": "3"}


def parse_hyperparameters(raw: dict[str, str]) -> dict:
    """Typed hyper-parameters with defaults; ``sagemaker_*`` keys (SDK bookkeeping) are ignored."""
    values = {}
    unknown = sorted(k for k in raw if k not in HYPERPARAMETERS and not k.startswith("sagemaker_"))
    if unknown:
        raise UserError(f"unknown hyper-parameters {unknown}; known: {sorted(HYPERPARAMETERS)}")
    for key, text in {**DEFAULTS, **raw}.items():
        if key.startswith("sagemaker_"):
            continue
        parser, _ = HYPERPARAMETERS[key]
        try:
            values[key] = parser(str(text).strip().strip('"'))
        except ValueError as err:
            raise UserError(f"hyper-parameter {key}={text!r}: {err}") from err
    if values["kimg"] < 1:
        raise UserError("hyper-parameter kimg must be at least 1")
    if values["keep_snapshots"] < 1:
        raise UserError("hyper-parameter keep_snapshots must be at least 1")
    if "p" in values and values["aug"] != "fixed":
        raise UserError("hyper-parameter p needs aug=fixed")
    if "target" in values and values["aug"] != "ada":
        raise UserError("hyper-parameter target needs aug=ada")
    return values


@dataclass(frozen=True)
class Snapshot:
    run_dir: Path
    kimg: int

    @property
    def path(self) -> Path:
        return self.run_dir / f"network-snapshot-{self.kimg:06d}.pkl"


def _is_complete(path: Path) -> bool:
    """A pickle cut short (interruption mid-write, partial restore) does not end with STOP."""
    try:
        size = path.stat().st_size
        if size < 2:
            return False
        with open(path, "rb") as f:
            f.seek(-1, os.SEEK_END)
            return f.read(1) == _PICKLE_STOP
    except OSError:
        return False


def run_dirs(runs: Path) -> list[Path]:
    """``train.py``'s run dirs, oldest first (by the numeric run id it gives them)."""
    if not runs.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in runs.iterdir() if p.is_dir() and (m := RUN_DIR_RE.match(p.name))]
    return [p for _, p in sorted(found)]


def snapshots(run_dir: Path) -> list[Snapshot]:
    """Complete snapshots of one run, by kimg."""
    found = []
    for p in run_dir.iterdir():
        m = SNAPSHOT_RE.match(p.name)
        if m and _is_complete(p):
            found.append(Snapshot(run_dir, int(m.group(1))))
        elif m:
            log.warning("ignoring incomplete snapshot %s", p)
    return sorted(found, key=lambda s: s.kimg)


@dataclass(frozen=True)
class Progress:
    done_kimg: int
    newest: Snapshot | None


def progress(runs: Path) -> Progress:
    """kimg trained so far (sum over runs of each run's newest snapshot) and the snapshot to resume."""
    done, newest = 0, None
    for run_dir in run_dirs(runs):
        snaps = snapshots(run_dir)
        if snaps:
            done += snaps[-1].kimg
            newest = snaps[-1]
    return Progress(done, newest)


def prune_snapshots(runs: Path, keep: int) -> list[Path]:
    """Delete older snapshots: the newest run keeps ``keep``, earlier runs keep their newest one.

    Incomplete snapshots of earlier runs go too (the newest run may be writing one right now).
    """
    removed = []
    dirs = run_dirs(runs)
    for index, run_dir in enumerate(dirs):
        latest = index == len(dirs) - 1
        complete = snapshots(run_dir)
        doomed = [s.path for s in complete[:-(keep if latest else 1)]]
        if not latest:
            names = {s.path.name for s in complete}
            doomed += [p for p in run_dir.iterdir() if SNAPSHOT_RE.match(p.name) and p.name not in names]
        for path in doomed:
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def detect_gpus() -> int:
    """GPUs on the instance (``nvidia-smi -L``), rounded down to a power of two (``train.py`` requires one)."""
    smi = shutil.which("nvidia-smi")
    count = 0
    if smi:
        listing = subprocess.run([smi, "-L"], capture_output=True, text=True, check=False).stdout
        count = sum(1 for line in listing.splitlines() if line.startswith("GPU "))
    if count < 1:
        return 1
    return 1 << (count.bit_length() - 1)


def cuda_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def on_this_machine(argv: list[str]) -> list[str]:
    """``train.py``'s argv as this machine can run it: as is with CUDA, else through ``nvlabs_cpu.py``."""
    if cuda_available():
        return argv
    log.warning("no CUDA device: running train.py on the CPU through reelforge_stylegan2.nvlabs_cpu "
                "(slow: smoke runs and tests only)")
    return [argv[0], str(Path(__file__).with_name("nvlabs_cpu.py")), *argv[1:]]  # stdlib + torch only


def find_dataset(channel: Path) -> Path:
    """The dataset zip the prep job wrote (``dataset.zip``, else the only zip in the channel)."""
    preferred = channel / "dataset.zip"
    if preferred.is_file():
        return preferred
    zips = sorted(channel.rglob("*.zip")) if channel.is_dir() else []
    if len(zips) != 1:
        raise UserError(f"training channel {channel} must hold one dataset zip, found {len(zips)}")
    return zips[0]


def train_command(hp: dict, *, script: str, runs: Path, data: Path, kimg: int, resume: Path | None,
                  gpus: int) -> list[str]:
    """The ``train.py`` argv for one start."""
    argv = [sys.executable, script, f"--outdir={runs}", f"--data={data}", f"--kimg={kimg}", f"--gpus={gpus}"]
    for key in sorted(hp):
        _, option = HYPERPARAMETERS[key]
        if option is None or key == "gpus":
            continue
        value = hp[key]
        if isinstance(value, bool):
            value = int(value)
        elif isinstance(value, float):
            value = f"{value:g}"
        argv.append(f"{option}={value}")
    if resume is not None:
        argv.append(f"--resume={resume}")
    elif hp.get("transfer"):
        argv.append(f"--resume={hp['transfer']}")
    return argv


def run_train_py(argv: list[str], *, runs: Path, keep: int, cwd: str | None,
                 prune_every_s: float = 60.0) -> None:
    """Run ``train.py``, streaming its output; prune snapshots as it goes; raise with its last lines."""
    log.info("running %s", " ".join(argv))
    tail: collections.deque[str] = collections.deque(maxlen=15)
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1,
                            cwd=cwd, start_new_session=True)
    last_prune = time.monotonic()
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            sys.stdout.write(line)
            tail.append(line.rstrip())
            if time.monotonic() - last_prune > prune_every_s:
                prune_snapshots(runs, keep)
                last_prune = time.monotonic()
        code = proc.wait()
    except Interrupted:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=60)
        raise
    if code != 0:
        last = " | ".join(line for line in tail if line)[-700:]
        raise RuntimeError(f"train.py exited with {code}: {last}")


def final_metrics(snapshot: Snapshot) -> dict:
    """The metric results recorded for ``snapshot`` (``metric-*.jsonl`` in its run dir)."""
    results: dict = {}
    for path in sorted(snapshot.run_dir.glob("metric-*.jsonl")):
        for line in path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                continue
            if entry.get("snapshot_pkl") == snapshot.path.name:
                results.update(entry.get("results", {}))
    return results


def train(opt_ml: OptML | None = None) -> str:
    """The training job: resume or start, train what is left, export, report metrics."""
    opt_ml = opt_ml or OptML()
    hp = parse_hyperparameters(opt_ml.read_hyperparameters())
    data = find_dataset(opt_ml.channel("train"))
    runs = opt_ml.checkpoints / RUNS_DIR
    runs.mkdir(parents=True, exist_ok=True)
    script = os.environ.get(TRAIN_SCRIPT_ENV, DEFAULT_TRAIN_SCRIPT)
    if not os.path.isfile(script):
        raise RuntimeError(f"train.py not found at {script} (set {TRAIN_SCRIPT_ENV})")

    before = progress(runs)
    remaining = hp["kimg"] - before.done_kimg
    if before.newest:
        log.info("resuming: %d of %d kimg done, newest snapshot %s", before.done_kimg, hp["kimg"], before.newest.path)
    if remaining > 0:
        argv = on_this_machine(train_command(hp, script=script, runs=runs, data=data, kimg=remaining,
                                             resume=before.newest.path if before.newest else None,
                                             gpus=hp.get("gpus") or detect_gpus()))
        run_train_py(argv, runs=runs, keep=hp["keep_snapshots"], cwd=os.path.dirname(script))
    else:
        log.info("all %d kimg already trained; exporting the newest snapshot", hp["kimg"])
    prune_snapshots(runs, hp["keep_snapshots"])

    after = progress(runs)
    if after.newest is None:
        raise RuntimeError(f"train.py finished but wrote no snapshot under {runs}")
    if after.done_kimg < hp["kimg"]:
        raise RuntimeError(f"train.py stopped at {after.done_kimg} of {hp['kimg']} kimg")
    return finish(opt_ml, after, hp)


def finish(opt_ml: OptML, done: Progress, hp: dict) -> str:
    """Export the final generator, copy its snapshot, write and print the final metrics."""
    from reelforge_stylegan2.export import export_generator, load_snapshot_generator

    final = done.newest
    assert final is not None
    opt_ml.model.mkdir(parents=True, exist_ok=True)
    meta = export_generator(load_snapshot_generator(final.path), opt_ml.model / "generator.pt",
                            source=f"{final.run_dir.name}/{final.path.name}")
    shutil.copyfile(final.path, opt_ml.model / "network-snapshot.pkl")
    metrics = {
        **final_metrics(final),
        "kimg": done.done_kimg,
        "snapshot": f"{final.run_dir.name}/{final.path.name}",
        "resolution": meta["img_resolution"],
    }
    # output/data reaches S3 as output.tar.gz beside model.tar.gz, also where checkpoints are not synced.
    (opt_ml.output / "data").mkdir(parents=True, exist_ok=True)
    for target in (opt_ml.model / "metrics.json", opt_ml.checkpoints / METRICS_FILE,
                   opt_ml.output / "data" / "metrics.json"):
        target.write_text(json.dumps(metrics, indent=2))
    # Last in the log: SageMaker's final metric values come from here.
    print("reelforge final metrics " + json.dumps(metrics), flush=True)
    fid = metrics.get("fid50k_full")
    return f"trained {done.done_kimg} kimg; fid50k_full={fid}"
