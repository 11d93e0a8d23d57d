"""Rebuild marts from the Iceberg events table: every mart of the registry
(``include/warehouse/marts.py``), or those named, for a range of days or all of them.

The nightly compaction builds the marts of the day it compacts; this builds them for any days
the events table holds, so a new mart covers the days whose raw files retention expired, and a
changed mart is rebuilt without compacting again. Each mart's days are replaced in one commit
(``rows of the range`` in the report); the events table is only read.

Usage::

    spark-submit ... spark_apps/rebuild_marts.py --warehouse s3a://lake/warehouse \\
        [--since 2026-11-01] [--until 2026-11-30] [--marts daily_funnel] \\
        [--namespace analytics] [--marts-namespace marts] [--pg-schema public]

Exit 1 when the events table does not exist yet (nothing was ever compacted).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from include.analytics import migrations, store
from include.endpoints import PostgresEndpoint
from include.spark.jobs import RebuildMartsJob
from include.warehouse import catalog, marts
from spark_apps.compact_events import table_exists, write_marts
from spark_apps.reports import write_report

log = logging.getLogger("rebuild_marts")


def rebuild(spark: SparkSession, args: RebuildMartsJob) -> dict:
    events_table = f"{catalog.CATALOG}.{args.namespace}.{catalog.EVENTS_TABLE}"
    if not table_exists(spark, events_table):
        return {"error": f"{events_table} does not exist: no day was compacted yet"}
    events = spark.table(events_table)
    if args.since:
        events = events.where(F.col("event_date") >= F.lit(args.since.isoformat()).cast("date"))
    if args.until:
        events = events.where(F.col("event_date") <= F.lit(args.until.isoformat()).cast("date"))
    span = events.agg(F.min("event_date").alias("first"), F.max("event_date").alias("last"))
    first, last = span.first()
    if first is None:
        log.warning("no events between %s and %s: no mart changed", args.since, args.until)
        return {"days": 0, "marts": {}}
    # The whole asked range is replaced (a day the table lacks loses its stale mart rows).
    first, last = args.since or first, args.until or last
    which = marts.named(args.marts)
    rows = write_marts(spark, events, args.marts_namespace, first, last, which)
    report = {"first": first.isoformat(), "last": last.isoformat(), "marts": rows}
    log.info("rebuilt %s for %s..%s: %s", [m.name for m in which], first, last, rows)
    return report


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = RebuildMartsJob.from_argv(sys.argv[1:] if argv is None else argv)
    conn = store.connect(PostgresEndpoint.from_libpq_env(), schema=args.pg_schema)
    try:
        migrations.check(conn, args.pg_schema, aggregates=())  # the Iceberg catalog's tables
    except migrations.SchemaNotReady as exc:
        log.error("%s", exc)
        return 2
    finally:
        conn.close()
    builder = SparkSession.builder.appName("rebuild_marts")
    for key, value in catalog.spark_conf(args.warehouse, args.pg_schema).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    try:
        spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {catalog.CATALOG}.{args.marts_namespace}")
        report = rebuild(spark, args)
        write_report(spark, args.report, "marts", report)
        if "error" in report:
            log.error("%s", report["error"])
            return 1
        return 0
    finally:
        spark.stop()


if __name__ == "__main__":
    sys.exit(main())
