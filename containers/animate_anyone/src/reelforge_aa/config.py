"""Render a stage config: template + run variables + dotted overrides → the YAML the trainer reads.

A template is Moore-AnimateAnyone's YAML with ``${NAME}`` placeholders. A string value that is
exactly one placeholder takes the variable's own type (``seed: ${AA_SEED}`` stays an int); inside
longer strings the value is substituted as text. Overrides are ``{"solver.learning_rate": 3e-5}``:
each dotted key must already exist in the template (a typo must not silently train with the
default), except under ``smoke.`` which the smoke payload reads and Moore's trainers ignore.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

_PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*$")
FREE_NAMESPACES = ("smoke",)


class ConfigError(ValueError):
    """The template, a variable or an override is wrong; retrying will not help."""


def template_path(stage: str) -> Path:
    """The packaged template of a stage (``stage1`` / ``stage2``)."""
    if stage not in ("stage1", "stage2"):
        raise ConfigError(f"unknown stage {stage!r}")
    return Path(str(resources.files("reelforge_aa.configs").joinpath(f"{stage}.yaml")))


def _substitute(node: Any, variables: Mapping[str, Any], missing: set[str]) -> Any:
    if isinstance(node, dict):
        return {k: _substitute(v, variables, missing) for k, v in node.items()}
    if isinstance(node, list):
        return [_substitute(v, variables, missing) for v in node]
    if not isinstance(node, str):
        return node
    whole = _PLACEHOLDER.fullmatch(node)
    if whole:
        name = whole.group(1)
        if name not in variables:
            missing.add(name)
            return node
        return variables[name]

    def text(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in variables:
            missing.add(name)
            return match.group(0)
        return str(variables[name])

    return _PLACEHOLDER.sub(text, node)


def _quote_placeholders(text: str) -> str:
    """``key: ${X}`` is not a YAML string: quote bare placeholders so the tree can be loaded first."""
    return re.sub(r"(:\s+)(\$\{[A-Z][A-Z0-9_]*\})(\s*(#.*)?)$", r"\1'\2'\3", text, flags=re.M)


def load_template(path: str | Path) -> dict[str, Any]:
    data = yaml.safe_load(_quote_placeholders(Path(path).read_text()))
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config template must be a mapping")
    return data


def apply_overrides(config: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Set each dotted key; unknown keys are refused outside :data:`FREE_NAMESPACES`."""
    out = copy.deepcopy(config)
    for key, value in overrides.items():
        if not isinstance(key, str) or not _KEY.match(key):
            raise ConfigError(f"invalid override key {key!r} (use dotted names like solver.learning_rate)")
        parts = key.split(".")
        free = parts[0] in FREE_NAMESPACES
        node = out
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if child is None and free:
                child = node[part] = {}
            if not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"override {key!r}: {where!r} is not a section of the config")
            node = child
        if parts[-1] not in node and not free:
            raise ConfigError(f"override {key!r}: no such key in the template (typo?)")
        if isinstance(node.get(parts[-1]), dict) and not isinstance(value, dict):
            raise ConfigError(f"override {key!r} would replace a whole section with {value!r}")
        node[parts[-1]] = value
    return out


def render(template: str | Path, variables: Mapping[str, Any], overrides: Mapping[str, Any] | None = None) -> dict:
    """The final config as a dict; every placeholder must be given."""
    missing: set[str] = set()
    config = _substitute(load_template(template), variables, missing)
    if missing:
        raise ConfigError(f"{template}: no value for {', '.join(sorted(missing))}")
    return apply_overrides(config, overrides or {})


def dump(config: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(config), sort_keys=False, default_flow_style=False)


def get(config: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
    node: Any = config
    for part in dotted.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return default
        node = node[part]
    return node
