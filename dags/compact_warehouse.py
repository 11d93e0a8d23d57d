"""
### Nightly compaction: the lake's day -> Iceberg warehouse, marts, checks

At 02:30 UTC, for the event day that just ended (the run's data interval starts on it),
`spark_apps/compact_events.py` reads the day's committed raw files (through the file sink's
metadata), dedupes them by `event_id`, checks the contract's expectations (no write when one
fails), writes the day on an audit branch of the Iceberg table `lake.<namespace>.events`
(partitioned by day, sorted, files near `target_file_mb`), verifies it there (rows = distinct
source events, revenue, unique ids) and only then publishes it to `main` (a failed check
publishes nothing; write-audit-publish, docs/warehouse.md), rebuilds the
day's marts (`daily_sales_by_category`, `daily_funnel`) and records the run in Postgres
`compaction_runs`. Re-running a day gives the same tables. It then appends to every earlier
day the events of the raw files it got since its last verified run (late events: found in the
sink's log, compared with the files each run read). Then the raw files that verified
runs read, of days `raw_retention_days` old, are expired (off by default); a file no run read
is kept.

Backfill: `airflow backfill create --dag-id compact_warehouse --from-date ... --to-date ...`
(or `make compact DAY=...` for one day); scheduler catchup from a date:
`RTAP_COMPACTION_CATCHUP=true RTAP_COMPACTION_START=YYYY-MM-DD`. The catalog is Iceberg's JDBC catalog in the
analytics Postgres; pyiceberg reads the same tables (docs/warehouse.md).

Connections: `spark_default`, `warehouse_s3` (compaction's S3 user: reads the lake, writes the
warehouse), `lake_s3` (raw retention), `analytics_db`.
"""

from __future__ import annotations

import os
from datetime import datetime

from airflow.sdk import DAG, Param, task
from airflow.timetables.interval import CronDataIntervalTimetable

from include import dag_params, pipeline
from include.spark.jobs import CompactJob
from include.spark.submit import LakeSparkSubmitOperator
from include.supervision.notify import PlatformNotifier
from include.warehouse import catalog

DAG_ID = "compact_warehouse"
_retention = os.environ.get("RTAP_RAW_RETENTION_DAYS")
# Catchup from a start date (off by default: unpausing a new install would start a run for
# every day since the start date). Backfills work either way (`airflow backfill create`).
_start = os.environ.get("RTAP_COMPACTION_START")  # YYYY-MM-DD
_catchup = os.environ.get("RTAP_COMPACTION_CATCHUP", "false").lower() == "true"

with DAG(
    dag_id=DAG_ID,
    # The interval [D 02:30, D+1 02:30) compacts day D: it runs 2.5 h after D ended, so
    # events that arrive a little late are in.
    schedule=CronDataIntervalTimetable("30 2 * * *", timezone="UTC"),
    start_date=datetime.fromisoformat(_start) if _start else datetime(2026, 1, 1),
    catchup=_catchup,
    max_active_runs=1,
    tags=["warehouse", "batch"],
    doc_md=__doc__,
    default_args={
        "owner": "platform",
        "on_failure_callback": PlatformNotifier(),
        **dag_params.idempotent_retries(),
    },
    params={
        **dag_params.shared(
            "bucket",
            "lake_prefix",
            "warehouse_prefix",
            "namespace",
            "marts_namespace",
            "pg_schema",
        ),
        "day": Param(
            None, type=["null", "string"], format="date", description="override: YYYY-MM-DD"
        ),
        "target_file_mb": Param(float(pipeline.TARGET_FILE_MB), type="number", exclusiveMinimum=0),
        "arrow_max_mb": Param(
            float(pipeline.COMPACTION_ARROW_MAX_MB),
            type="number",
            minimum=0,
            description="a day of at most this many MiB of raw files is compacted by Arrow in "
            "the driver, a larger one by Spark's executors (0: always Spark)",
        ),
        "driver_memory": Param(
            CompactJob.DRIVER_MEMORY,
            type="string",
            pattern=dag_params.MEMORY_PATTERN,
            description="the compaction's heap (spark.driver.memory), e.g. 3g or 2560m",
        ),
        "raw_retention_days": Param(
            int(_retention) if _retention else None,
            type=["null", "integer"],
            minimum=1,
            description="expire raw files of days verified this many days ago (null: off)",
        ),
    },
) as dag:

    @task
    def pick_day(params: dict, data_interval_start=None) -> str:
        from include.warehouse import tasks

        return tasks.pick_day(params, data_interval_start)

    compact = LakeSparkSubmitOperator(
        task_id="compact",
        report=True,
        application=CompactJob.application(),
        name="compact_events",
        conf={"spark.driver.memory": "{{ params.driver_memory }}"},
        memory_param="driver_memory",  # named when the driver runs out of heap
        application_args=CompactJob.templated(
            day="{{ ti.xcom_pull(task_ids='pick_day') }}",
            lake_path="s3a://{{ params.bucket }}/{{ params.lake_prefix }}",
            **catalog.WAREHOUSE_TEMPLATES,
            target_file_mb="{{ params.target_file_mb }}",
            arrow_max_mb="{{ params.arrow_max_mb }}",
        ),
    )

    @task
    def expire_raw(params: dict) -> dict[str, int]:
        from include.warehouse import tasks

        return tasks.expire_raw(params)

    pick_day() >> compact >> expire_raw()
