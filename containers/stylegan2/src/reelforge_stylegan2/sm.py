"""SageMaker's container contract: the ``/opt/ml`` layout, hyper-parameters and failure reporting.

Training jobs read ``input/config/hyperparameters.json`` (every value a string) and the channels
under ``input/data/<channel>/``, write the model to ``model/`` (uploaded as ``model.tar.gz``) and
keep ``checkpoints/`` in sync with the job's checkpoint S3 URI. A failed job writes why to
``output/failure`` (training: FailureReason) and ``output/message`` (processing: ExitMessage) and
exits non-zero. ``REELFORGE_OPT_ML`` moves the whole tree (tests use a temporary one).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("reelforge_stylegan2")

ROOT_ENV = "REELFORGE_OPT_ML"
#: SageMaker keeps the first 1024 characters of the failure reason / exit message.
MESSAGE_LIMIT = 1024


class UserError(Exception):
    """Bad input or settings: the job fails and a retry would fail the same way."""


class Interrupted(Exception):
    """SIGTERM: a managed spot interruption or StopTrainingJob. Not a failure of the job's code."""


class OptML:
    """Paths of the SageMaker container contract under one root (``/opt/ml`` in a job)."""

    def __init__(self, root: os.PathLike | None = None) -> None:
        self.root = Path(root if root is not None else os.environ.get(ROOT_ENV, "/opt/ml"))

    @property
    def hyperparameters(self) -> Path:
        return self.root / "input" / "config" / "hyperparameters.json"

    def channel(self, name: str) -> Path:
        return self.root / "input" / "data" / name

    @property
    def model(self) -> Path:
        return self.root / "model"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def output(self) -> Path:
        return self.root / "output"

    @property
    def processing(self) -> Path:
        return self.root / "processing"

    def read_hyperparameters(self) -> dict[str, str]:
        """The job's hyper-parameters as strings (``{}`` when the file is absent)."""
        if not self.hyperparameters.exists():
            return {}
        try:
            raw = json.loads(self.hyperparameters.read_text())
        except json.JSONDecodeError as err:
            raise UserError(f"{self.hyperparameters} is not JSON: {err}") from err
        if not isinstance(raw, dict):
            raise UserError(f"{self.hyperparameters} must hold a JSON object")
        return {str(k): str(v) for k, v in raw.items()}

    def write_exit_message(self, text: str, *, failure: bool) -> None:
        """``output/message`` always (processing ExitMessage); ``output/failure`` too when failing."""
        self.output.mkdir(parents=True, exist_ok=True)
        text = text[:MESSAGE_LIMIT]
        (self.output / "message").write_text(text, encoding="utf-8")
        if failure:
            (self.output / "failure").write_text(text, encoding="utf-8")


def _raise_interrupted(signum, frame):
    raise Interrupted(f"received signal {signum}")


def run_entry(name: str, fn: Callable[[], str | None], opt_ml: OptML | None = None) -> int:
    """Run one entry point under the contract: exit 0 with an optional exit message, else report.

    SIGTERM becomes :class:`Interrupted` (exit 143, no failure file: SageMaker restarts a spot
    interrupted job and the entry resumes). Any other error writes the failure file, exit 1.
    """
    opt_ml = opt_ml or OptML()
    previous = signal.signal(signal.SIGTERM, _raise_interrupted)
    try:
        summary = fn()
    except Interrupted as err:
        log.warning("%s interrupted (%s); the next start resumes from the newest checkpoint", name, err)
        return 143
    except UserError as err:
        opt_ml.write_exit_message(f"{name}: {err}", failure=True)
        log.error("%s failed: %s", name, err)
        return 2
    except Exception as err:  # noqa: BLE001 - every failure must reach SageMaker's FailureReason
        opt_ml.write_exit_message(f"{name}: {type(err).__name__}: {err}", failure=True)
        traceback.print_exc(file=sys.stderr)
        return 1
    finally:
        signal.signal(signal.SIGTERM, previous)
    if summary:
        opt_ml.write_exit_message(summary, failure=False)
    return 0
