"""Layers: each workflow package stands alone on the shared modules; shared modules import no workflow.

``plugins/reelforge/<workflow>/`` (sr, stylegan2, avatar, animate_anyone) may import
``reelforge.<shared module>`` and itself, never another workflow; shared modules (everything else
under ``plugins/reelforge``) import no workflow package. DAG files may import anything.

One file name per role in every workflow package: ``settings.py`` (its Variables, DAG id and SNS topic
Variable), ``watch.py`` (what counts as its upload), ``tasks.py`` (the bodies of its main DAG's tasks),
``<dag>_tasks.py`` for a second DAG's.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PLUGINS = Path(__file__).resolve().parents[2] / "plugins" / "reelforge"
WORKFLOWS = frozenset({"sr", "stylegan2", "avatar", "animate_anyone"})
MAX_LINES = 400
ROLES = ("settings.py", "watch.py", "tasks.py")
#: Names other packages once used for these roles.
OLD_ROLE_NAMES = ("config.py", "prepare.py", "training_run.py", "reconcile.py", "weekly.py", "watches.py")


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


@pytest.mark.parametrize("workflow", sorted(WORKFLOWS))
def test_a_workflow_package_names_each_role_the_same_way(workflow):
    package = PLUGINS / workflow
    assert [r for r in ROLES if not (package / r).is_file()] == [], f"{workflow} lacks a role module"
    assert [p.name for p in package.glob("*.py") if p.name in OLD_ROLE_NAMES] == []
    tree = ast.parse((package / "settings.py").read_text())
    names = {t.id for node in tree.body if isinstance(node, ast.Assign) for t in node.targets
             if isinstance(t, ast.Name)}
    assert {"DAG_ID", "TOPIC_VARIABLE", "MAX_ACTIVE_RUNS"} <= names, f"{workflow}/settings.py"


def test_shared_modules_hold_no_workflow_settings():
    shared = (PLUGINS / "settings.py").read_text()
    assert not [w for w in WORKFLOWS if f"reelforge_{w}_" in shared], "a workflow's Variable in reelforge/settings.py"
