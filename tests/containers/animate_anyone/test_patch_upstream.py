"""The Moore-AnimateAnyone patch against the real pinned trainers (``../shared/upstream``), not a copy of its text.

What the patch must give, checked on the patched source's syntax tree: every rank calls
``accelerator.save_state`` (DeepSpeed ZeRO shards the optimizer state), between two barriers, and the
main process marks the checkpoint complete after the second barrier. A changed upstream fails loudly,
naming the file.
"""

from __future__ import annotations

import ast
import importlib.util
import os
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
PATCH = ROOT / "containers" / "animate_anyone" / "patches" / "patch_moore.py"
UPSTREAM = Path(os.environ.get("REELFORGE_UPSTREAM_DIR", ROOT.parent / "shared" / "upstream"))
TARBALL = UPSTREAM / "Moore-AnimateAnyone-980bf97.tar.gz"  # the commit containers/animate_anyone pins
TRAINERS = ("train_stage_1.py", "train_stage_2.py")


@pytest.fixture(scope="module")
def patch_moore():
    spec = importlib.util.spec_from_file_location("patch_moore", PATCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def pinned() -> dict[str, str]:
    if not TARBALL.is_file():
        pytest.skip(f"pinned upstream snapshot not found: {TARBALL}")
    with tarfile.open(TARBALL) as tar:
        return {name: tar.extractfile(f"Moore-AnimateAnyone/{name}").read().decode() for name in TRAINERS}


def _is_main_process_test(node: ast.AST) -> bool:
    return isinstance(node, ast.If) and "is_main_process" in ast.unparse(node.test)


def _calls(tree: ast.AST, attr: str) -> list[tuple[ast.Call, list[ast.AST]]]:
    """Every ``<x>.<attr>(...)`` call with the chain of statements enclosing it."""
    found = []

    def walk(node: ast.AST, parents: list[ast.AST]) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.Call) and isinstance(child.func, ast.Attribute) and child.func.attr == attr:
                found.append((child, parents))
            walk(child, [*parents, child] if isinstance(child, ast.stmt) else parents)

    walk(tree, [])
    return found


@pytest.mark.parametrize("name", TRAINERS)
def test_the_pinned_trainer_saves_on_every_rank_after_the_patch(name, pinned, patch_moore):
    before = ast.parse(pinned[name])
    assert all(any(_is_main_process_test(p) for p in parents) for _, parents in _calls(before, "save_state")), \
        "upstream now saves on every rank: the patch may be obsolete"
    patched = patch_moore.patch_text(pinned[name], name)
    tree = ast.parse(patched)  # still valid Python
    compile(patched, name, "exec")
    saves = _calls(tree, "save_state")
    assert saves, "no save_state left"
    for call, parents in saves:
        assert not any(_is_main_process_test(p) for p in parents), f"{name}:{call.lineno} saves on rank 0 only"
    # barriers on both sides of the save, then the completion marker on the main process
    lines = patched.splitlines()
    (call, _), = [s for s in saves if "reelforge" in lines[s[0].lineno - 1]]
    window = lines[call.lineno - 3:call.lineno + 4]
    assert sum("accelerator.wait_for_everyone()" in ln for ln in window) == 2, window
    marker = patched.index("reelforge.complete")
    assert patched.rindex("accelerator.wait_for_everyone()", 0, marker) > patched.index(lines[call.lineno - 1])
    assert patch_moore.patch_text(patched, name) == patched  # idempotent: a rebuild does not patch twice


@pytest.mark.parametrize("name", TRAINERS)
def test_a_changed_upstream_fails_the_build_naming_the_file(name, pinned, patch_moore):
    changed = pinned[name].replace("accelerator.save_state(save_path)", "accelerator.save_state(path=save_path)")
    with pytest.raises(SystemExit, match=rf"{name}: expected the checkpointing block exactly once, found 0"):
        patch_moore.patch_text(changed, name)


def test_main_patches_both_trainers_in_a_checkout(tmp_path, pinned, patch_moore, capsys):
    for name, text in pinned.items():
        (tmp_path / name).write_text(text)
    patch_moore.main(str(tmp_path))
    assert all("reelforge.complete" in (tmp_path / n).read_text() for n in TRAINERS)
    assert capsys.readouterr().out.count("patched ") == 2
