"""Sweep grids, config overrides and per-run names: pure functions (unit-tested on their own).

Every sweep run gets ``exp_name = sweep-<index>-<6 hex of its point>`` under
``<cluster work root>/animate-anyone/<training id>/stage1/``, where the training id is derived from
the DAG run: two runs (or two sweep points) never share a directory, and every try of the same run
and index finds the same one — which is how a retry resumes.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from collections.abc import Mapping
from typing import Any

_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
#: Keys the pipeline sets itself (paths, names, resume): not overridable from the form.
RESERVED_KEYS = frozenset(
    {"output_dir", "exp_name", "resume_from_checkpoint", "stage1_ckpt_dir", "stage1_ckpt_step", "data.meta_paths"}
)


class SweepError(ValueError):
    """The sweep grid or the overrides are invalid; retrying will not help."""


def _scalar(value: Any) -> bool:
    return value is None or isinstance(value, str | int | float | bool)


def validate_overrides(overrides: Any, what: str = "config overrides") -> dict[str, Any]:
    if overrides in (None, ""):
        return {}
    if isinstance(overrides, str):
        try:
            overrides = json.loads(overrides)
        except json.JSONDecodeError as err:
            raise SweepError(f"{what}: not JSON: {err}") from err
    if not isinstance(overrides, Mapping):
        raise SweepError(f"{what} must be an object of dotted keys, e.g. {{\"solver.learning_rate\": 3e-5}}")
    out: dict[str, Any] = {}
    for key, value in overrides.items():
        if not isinstance(key, str) or not _KEY.match(key):
            raise SweepError(f"{what}: invalid key {key!r} (dotted names like solver.max_train_steps)")
        if key in RESERVED_KEYS:
            raise SweepError(f"{what}: {key!r} is set by the pipeline and cannot be overridden")
        if not (_scalar(value) or (isinstance(value, list) and all(_scalar(v) for v in value))):
            raise SweepError(f"{what}: {key!r} must be a number, string, boolean or a list of those")
        out[key] = value
    return out


def expand_grid(grid: Any, max_runs: int) -> list[dict[str, Any]]:
    """Cartesian product of ``{"key": [values...]}`` in the grid's key order; ``{}`` → one run."""
    grid = validate_overrides(grid, "sweep grid")
    axes = []
    for key, values in grid.items():
        if not isinstance(values, list) or not values:
            raise SweepError(f"sweep grid: {key!r} needs a non-empty list of values")
        if len({json.dumps(v, sort_keys=True) for v in values}) != len(values):
            raise SweepError(f"sweep grid: {key!r} lists a value twice")
        axes.append([(key, v) for v in values])
    points = [dict(combo) for combo in itertools.product(*axes)] if axes else [{}]
    if len(points) > max_runs:
        raise SweepError(f"sweep grid has {len(points)} runs, more than the limit of {max_runs}")
    return points


def point_digest(point: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(point, sort_keys=True).encode()).hexdigest()[:6]


def exp_name(index: int, point: Mapping[str, Any]) -> str:
    return f"sweep-{index:02d}-{point_digest(point)}"


def training_id(dag_id: str, run_id: str) -> str:
    """A readable, file-system safe id of one DAG run (stable across tries)."""
    digest = hashlib.sha256(f"{dag_id}\0{run_id}".encode()).hexdigest()[:8]
    base = _UNSAFE.sub("-", run_id).strip("-.")[:48] or "run"
    return f"{base}-{digest}"


def merged(*layers: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for layer in layers:
        out.update(layer)
    return out
