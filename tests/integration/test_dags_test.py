"""`airflow dags test` of every DAG against the real stack.

Most DAGs are run by `airflow dags test` inside the integration test of what they do (the
stream, supervision, replay, reconcile, the warehouse); running them again here would only
repeat those minutes. This module runs the others, and checks that every DAG is run by one
test or the other, so a new DAG cannot go untested.
"""

from __future__ import annotations

import re

import pytest

from tests.conftest import ROOT
from tests.integration.conftest import airflow_dags_test

DAG_IDS = sorted(p.stem for p in (ROOT / "dags").glob("*.py") if not p.name.startswith("_"))
# DAG -> the integration test module that runs it through `airflow dags test`.
RUN_ELSEWHERE = {
    "stream_events": "test_pipeline.py",
    "stream_health": "test_supervision.py",
    "stream_control": "test_supervision.py",
    "replay_dead_letters": "test_replay.py",
    "reconcile": "test_reconcile.py",
    "compact_warehouse": "test_compaction.py",
    "maintain_warehouse": "test_compaction.py",
    "rebuild_marts": "test_compaction.py",
}


def test_every_dag_is_run_by_airflow_dags_test_somewhere():
    for dag_id, module in RUN_ELSEWHERE.items():
        source = (ROOT / "tests" / "integration" / module).read_text()
        call = re.compile(r"airflow_dags_(test|run)\(\s*ctx,\s*\"" + re.escape(dag_id) + '"')
        assert call.search(source), f"{module} does not run `airflow dags test {dag_id}`"
    assert set(RUN_ELSEWHERE) <= set(DAG_IDS)


@pytest.mark.parametrize("dag_id", [d for d in DAG_IDS if d not in RUN_ELSEWHERE])
def test_dags_test(ctx, sandbox, dag_id):
    # Every DAG runs with conf that keeps it inside the test's sandbox where it has params.
    confs = {
        "demo_traffic": {"topic": sandbox.topic, "count": 2_000, "seed": 5},
    }
    assert airflow_dags_test(ctx, dag_id, confs.get(dag_id)) == "success"
