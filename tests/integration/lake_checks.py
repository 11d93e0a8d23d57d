"""Read-back helpers of the integration tests: what Postgres holds, what the lake holds.

The lake is read back by one in-process SparkSession for the whole test session (the same
jars, S3A settings and read path as ``spark_apps/lake_report.py``), instead of a spark-submit
JVM per read-back: each of those cost ~20 s of JVM start on two cores."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from datetime import UTC

from devstack import environment
from devstack.demo import pg_params
from include import pipeline
from include.analytics import store
from include.supervision import lease


def query(ctx, schema: str, sql: str, args: tuple = ()) -> list[tuple]:
    """Rows of one statement in a test's Postgres schema (its tables created if missing)."""
    conn = store.connect(pg_params(ctx), schema=schema)
    try:
        store.ensure_schema(conn)
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()
    finally:
        conn.close()


def postgres_sales(ctx, schema: str) -> list[dict]:
    rows = query(
        ctx,
        schema,
        "SELECT window_start, category, purchases, units, revenue::float8, buyers "
        "FROM category_sales_minute ORDER BY window_start, category",
    )
    return [
        {
            "window_start": r[0].astimezone(UTC).replace(tzinfo=None).isoformat(),
            "category": r[1],
            "purchases": r[2],
            "units": r[3],
            "revenue": round(r[4], 2),
            "buyers": r[5],
        }
        for r in rows
    ]


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


def late_rows_dropped(ctx, schema: str) -> dict[str, int]:
    """Rows each query dropped as later than its watermark, over all its batches."""
    return dict(
        query(
            ctx,
            schema,
            "SELECT query_name, sum(late_rows_dropped)::bigint FROM stream_progress "
            "GROUP BY query_name",
        )
    )


def lake_sales(report: dict) -> list[dict]:
    return [
        {
            "window_start": r["window_start"],
            "category": r["category"],
            "purchases": r["purchases"],
            "units": r["units"],
            "revenue": round(r["revenue"], 2),
            "buyers": r["buyers"],
        }
        for r in report["category_sales"]
    ]


def postgres_funnel(ctx, schema: str) -> list[dict]:
    rows = query(
        ctx,
        schema,
        "SELECT window_start, event_type, events, sessions FROM funnel_minute "
        "ORDER BY window_start, window_end, event_type",
    )
    return [
        {
            "window_start": r[0].astimezone(UTC).replace(tzinfo=None).isoformat(),
            "event_type": r[1],
            "events": r[2],
            "sessions": r[3],
        }
        for r in rows
    ]


def lake_funnel(report: dict) -> list[dict]:
    return [
        {k: r[k] for k in ("window_start", "event_type", "events", "sessions")}
        for r in report["funnel"]
    ]


def lease_holder(ctx, sandbox) -> lease.Holder | None:
    conn = store.connect(pg_params(ctx), schema=sandbox.pg_schema)
    try:
        lease.ensure_table(conn)
        name = lease.lease_name(pipeline.s3a(ctx.settings.bucket, sandbox.checkpoint_prefix))
        return lease.holder(conn, name)
    finally:
        conn.close()


def lake_progress_end(ctx, sandbox) -> int:
    """Sum over partitions of the end offsets of the lake query's latest batch."""
    rows = query(
        ctx,
        sandbox.pg_schema,
        "SELECT sources FROM stream_progress WHERE query_name = 'lake' "
        "ORDER BY ts DESC, batch_id DESC LIMIT 1",
    )
    if not rows:
        return 0
    ends = rows[0][0][0].get("endOffset") or {}
    return sum(int(v) for v in (ends.get(sandbox.topic) or {}).values())


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


def reader(ctx):
    """The session's lake reader (created on first use; :func:`stop_reader` stops it)."""
    global _READER
    if _READER is None:
        from pyspark.sql import SparkSession

        from include.spark.submit import BASE_CONF, s3a_conf

        os.environ["TZ"] = "UTC"  # collected timestamps are naive datetimes in the local zone
        time.tzset()
        # Python workers (reconcile's digests) import our packages with the venv's Python.
        os.environ["PYSPARK_PYTHON"] = ctx.env["PYSPARK_PYTHON"]
        os.environ["PYTHONPATH"] = ctx.env["PYTHONPATH"]
        conf = {
            **BASE_CONF,
            **s3a_conf(ctx.settings.s3_endpoint, "us-east-1"),
            "spark.hadoop.fs.s3a.aws.credentials.provider": (
                "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider"
            ),
            "spark.hadoop.fs.s3a.access.key": ctx.secrets.s3_access_key,
            "spark.hadoop.fs.s3a.secret.key": ctx.secrets.s3_secret_key,
            "spark.jars": ",".join(environment.spark_jars(ctx.settings)),
            "spark.ui.enabled": "false",
            "spark.driver.host": "127.0.0.1",
            "spark.driver.bindAddress": "127.0.0.1",
        }
        builder = SparkSession.builder.master("local[2]").appName("it-lake-reader")
        for key, value in conf.items():
            builder = builder.config(key, value)
        _READER = builder.getOrCreate()
        _READER.sparkContext.setLogLevel("ERROR")
        logging.getLogger("py4j").setLevel(logging.WARNING)  # no chatter from its finalizers
    return _READER


def stop_reader() -> None:
    """Stop the session's lake reader, if one was started (the integration conftest does it)."""
    global _READER
    if _READER is not None:
        _READER.stop()
        _READER = None


def lake_report(ctx, lake_path: str, dead_letter_path: str, window: str | None = None) -> dict:
    """``spark_apps/lake_report.py``'s report, read in-process through the sinks' metadata."""
    from spark_apps.lake_report import report

    return report(reader(ctx), lake_path, dead_letter_path, window)


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

    args = app.parse_args(app.argv(topic, lake_path, dead_letter_path, since, until, pg_schema))
    return app.reconcile(reader(ctx), args, pg_params(ctx))
