"""Read-back helpers of the integration tests: what Postgres holds, what the lake holds.

The lake is read back by one in-process SparkSession for the whole test session (the same
jars, S3A settings and read path as ``spark_apps/lake_report.py``), instead of a spark-submit
JVM per read-back: each of those cost ~20 s of JVM start on two cores."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import time
from collections import defaultdict
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta

from devstack import class_archive, environment
from include import pipeline
from include.analytics import store
from include.events.generator import Produced
from include.events.tally import Tally, minute_of
from include.spark.jobs import ReconcileJob
from include.supervision import lease
from tests.conftest import TEST_JAVA_OPTS
from tests.integration.phases import timed


def query(ctx, schema: str, sql: str, args: tuple = ()) -> list[tuple]:
    """Rows of one statement in a test's Postgres schema (made by the migrations)."""
    conn = store.connect(ctx.analytics_db, schema=schema)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()
    finally:
        conn.close()


def postgres_sales(ctx, schema: str) -> dict[tuple[str, str, str], dict]:
    """The live category sales in Postgres, by (window start, category, currency)."""
    rows = query(
        ctx,
        schema,
        "SELECT window_start, category, currency, purchases, units, revenue::float8, buyers "
        "FROM category_sales_minute",
    )
    return {
        (iso_minute(r[0]), r[1], r[2]): {
            "purchases": r[3],
            "units": r[4],
            "revenue": r[5],
            "buyers": r[6],
        }
        for r in rows
    }


def postgres_funnel(ctx, schema: str) -> dict[tuple[str, str], dict]:
    """The live funnel in Postgres, by (window start, event type)."""
    rows = query(
        ctx, schema, "SELECT window_start, event_type, events, sessions FROM funnel_minute"
    )
    return {(iso_minute(r[0]), r[1]): {"events": r[2], "sessions": r[3]} for r in rows}


def stream_progress(ctx, schema: str) -> dict[str, list[dict]]:
    rows = query(
        ctx,
        schema,
        "SELECT query_name, batch_id, input_rows, sources, observed FROM stream_progress "
        "ORDER BY query_name, ts, batch_id",
    )
    out: dict[str, list[dict]] = {}
    for name, batch, n, sources, observed in rows:
        out.setdefault(name, []).append(
            {"batch_id": batch, "input_rows": n, "sources": sources, "observed": observed}
        )
    return out


def iso_minute(ts) -> str:
    return ts.astimezone(UTC).replace(tzinfo=None).isoformat()


def oracle_sales(produced: Iterable[Produced]) -> dict[tuple[str, str, str], dict]:
    """Per minute, category and currency, what the generator sent as valid purchases (its own record:
    counts, units and revenue it computed, the buyers read from the bytes it sent). The
    independent oracle of the live aggregates: no transform of ours is involved."""
    tally = Tally(keep_ids=False)
    buyers: dict[tuple[str, str, str], set] = defaultdict(set)
    for p in tally.counted(produced):
        if p.kind == "valid" and p.event_type == "purchase":
            key = (minute_of(p.event_time_ms), p.category, p.currency)
            buyers[key].add(json.loads(p.value)["user_id"])
    out = tally.sales
    for key, row in out.items():
        row["buyers"] = len(buyers[key])
    return out


def oracle_funnel(produced: Iterable[Produced]) -> dict[tuple[str, str], dict]:
    """Per minute and event type, the valid relevant events the generator sent and their
    distinct sessions (the funnel's independent oracle)."""
    out: dict[tuple[str, str], dict] = {}
    sessions: dict[tuple[str, str], set] = defaultdict(set)
    for p in produced:
        if p.kind != "valid":
            continue
        key = (minute_of(p.event_time_ms), p.event_type)
        out.setdefault(key, {"events": 0})["events"] += 1
        sessions[key].add(json.loads(p.value)["session_id"])
    for key, row in out.items():
        row["sessions"] = len(sessions[key])
    return out


def assert_sales_match(got: dict, produced: Iterable[Produced]) -> None:
    assert_aggregate_match(got, oracle_sales(produced), ("purchases", "units", "revenue"), "buyers")


def assert_funnel_match(got: dict, produced: Iterable[Produced]) -> None:
    assert_aggregate_match(got, oracle_funnel(produced), ("events",), "sessions")


def assert_aggregate_match(got: dict, expected: dict, exact: tuple[str, ...], approx: str) -> None:
    """Postgres rows equal the oracle's: the same keys, ``exact`` measures equal (money to the
    cent), the ``approx`` distinct count within HyperLogLog's error (3 %, at least 1)."""
    assert set(got) == set(expected), (
        f"keys only in Postgres: {sorted(set(got) - set(expected))[:5]}; "
        f"only in the oracle: {sorted(set(expected) - set(got))[:5]}"
    )
    for key, want in expected.items():
        row = got[key]
        for m in exact:
            assert round(row[m], 2) == round(want[m], 2), (key, m, row, want)
        assert abs(row[approx] - want[approx]) <= max(1, 0.03 * want[approx]), (key, row, want)


