"""The end-to-end demo of `make run`: topics -> events -> stream (via Airflow) -> summary.

Every step goes through the real services: topics are provisioned by the ``kafka_topics``
DAG; the stream runs continuously as the ``stream_events`` DAG's SparkSubmitOperator task
(an ``@continuous`` DAG, supervised by ``stream_health``); demo events go in through the
``demo_traffic`` DAG; once the stream's progress reaches the topic's end, the summary reads the
lake back with Spark through the file sink's metadata. The stream keeps running afterwards.
"""

from __future__ import annotations

import time
from datetime import UTC, date, datetime, timedelta

from devstack import environment
from devstack.airflow_api import AirflowApi
from devstack.services import Context
from devstack.spark import lake_report
from include import pipeline
from include.analytics import store


class DemoError(RuntimeError):
    """A step of the demo failed; the message says which and where its logs are."""


def _say(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def api(ctx: Context) -> AirflowApi:
    return AirflowApi(
        ctx.settings.airflow_url, environment.AIRFLOW_ADMIN_USER, ctx.secrets.airflow_admin_password
    )


def run_dag(
    client: AirflowApi, dag_id: str, conf: dict | None = None, timeout: float = 900
) -> None:
    client.wait_for_dag(dag_id)
    client.unpause(dag_id)
    run_id = client.trigger(dag_id, conf)
    _say(f"triggered {dag_id} ({run_id}); waiting")
    t0 = time.monotonic()
    state = client.wait_for_run(dag_id, run_id, timeout)
    if state != "success":
        tasks = client.task_states(dag_id, run_id)
        raise DemoError(
            f"DAG {dag_id} run {run_id} ended {state}; task states: {tasks}. Task logs are under "
            "the Airflow UI (Grid view) and <state>/airflow/logs"
        )
    _say(f"{dag_id} succeeded in {time.monotonic() - t0:.0f}s")


OPERATOR_DAGS = ("stream_control", "replay_dead_letters")
# On their schedules from the first start (RTAP_SCHEDULES=off leaves them paused): the nightly
# compaction (catchup off: unpausing runs the latest interval, then one a night), the weekly
# maintenance and the hourly reconcile.
SCHEDULED_DAGS = ("compact_warehouse", "maintain_warehouse", "reconcile")
# The demo's history: this many past days of traffic (a daily curve each), compacted into the
# warehouse by a backfill of compact_warehouse, so the dashboard's History page has days to show.
HISTORY_DAYS = 3
HISTORY_EVENTS_PER_DAY = 3_000


def run(ctx: Context, events: int, seed: int | None) -> bool:
    client = api(ctx)
    client.login()  # proves the admin login works before we rely on it
    run_dag(client, "kafka_topics")

    # The stream runs continuously under Airflow's supervision: unpausing its launcher (an
    # @continuous DAG) starts it, and the health check watches it every few minutes.
    for dag_id in ("stream_events", "stream_health"):
        client.wait_for_dag(dag_id)
        client.unpause(dag_id)
    _say("stream_events (continuous, supervised by stream_health) is on")
    # The operator's levers are live from the first start (they run only when triggered): a
    # restart or a replay triggered from the UI or the CLI must not queue behind a toggle.
    for dag_id in OPERATOR_DAGS:
        client.wait_for_dag(dag_id)
        client.unpause(dag_id)

    seed = seed if seed is not None else int(time.time()) % 1_000_000
    _say(f"producing {events:,} demo events (seed {seed}) through the demo_traffic DAG")
    run_dag(client, "demo_traffic", {"count": events, "seed": seed, "topic": pipeline.EVENTS_TOPIC})
    days = history_days(datetime.now(UTC).date())
    _say(f"producing {HISTORY_EVENTS_PER_DAY:,} events for each of {days[0]}..{days[-1]}")
    for i, day in enumerate(days):
        run_dag(client, "demo_traffic", history_conf(day, seed + 1 + i))

    wait_for_stream(ctx)
    ok = summary(ctx)
    if not ctx.settings.schedules:
        _say(f"history: compact it with `make compact DAY={days[0]}` (and the next days)")
        return ok
    # The backfill first: unpausing the nightly compaction also starts its latest interval
    # (yesterday), which the backfill already holds, so no run compacts it before its events.
    backfill_history(client, days)
    for dag_id in SCHEDULED_DAGS:
        client.wait_for_dag(dag_id)
        client.unpause(dag_id)
    _say(f"on their schedules: {', '.join(SCHEDULED_DAGS)} (RTAP_SCHEDULES=off keeps them paused)")
    return ok


def history_days(today: date) -> list[date]:
    return [today - timedelta(days=n) for n in range(HISTORY_DAYS, 0, -1)]


def history_conf(day: date, seed: int) -> dict:
    """demo_traffic params for one past day: events over the whole day, a daily curve."""
    return {
        "count": HISTORY_EVENTS_PER_DAY,
        "seed": seed,
        "topic": pipeline.EVENTS_TOPIC,
        "start": f"{day.isoformat()}T00:00:00Z",
        "span_hours": 24,
        "rhythm": True,
    }


def backfill_history(client: AirflowApi, days: list[date]) -> None:
    """A real backfill of compact_warehouse over the history days (the scheduler runs them one
    at a time; re-running the demo compacts them again, idempotently, with what it added)."""
    backfill = client.create_backfill(
        "compact_warehouse",
        f"{days[0].isoformat()}T00:00:00Z",
        f"{days[-1].isoformat()}T12:00:00Z",
        reprocess="completed",
    )
    _say(
        f"compact_warehouse backfills {days[0]}..{days[-1]} (backfill {backfill}); the "
        "dashboard's History page fills in as each day is compacted (~1-2 min a day)"
    )


def caught_up(ctx: Context) -> tuple[bool, str]:
    """Every query's last batch ended at the topic's log-end offsets."""
    from confluent_kafka.admin import AdminClient

    from include.supervision.retention import log_end_offsets

    topic = pipeline.EVENTS_TOPIC
    admin = AdminClient({"bootstrap.servers": ctx.settings.kafka_bootstrap})
    log_end = log_end_offsets(admin, topic, timeout=10)
    conn = store.connect(ctx.analytics_db)
    try:
        read = store.latest_end_offsets(conn, topic)
    finally:
        conn.close()
    behind = []
    for query in pipeline.STREAM_QUERIES:
        ends = read.get(query, {})
        lag = sum(end - ends.get(int(p), 0) for p, end in log_end.items())
        if lag > 0:
            behind.append(f"{query}: {lag:,} behind")
    return not behind, ", ".join(behind)


def stream_stopped(ctx: Context) -> str | None:
    """Why the stream is not running, if an operator or supervision stopped it."""
    from include.supervision import control, lease

    conn = store.connect(ctx.analytics_db)
    try:
        name = lease.lease_name(pipeline.s3a(ctx.settings.bucket, pipeline.CHECKPOINT_PREFIX))
        state = control.get(conn, name)
    finally:
        conn.close()
    if state.state == control.RUNNING:
        return None
    return f"{state.state} by {state.set_by or 'supervision'} ({state.reason})"


def wait_for_stream(ctx: Context, timeout: float = 900) -> None:
    _say("waiting for the stream to process everything in the topic")
    t0 = time.monotonic()
    detail = ""
    while time.monotonic() - t0 < timeout:
        stopped = stream_stopped(ctx)
        if stopped:
            raise DemoError(
                f"the stream is {stopped}; trigger the stream_control DAG with action=restart "
                "to resume it, then run the demo again"
            )
        done, detail = caught_up(ctx)
        if done:
            _say(f"the stream caught up in {time.monotonic() - t0:.0f}s")
            return
        time.sleep(3)
    raise DemoError(
        f"the stream did not catch up within {timeout:.0f}s ({detail}); see the stream_events "
        "task log in the Airflow UI and <state>/airflow/logs"
    )


def summary(ctx: Context) -> bool:
    s = ctx.settings
    lake = lake_report(
        ctx,
        pipeline.s3a(s.bucket, pipeline.RAW_EVENTS_PREFIX),
        pipeline.s3a(s.bucket, pipeline.DEAD_LETTER_PREFIX),
    )
    conn = store.connect(ctx.analytics_db)
    try:
        produced = store.produced_totals(conn, pipeline.EVENTS_TOPIC)
        agg = store.aggregate_totals(conn)
    finally:
        conn.close()
    checks = {
        "lake rows = valid distinct events produced": lake["rows"] == produced["valid"],
        "dead-letter rows = invalid events produced": lake["dead_letter_rows"]
        == produced["invalid"],
        "lake has no duplicate event_id": lake["rows"] == lake["distinct_ids"],
        "Postgres purchases = purchases produced": agg["purchases"] == produced["purchases"],
        "Postgres units = units produced": agg["units"] == produced["units"],
        "Postgres revenue = revenue produced, per currency": all(
            abs(agg["revenue"].get(c, 0.0) - produced["revenue"].get(c, 0.0)) < 0.01
            for c in set(agg["revenue"]) | set(produced["revenue"])
        ),
    }
    width = 44
    print()
    print("=" * 72)
    print(" Real-time analytics platform: demo summary (all runs so far)")
    print("=" * 72)
    print(
        f" {'events produced (recorded runs: ' + str(produced['runs']) + ')':<{width}} {produced['events']:>12,}"
    )
    print(f" {'  of which valid':<{width}} {produced['valid']:>12,}")
    print(
        f" {'Parquet rows in s3://' + s.bucket + '/' + pipeline.RAW_EVENTS_PREFIX:<{width}} {lake['rows']:>12,}"
    )
    print(f" {'  of which invalid (to the dead-letter path)':<{width}} {produced['invalid']:>12,}")
    print(f" {'  dead-letter rows':<{width}} {lake['dead_letter_rows']:>12,}")
    print(
        f" {'purchases produced / in Postgres':<{width}} {produced['purchases']:>5,} / {agg['purchases']:,}"
    )
    for currency in sorted(set(agg["revenue"]) | set(produced["revenue"])):
        sent, kept = produced["revenue"].get(currency, 0.0), agg["revenue"].get(currency, 0.0)
        print(
            f" {'revenue ' + currency + ' produced / in Postgres':<{width}} {sent:>,.2f} / {kept:,.2f}"
        )
    print(f" {'aggregate rows (category_sales_minute)':<{width}} {agg['rows']:>12,}")
    print("-" * 72)
    for name, ok in checks.items():
        print(f" [{'ok' if ok else 'MISMATCH'}] {name}")
    print("-" * 72)
    print(f" Dashboard     {s.dashboard_url}   (live sales, history, pipeline health)")
    print(f" Airflow UI    {s.airflow_url}   user: {environment.AIRFLOW_ADMIN_USER}")
    print(f"               password: `make password` (kept in {s.secrets_file})")
    print(f" MinIO console http://{s.host}:{s.ports.s3_console}   (S3 keys in the same file)")
    print(
        f" Postgres      {s.host}:{s.ports.postgres} db {environment.ANALYTICS_DB} user {environment.ANALYTICS_DB_USER}"
    )
    print(f" state & logs  {s.state_dir}")
    print("=" * 72)
    return all(checks.values())
