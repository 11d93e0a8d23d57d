"""Every DAG imports cleanly and follows the project's rules (README, Extending: DAGs declare)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import pytest

from tests.conftest import ROOT

# Tasks that must not retry, and why; every other task is idempotent and retries at least twice.
NOT_RETRIED = {
    ("demo_traffic", "send"): "produces events: a retry would send them again",
    ("reconcile", "reconcile"): "its failure is a finding, reported once",
    ("stream_control", "operate"): "an operator's one-shot command: a failure goes back to them",
    ("stream_events", "gate"): "a guard: a refusal stops the launch",
    ("stream_events", "preflight"): "a guard: a refusal stops the launch",
    ("stream_events", "retention_guard"): "a guard: a refusal stops the launch",
    ("stream_events", "single_writer"): "a guard: a refusal stops the launch",
    ("stream_health", "assess"): "runs every 5 minutes: the next run re-assesses",
    ("stream_health", "act"): "acts on one assessment: a retry could act on a stale one",
}

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
        if (dag_id, task.task_id) in NOT_RETRIED:
            assert task.retries == 0, f"{task.task_id}: {NOT_RETRIED[dag_id, task.task_id]}"
        else:
            assert task.retries >= 2, f"{task.task_id}: idempotent, so retries >= 2"


@pytest.mark.parametrize(
    ("accept", "try_number", "rendered"),
    [
        (True, 1, "true"),
        (True, 2, "false"),
        (False, 1, "false"),
    ],
)
def test_an_accepted_retention_gap_holds_for_one_attempt(dagbag, accept, try_number, rendered):
    """The guard runs once per DAG run; its acceptance must not outlive the stream task's first
    attempt, or a retry could skip a gap nobody saw."""
    import jinja2

    from dags.stream_events import ACCEPT_GAP_ONCE

    task = dagbag.dags["stream_events"].get_task("stream_events")
    args = task.application_args
    assert args[args.index("--accept-retention-gap") + 1] == ACCEPT_GAP_ONCE

    class TI:
        def __init__(self) -> None:
            self.try_number = try_number

        def xcom_pull(self, task_ids: str) -> dict:
            assert task_ids == "retention_guard"
            return {"accept": accept}

    assert jinja2.Template(ACCEPT_GAP_ONCE).render(ti=TI()) == rendered


@pytest.mark.parametrize(
    "dag_id",
    [d for d in DAG_FILES if "data_interval" in (ROOT / "dags" / f"{d}.py").read_text()],
)
def test_a_dag_that_reads_its_data_interval_gets_a_non_empty_one(dagbag, dag_id):
    """Airflow 3 turns a cron string into a CronTriggerTimetable, whose scheduled runs have
    start = end: a task that works on its data interval (the reconcile window, the day to
    compact) would get an empty one on every scheduled run."""
    from airflow.timetables.base import TimeRestriction

    dag = dagbag.dags[dag_id]
    info = dag.timetable.next_dagrun_info(
        last_automated_data_interval=None,
        restriction=TimeRestriction(earliest=dag.start_date, latest=None, catchup=True),
    )
    assert info.data_interval.end > info.data_interval.start, dag.timetable