def lease_holder(ctx, sandbox) -> lease.Holder | None:
    conn = store.connect(ctx.analytics_db, schema=sandbox.pg_schema)
    try:
        name = lease.lease_name(pipeline.s3a(ctx.settings.bucket, sandbox.checkpoint_prefix))
        return lease.holder(conn, name)
    finally:
        conn.close()


def lake_progress_end(ctx, sandbox) -> int:
    """Sum over partitions of the end offsets of the lake query's latest batch."""
    return sum(latest_ends(ctx, sandbox).get(pipeline.STREAM_QUERY, {}).values())


def latest_ends(ctx, sandbox) -> dict[str, dict[int, int]]:
    """Per query: where its newest batch ended on each partition of the sandbox's topic."""
    conn = store.connect(ctx.analytics_db, schema=sandbox.pg_schema)
    try:
        return store.latest_end_offsets(conn, sandbox.topic)
    finally:
        conn.close()


@timed
def wait_for(check, timeout: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        assert proc is None or proc.poll() is None, f"the launcher exited while waiting for {what}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(1)


_READER = None


def reader(ctx, driver_memory: str | None = None):
    """The session's lake reader (created on first use; :func:`stop_reader` stops it), with
    Spark's default heap unless ``driver_memory`` is given (it applies when the JVM starts)."""
    global _READER
    if _READER is None:
        from pyspark.sql import SparkSession

        from include.spark.submit import BASE_CONF

        os.environ["TZ"] = "UTC"  # collected timestamps are naive datetimes in the local zone
        time.tzset()
        # Python workers (reconcile's digests) import our packages with the venv's Python.
        os.environ["PYSPARK_PYTHON"] = ctx.env["PYSPARK_PYTHON"]
        os.environ["PYTHONPATH"] = ctx.env["PYTHONPATH"]
        credentials = ctx.s3_root.hadoop_credentials()
        conf = {
            **{
                k: v
                for k, v in BASE_CONF.items()
                if k.removeprefix("spark.hadoop.") not in credentials
            },
            **ctx.s3_root.s3a_conf(),
            "spark.driver.extraClassPath": os.pathsep.join(environment.spark_jars(ctx.settings)),
            "spark.driver.extraJavaOptions": class_archive.with_archive(
                TEST_JAVA_OPTS, ctx.settings
            ),
            "spark.ui.enabled": "false",
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
            **({"spark.driver.memory": driver_memory} if driver_memory else {}),
        }
        builder = SparkSession.builder.master("local[2]").appName("it-lake-reader")
        for key, value in conf.items():
            builder = builder.config(key, value)
        _READER = builder.getOrCreate()
        # The credentials go to the running JVM, not its command line (the builder's settings).
        hadoop = _READER.sparkContext._jsc.hadoopConfiguration()
        for key, value in credentials.items():
            hadoop.set(key, value)
        _READER.sparkContext.setLogLevel("ERROR")
        logging.getLogger("py4j").setLevel(logging.WARNING)  # no chatter from its finalizers
    return _READER


def stop_reader() -> None:
    """Stop the session's lake reader, if one was started (the integration conftest does it)."""
    global _READER
    if _READER is not None:
        _READER.stop()
        _READER = None


@timed
def lake_report(ctx, lake_path: str, dead_letter_path: str) -> dict:
    """``spark_apps/lake_report.py``'s report, read in-process through the sinks' metadata."""
    from spark_apps.lake_report import report

    return report(reader(ctx), lake_path, dead_letter_path)


@timed
def reconcile(
    ctx,
    since: str,
    until: str,
    topic: str,
    lake_path: str,
    dead_letter_path: str,
    pg_schema: str = "public",
) -> tuple[dict, str]:
    """``spark_apps/reconcile.py``'s report and table, computed in-process (the reconcile DAG
    and ``make reconcile`` run the app itself)."""
    from spark_apps import reconcile as app

    job = ReconcileJob.parse(
        topic=topic,
        lake_path=lake_path,
        dead_letter_path=dead_letter_path,
        since=since,
        until=until,
        pg_schema=pg_schema,
    )
    return app.reconcile(reader(ctx), job, ctx.analytics_db)


def reconcile_sandbox(ctx, sandbox, start: datetime, topic: str | None = None) -> dict:
    """The reconciliation of a test's sandbox (its topic unless ``topic``, lake, dead letters
    and schema) over the runs recorded from an hour before ``start`` until a minute from now."""
    b = ctx.settings.bucket
    report, _ = reconcile(
        ctx,
        (start - timedelta(hours=1)).isoformat(),
        (datetime.now(UTC) + timedelta(minutes=1)).isoformat(),
        topic or sandbox.topic,
        pipeline.s3a(b, sandbox.lake_prefix),
        pipeline.s3a(b, sandbox.dead_letter_prefix),
        sandbox.pg_schema,
    )
    return report
