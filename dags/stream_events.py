"""
### Stream events: Kafka -> lake (Parquet on S3) + Postgres aggregates

The launcher of the long-running stream: `@continuous` with one active run, so while this
DAG is unpaused a driver runs (or is being relaunched). It runs `spark_apps/stream_events.py`
through `SparkSubmitOperator` (client mode; the master comes from the `spark_default`
connection) after the schema's migrations, a gate and three preflight checks:

1. **migrate** — the analytics schema (`pg_schema`) brought up to date, the tables of the live
   aggregates that `aggregate_modules` add included (`include/analytics/migrations/`);
2. **gate** — waits (a sensor, rescheduled) while an operator stopped the stream or
   supervision halted it (`stream_control`), and halts it with an alert when driver runs keep
   failing (a crash loop: `max_restarts` failures within `restart_window_min`) while Kafka and
   S3 answer; while one of them does not, it waits for it instead (docs/supervision.md);
3. **preflight** — the topic and the bucket exist; every query's checkpoint is readable,
   consistent and was written for this topic; a first release's root (four queries) is
   refused until `make upgrade` turned it into a resume plan (docs/deployment.md);
4. **retention_guard** — no partition lost, to retention, offsets the checkpoint has not read.
   On a gap the run stops and names the partitions and offset ranges. To continue past it
   (logged as an operator action): `stream_control` with `action=accept_retention_gap`, or a
   run of this DAG with `accept_retention_gap`. The acceptance holds for the stream task's
   first attempt only (a retry does not skip gaps the guard never showed);
5. **single_writer** — no live driver holds the checkpoint's lease (the driver itself takes
   the lease too, so a second driver is refused even if Airflow thinks the first one dead).

The stream task retries after a fixed delay and has no execution timeout: a continuous
run lives until stopped; a restart resumes from the checkpoints. The `stream_health` DAG
watches it and restarts a stalled driver; `stream_control` stops or restarts it gracefully.

Params:

* `mode` — `continuous` runs until stopped; `bounded` drains what is in the topic and exits
  (used by `airflow dags test`, the demo and the tests);
* `topic`, `bucket`, `lake_prefix`, `dead_letter_prefix`, `checkpoint_prefix`, `pg_schema` —
  where to read and write (tests use their own);
* `accept_retention_gap` — operator action after the retention guard stopped a run;
* `max_restarts`, `restart_window_min` — the crash-loop rule of the gate;
* `gate_timeout_s` — fail the run instead of waiting longer than this at the gate (0: wait);
* `aggregate_modules` — Python modules that register more live aggregates (their tables are
  created by the migrate task; docs/architecture.md, "Adding a live aggregate");
* `sink_log_retention` — how long the lake's and the dead letters' `_spark_metadata` logs keep
  an entry (default 7 days) before it moves to the log's archive; readers see both
  (docs/architecture.md, "The sink logs, bounded");
* `engine` — how each micro-batch runs: `auto` (the default: the engine the checkpoint was
  started with, else `columnar` on a local master and `rows` on a cluster), `columnar` or
  `rows` (docs/architecture.md, "The columnar core").

Connections: `kafka_default`, `spark_default`, `lake_s3`, `analytics_db`.
"""

from __future__ import annotations

import os
from datetime import datetime, timedelta

from airflow.sdk import DAG, Param, PokeReturnValue, task

from include import connections, dag_params, pipeline
from include.spark.jobs import ENGINES, StreamJob
from include.spark.submit import LakeSparkSubmitOperator
from include.supervision.notify import PlatformNotifier

# An accepted retention gap is drained by the first attempt only: a retry renders "false", so it
# cannot skip a gap the guard (which runs once per DAG run) never showed anyone; a gap still
# there then fails the retry, and the next run's guard names it again.
ACCEPT_GAP_ONCE = (
    "{{ 'true' if ti.xcom_pull(task_ids='retention_guard')['accept'] and ti.try_number == 1 "
    "else 'false' }}"
)

DAG_ID = "stream_events"
BOOTSTRAP = f"{{{{ conn.{connections.KAFKA}.extra_dejson['bootstrap.servers'] }}}}"

