"""`airflow dags test` of every DAG against the real stack (bounded mode for the stream)."""

from __future__ import annotations

import pytest

from tests.conftest import ROOT
from tests.integration.conftest import airflow_dags_test

DAG_IDS = sorted(p.stem for p in (ROOT / "dags").glob("*.py") if not p.name.startswith("_"))


@pytest.mark.parametrize("dag_id", DAG_IDS)
def test_dags_test(ctx, sandbox, dag_id):
    # Every DAG runs with conf that keeps it inside the test's sandbox where it has params.
    confs = {
        "stream_events": sandbox.stream_conf(ctx.settings.bucket),
        "demo_traffic": {"topic": sandbox.topic, "count": 2_000, "seed": 5},
        "stream_health": sandbox.supervision_conf(ctx.settings.bucket, topic=sandbox.topic),
        "stream_control": sandbox.supervision_conf(ctx.settings.bucket, action="restart"),
        "replay_dead_letters": {
            "topic": sandbox.topic,
            "dead_letter_prefix": sandbox.dead_letter_prefix,
            "pg_schema": sandbox.pg_schema,
        },
        # An event day with nothing landed: the run succeeds and leaves the tables alone.
        "compact_warehouse": {
            "lake_prefix": sandbox.lake_prefix,
            "warehouse_prefix": f"{sandbox.prefix}/warehouse",
            "pg_schema": sandbox.pg_schema,
            "day": "2026-11-01",
        },
        "maintain_warehouse": {
            "warehouse_prefix": f"{sandbox.prefix}/warehouse",
            "pg_schema": sandbox.pg_schema,
        },
        "reconcile": {
            "topic": sandbox.topic,
            "lake_prefix": sandbox.lake_prefix,
            "dead_letter_prefix": sandbox.dead_letter_prefix,
            "pg_schema": sandbox.pg_schema,
        },
    }
    assert airflow_dags_test(ctx, dag_id, confs.get(dag_id)) == "success"
