"""Every DAG imports cleanly and carries what operators of this project rely on."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from reelforge.settings import DAG_TAGS

DAGS_DIR = Path(__file__).resolve().parents[2] / "dags"
DAG_FILES = sorted(p for p in DAGS_DIR.glob("*.py") if not p.name.startswith("_"))
HEAVY_MODULES = {"torch", "diffusers", "transformers", "numpy", "cv2", "reelforge_sr"}


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(DAGS_DIR))


def test_there_are_dags():
    assert DAG_FILES, "dags/ holds no DAG files"


def test_every_dag_file_imports(dagbag):
    assert not dagbag.import_errors, f"import errors: {dagbag.import_errors}"
    files_with_dags = {Path(dag.fileloc).name for dag in dagbag.dags.values()}
    assert files_with_dags == {p.name for p in DAG_FILES}


def test_dags_have_owner_retries_tags_and_docs(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.doc_md and len(dag.doc_md.strip()) > 80, f"{dag_id}: doc_md missing"
        assert dag.tags, f"{dag_id}: no tags"
        assert set(dag.tags) <= DAG_TAGS, f"{dag_id}: tags {set(dag.tags) - DAG_TAGS} not in the list"
        for t in dag.tasks:
            assert t.owner and t.owner != "airflow", f"{dag_id}.{t.task_id}: owner not set"
            assert t.retries >= 2, f"{dag_id}.{t.task_id}: retries={t.retries} < 2"


def test_params_explain_themselves(dagbag):
    for dag_id, dag in dagbag.dags.items():
        for name in dag.params:
            param = dag.params.get_param(name)
            assert param.schema.get("title"), f"{dag_id}: param {name} lacks a title"
            assert param.description or param.schema.get("description"), f"{dag_id}: param {name} lacks a description"


@pytest.mark.parametrize("path", DAG_FILES, ids=lambda p: p.name)
def test_no_heavy_imports_at_top_level(path):
    tree = ast.parse(path.read_text())
    top_level = [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)]
    for node in top_level:
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        for name in names:
            assert name.split(".")[0] not in HEAVY_MODULES, f"{path.name} imports {name} at top level"


def test_every_deadline_uses_our_reference_and_a_configurable_topic(dagbag):
    """Airflow 3.3.2 cannot clear runs of a DAG with DAGRUN_QUEUED_AT (reelforge/deadlines.py), and an
    alert must go to the topic the deployment configures, never only to a default ARN."""
    from reelforge.deadlines import RunQueuedDeadline

    with_deadlines = 0
    for dag_id, dag in dagbag.dags.items():
        alerts = dag.deadline if isinstance(dag.deadline, list) else [dag.deadline] if dag.deadline else []
        for alert in alerts:
            with_deadlines += 1
            assert isinstance(alert.reference, RunQueuedDeadline), f"{dag_id}: deadline measured from {alert.reference}"
            kwargs = alert.callback.kwargs
            assert kwargs.get("topic_variable", "").endswith("_topic_arn"), f"{dag_id}: alert topic is not configurable"
            assert kwargs.get("workflow"), dag_id
    assert with_deadlines >= 4


def test_every_task_reports_failure_on_its_workflow_topic_with_the_same_fields(dagbag):
    """One failure message for every DAG (reelforge/dag_defaults.py): subscribers parse the same fields,
    from a topic the deployment configures."""
    from reelforge.dag_defaults import FAILURE_FIELDS

    problems = set()
    for dag_id, dag in dagbag.dags.items():
        for t in dag.tasks:
            callbacks = t.on_failure_callback if isinstance(t.on_failure_callback, list) else [t.on_failure_callback]
            notifiers = [c for c in callbacks if c is not None and hasattr(c, "message")]
            if not notifiers:
                problems.add(f"{dag_id}: no failure notification")
            for n in notifiers:
                if not (n.target_arn.startswith("{{ var.value.reelforge_") and n.target_arn.endswith("_topic_arn }}")):
                    problems.add(f"{dag_id}: failure topic {n.target_arn!r} is not a deployment setting")
                if missing := [f for f in FAILURE_FIELDS if f'"{f}": ' not in n.message]:
                    problems.add(f"{dag_id}: the failure message lacks {missing}")
    assert not problems, sorted(problems)
