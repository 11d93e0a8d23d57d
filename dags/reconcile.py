"""
### Reconcile: account for every produced event

Every hour, for the producer runs recorded in the hour before last (an hour to settle, so the
stream has processed them), `spark_apps/reconcile.py` finds each event at the Kafka
coordinates the broker gave it: landed in the lake, dead-lettered, quarantined, a dropped
duplicate copy, deleted by retention in a gap an operator accepted (`lost_accepted`), or
**missing**; and events landed **more than once**. The task fails (alert) when anything is
missing or duplicated; the log has the table per run.

Params: `since` / `until` (ISO times) override the window; `settle_minutes` shifts the
scheduled window back; the names keep it inside a sandbox when tests run it.
"""

from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param, task
from airflow.timetables.interval import CronDataIntervalTimetable

from include import dag_params
from include.spark.jobs import ReconcileJob
from include.spark.submit import LakeSparkSubmitOperator
from include.supervision.notify import PlatformNotifier

DAG_ID = "reconcile"

with DAG(
    dag_id=DAG_ID,
    # A data-interval timetable: Airflow 3's default for a cron string (CronTriggerTimetable)
    # gives scheduled runs an empty interval (start = end), so the window was always empty.
    schedule=CronDataIntervalTimetable("0 * * * *", timezone="UTC"),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["supervision", "quality"],
    doc_md=__doc__,
    default_args={
        "owner": "platform",
        "on_failure_callback": PlatformNotifier(),
        **dag_params.idempotent_retries(),
    },
    params={
        **dag_params.shared("topic", "bucket", "lake_prefix", "dead_letter_prefix", "pg_schema"),
        "since": Param(
            None, type=["null", "string"], description="ISO time, e.g. 2026-11-25T00:00Z"
        ),
        "until": Param(None, type=["null", "string"], description="ISO time"),
        "settle_minutes": Param(60, type="integer", minimum=0),
    },
) as dag:

    @task
    def window(params: dict, data_interval_start=None, data_interval_end=None) -> dict:
        from include.supervision.reconcile import window as pick

        return pick(params, data_interval_start, data_interval_end)

    reconcile = LakeSparkSubmitOperator(
        task_id="reconcile",
        retries=0,  # its failure is a finding (events unaccounted for): not re-run, reported
        report=True,
        application=ReconcileJob.application(),
        name="reconcile",
        application_args=ReconcileJob.templated(
            topic="{{ params.topic }}",
            lake_path="s3a://{{ params.bucket }}/{{ params.lake_prefix }}",
            dead_letter_path="s3a://{{ params.bucket }}/{{ params.dead_letter_prefix }}",
            since="{{ ti.xcom_pull(task_ids='window')['since'] }}",
            until="{{ ti.xcom_pull(task_ids='window')['until'] }}",
            pg_schema="{{ params.pg_schema }}",
        ),
    )

    window() >> reconcile
