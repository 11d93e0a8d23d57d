"""Every DAG imports cleanly and follows the project's rules (README, Extending: DAGs declare)."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import ClassVar

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
    assert f"--accept-retention-gap={ACCEPT_GAP_ONCE}" in task.application_args

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


# What the Spark tasks' templates read besides params, as a run would give it.
XCOMS = {
    "window": {"since": "2026-11-30T00:00:00+00:00", "until": "2026-11-30T01:00:00+00:00"},
    "pick_day": "2026-11-30",
    "retention_guard": {"accept": False},
}


def spark_tasks(dagbag) -> list[tuple[str, str]]:
    from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

    return sorted(
        (dag_id, t.task_id)
        for dag_id, dag in dagbag.dags.items()
        for t in dag.tasks
        if isinstance(t, SparkSubmitOperator)
    )


def test_every_spark_app_has_a_job_spec_and_runs_with_its_s3_user(dagbag):
    from include import connections
    from include.spark.jobs import JOBS

    assert spark_tasks(dagbag), "no Spark task found"
    for dag_id, task_id in spark_tasks(dagbag):
        task = dagbag.dags[dag_id].get_task(task_id)
        job = JOBS[Path(task.application).name]
        assert task.s3_conn_id == job.S3_CONN, (dag_id, task_id)
    warehouse = {a for a, j in JOBS.items() if j.S3_CONN == connections.WAREHOUSE_S3}
    assert warehouse == {"compact_events.py", "maintain_warehouse.py", "rebuild_marts.py"}


@pytest.mark.parametrize(
    "dag_id",
    sorted({"compact_warehouse", "maintain_warehouse", "rebuild_marts", "reconcile",
            "replay_dead_letters", "stream_events"}),
)  # fmt: skip
def test_a_spark_tasks_rendered_command_line_is_one_its_app_reads(dagbag, dag_id):
    """The DAG writes the command line as templates, the app reads it with its job spec
    (include/spark/jobs.py): rendered with the DAG's default params, every value parses."""
    import jinja2

    from include.spark.jobs import JOBS

    dag = dagbag.dags[dag_id]
    tasks = [t for d, t in spark_tasks(dagbag) if d == dag_id]
    assert tasks, f"{dag_id} has no Spark task"

    class TI:
        try_number = 1

        def xcom_pull(self, task_ids: str):
            return XCOMS[task_ids]

    class Conn:
        extra_dejson: ClassVar[dict] = {"bootstrap.servers": "127.0.0.1:9092"}

    conns = type("Conns", (), {"__getattr__": lambda self, name: Conn()})()
    params = dag.params.dump()
    for task_id in tasks:
        task = dag.get_task(task_id)
        argv = [
            jinja2.Template(a).render(params=params, ti=TI(), conn=conns)
            for a in task.application_args
        ]
        job = JOBS[Path(task.application).name]
        spec = job.from_argv(argv)  # exits (SystemExit) naming the option it refuses
        assert job.from_argv(spec.to_argv()) == spec


def test_the_compaction_runs_with_the_heap_of_its_param(dagbag):
    """spark-submit gets ``spark.driver.memory`` from the ``driver_memory`` param, whose
    default is the job spec's (a day too large for it fails naming the param)."""
    import jinja2
    from airflow.sdk.definitions.param import ParamValidationError

    from include.spark.jobs import CompactJob

    dag = dagbag.dags["compact_warehouse"]
    conf = dag.get_task("compact").conf
    params = dag.params.dump()
    assert params["driver_memory"] == CompactJob.DRIVER_MEMORY
    rendered = jinja2.Template(conf["spark.driver.memory"]).render(params=params)
    assert rendered == CompactJob.DRIVER_MEMORY
    rendered = jinja2.Template(conf["spark.driver.memory"]).render(params={"driver_memory": "6g"})
    assert rendered == "6g"
    with pytest.raises(ParamValidationError):
        dag.params.get_param("driver_memory").resolve("3 gigabytes")
    # a driver that runs out of heap before it reports fails naming that param
    assert dag.get_task("compact").memory_param == "driver_memory"


def test_a_memory_param_named_in_a_heap_failure_sets_that_heap(dagbag):
    """A task that names a param in its out-of-heap failure (``memory_param``) has that param,
    and it is what sets its driver's heap."""
    from include.spark.submit import LakeSparkSubmitOperator

    named = [
        (dag, task)
        for dag in dagbag.dags.values()
        for task in dag.tasks
        if isinstance(task, LakeSparkSubmitOperator) and task.memory_param
    ]
    assert named, "no task names its memory param"
    for dag, task in named:
        assert task.memory_param in dag.params, (dag.dag_id, task.task_id)
        heap = (task.conf or {}).get("spark.driver.memory", "")
        assert heap.replace(" ", "") == f"{{{{params.{task.memory_param}}}}}", (dag.dag_id, heap)
