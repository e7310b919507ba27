"""Layers: each workflow package stands alone on the shared modules; shared modules import no workflow.

``plugins/reelforge/<workflow>/`` (sr, stylegan2, avatar, animate_anyone) may import
``reelforge.<shared module>`` and itself, never another workflow; shared modules (everything else
under ``plugins/reelforge``) import no workflow package. DAG files may import anything.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PLUGINS = Path(__file__).resolve().parents[2] / "plugins" / "reelforge"
WORKFLOWS = frozenset({"sr", "stylegan2", "avatar", "animate_anyone"})
MAX_LINES = 400


def imported_modules(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return found


def modules() -> list[Path]:
    return sorted(PLUGINS.rglob("*.py"))


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PLUGINS)))
def test_a_module_imports_only_its_own_workflow_and_shared_modules(path):
    rel = path.relative_to(PLUGINS)
    own = rel.parts[0] if len(rel.parts) > 1 and rel.parts[0] in WORKFLOWS else None
    sideways = sorted(m for m in imported_modules(path)
                      if m.startswith("reelforge.") and m.split(".")[1] in WORKFLOWS and m.split(".")[1] != own)
    assert not sideways, f"{rel} imports {sideways}: move what it needs into a shared module"


@pytest.mark.parametrize("path", modules(), ids=lambda p: str(p.relative_to(PLUGINS)))
def test_a_module_is_small_or_says_why_not(path):
    lines = len(path.read_text().splitlines())
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    assert lines <= MAX_LINES or "longer than" in doc, f"{path.relative_to(PLUGINS)}: {lines} lines"
