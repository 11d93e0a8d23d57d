"""The DAG graph compared with a committed snapshot: any change to DAGs shows up as a diff.

Regenerate after an intended change: ``UPDATE_SNAPSHOTS=1 make test-unit``.
"""

from __future__ import annotations

import json
import os

from tests.conftest import ROOT

SNAPSHOT = ROOT / "tests" / "dags" / "snapshot.json"


def describe(dagbag) -> dict:
    out = {}
    for dag_id in sorted(dagbag.dag_ids):
        dag = dagbag.dags[dag_id]
        out[dag_id] = {
            "schedule": repr(dag.schedule)
            if isinstance(dag.schedule, str) or dag.schedule is None
            else type(dag.timetable).__name__,
            "catchup": dag.catchup,
            "max_active_runs": dag.max_active_runs,
            "tags": sorted(dag.tags),
            "params": sorted(dag.params.keys()),
            "tasks": {
                t.task_id: {
                    "operator": type(t).__name__,
                    "upstream": sorted(t.upstream_task_ids),
                    "retries": t.retries,
                }
                for t in sorted(dag.tasks, key=lambda t: t.task_id)
            },
        }
    return out


def test_graph_matches_snapshot(dagbag):
    current = describe(dagbag)
    if os.environ.get("UPDATE_SNAPSHOTS") == "1":
        SNAPSHOT.write_text(json.dumps(current, indent=2, sort_keys=True) + "\n")
    assert SNAPSHOT.exists(), "no snapshot yet: run UPDATE_SNAPSHOTS=1 make test-unit and commit it"
    assert current == json.loads(SNAPSHOT.read_text())