with DAG(
    dag_id=DAG_ID,
    schedule="@continuous",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["streaming", "spark", "supervision"],
    doc_md=__doc__,
    default_args={"owner": "platform", "on_failure_callback": PlatformNotifier()},
    params={
        "mode": Param(
            "continuous", enum=["continuous", "bounded"], description="bounded drains and exits"
        ),
        **dag_params.shared(
            "topic",
            "bucket",
            "lake_prefix",
            "dead_letter_prefix",
            "checkpoint_prefix",
            "pg_schema",
            "max_restarts",
            "restart_window_min",
        ),
        "trigger": Param(pipeline.STREAM_TRIGGER, type="string"),
        "accept_retention_gap": Param(
            False,
            type="boolean",
            description="operator action: continue past offsets that retention deleted unread",
        ),
        "gate_timeout_s": Param(0, type="integer", minimum=0),
        "engine": Param(
            StreamJob.default("engine"),
            type="string",
            enum=list(ENGINES),
            description="how a micro-batch runs: auto (the engine the checkpoint was started "
            "with, else columnar where it can run), columnar (Arrow batches in Python; a local "
            "master only) or rows (docs/architecture.md, 'The columnar core')",
        ),
        "sink_log_retention": Param(
            StreamJob.default("sink_log_retention"),
            type="string",
            description="how long the file sinks' logs keep an entry before it moves to their "
            "archive, which every reader also reads (spark_apps/sink_log.py)",
        ),
        "aggregate_modules": Param(
            "",
            type="string",
            pattern=r"^\s*([A-Za-z_][\w.]*(\s*,\s*[A-Za-z_][\w.]*)*)?\s*$",
            description="comma-separated Python modules that register more live aggregates "
            "(include.analytics.store.register); importable by the driver",
        ),
    },
) as dag:

    @task(retries=2)
    def migrate(params: dict) -> list[str]:
        from include.supervision import tasks

        return tasks.migrate(params)

    @task.sensor(poke_interval=30, timeout=timedelta(days=30), mode="reschedule")
    def gate(params: dict, dag_run=None) -> PokeReturnValue:
        from include.supervision import tasks

        return PokeReturnValue(is_done=tasks.gate(params, dag_run))

    @task
    def preflight(params: dict) -> None:
        from include.supervision import tasks

        tasks.preflight(params)

    @task
    def retention_guard(params: dict, dag_run=None) -> dict:
        from include.supervision import tasks

        return tasks.retention_guard(params, dag_run)

    @task
    def single_writer(params: dict) -> str:
        from include.supervision import tasks

        return tasks.single_writer(params)

    stream_events = LakeSparkSubmitOperator(
        task_id="stream_events",
        application=StreamJob.application(),
        name="stream_events",
        kafka_conn_id=connections.KAFKA,
        retries=4,
        retry_delay=timedelta(
            seconds=float(
                os.environ.get("RTAP_STREAM_RETRY_DELAY_S", pipeline.STREAM_RETRY_DELAY_S)
            )
        ),
        # Fixed: Airflow's back-off grows with the try number of a run that lives for days.
        retry_exponential_backoff=False,
        execution_timeout=None,
        on_retry_callback=PlatformNotifier(level="warning"),
        # A try after a scheduler crash adopts the driver it orphaned (docs/supervision.md).
        before_submit="include.supervision.tasks:await_orphaned_driver",
        application_args=StreamJob.templated(
            bootstrap_servers=BOOTSTRAP,
            topic="{{ params.topic }}",
            lake_path="s3a://{{ params.bucket }}/{{ params.lake_prefix }}",
            dead_letter_path="s3a://{{ params.bucket }}/{{ params.dead_letter_prefix }}",
            checkpoint_root="s3a://{{ params.bucket }}/{{ params.checkpoint_prefix }}",
            mode="{{ params.mode }}",
            trigger="{{ params.trigger }}",
            pg_schema="{{ params.pg_schema }}",
            accept_retention_gap=ACCEPT_GAP_ONCE,
            aggregate_modules="{{ params.aggregate_modules }}",
            engine="{{ params.engine }}",
            sink_log_retention="{{ params.sink_log_retention }}",
        ),
    )

    migrate() >> gate() >> preflight() >> retention_guard() >> single_writer() >> stream_events
