"""Every DAG imports cleanly and follows the project's rules (see docs/style: DAGs declare)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import ROOT

DAG_FILES = sorted(p.stem for p in (ROOT / "dags").glob("*.py") if not p.name.startswith("_"))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}


def test_every_file_defines_its_dag(dagbag):
    assert sorted(dagbag.dag_ids) == DAG_FILES


@pytest.mark.parametrize("dag_id", DAG_FILES)
def test_policy(dagbag, dag_id):
    dag = dagbag.dags[dag_id]
    assert Path(dag.fileloc).stem == dag_id, "dag_id must equal the file name"
    assert dag.tags, "every DAG is tagged"
    assert dag.doc_md and len(dag.doc_md.strip()) > 40, (
        "every DAG documents itself (doc_md=__doc__)"
    )
    assert dag.catchup is False or dag.schedule is not None, "catchup is explicit"
    assert isinstance(dag.start_date, datetime) and dag.start_date.year >= 2026, "fixed start_date"
    for task in dag.tasks:
        assert task.owner and task.owner != "airflow", f"{task.task_id}: set an owner"
