"""Nightly compaction: one event day of the lake -> the Iceberg warehouse and its marts.

Reads the day's raw events *through the file sink's metadata* (committed files only),
deduplicates them by ``event_id``, checks the contract's expectations, and replaces the day in
``lake.<namespace>.events`` (Iceberg, partitioned by ``days(event_time)``, sorted by category,
event type and time, files of ``--target-file-mb``). Then it verifies the table (rows =
distinct source events, revenue equal, one row per id) and rolls the table back if a check
fails, rebuilds the day's marts (``daily_sales_by_category``, ``daily_funnel``) and records
the run in ``compaction_runs``. Re-running a day replaces it: the same input gives the same
tables.

Usage::

    spark-submit ... spark_apps/compact_events.py --day 2026-11-24 \\
        --lake-path s3a://lake/raw/events --warehouse s3a://lake/warehouse \\
        [--namespace analytics] [--marts-namespace marts] [--pg-schema public] \\
        [--target-file-mb 128]

The catalog is Iceberg's JDBC catalog on the analytics Postgres (libpq ``PG*`` environment);
see ``include/warehouse/catalog.py``. Writes its report as JSON to ``--report``; exit 1 when an
expectation or a verification fails (the report names each rule and its row count).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from datetime import date, datetime, time, timedelta
from time import monotonic

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from include.analytics import migrations, store
from include.endpoints import PostgresEndpoint
from include.events import contract
from include.spark.jobs import CompactJob
from include.warehouse import catalog, runs
from spark_apps.file_sinks import read_sink
from spark_apps.reports import write_report
from spark_apps.transforms import warehouse as W

log = logging.getLogger("compact_events")

# A write task holds one planned file. Iceberg rolls a file when its *estimated* size reaches
# the write's limit, and until a row group is flushed that estimate counts buffered pages
# before compression (measured here: 3-4x the final size). At the target size it would cut
# files at a fraction of it, so the write's limit sits far above; the plan sizes the files.
ROLL_FACTOR = 10


class CompactionFailed(RuntimeError):
    """An expectation or a verification failed; the message is the report."""


def session(args: CompactJob) -> SparkSession:
    builder = SparkSession.builder.appName(f"compact_events {args.day}")
    for key, value in catalog.spark_conf(args.warehouse, args.pg_schema).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def _day_filter(day: date):
    start = datetime.combine(day, time.min)
    return (F.col("event_time") >= F.lit(start)) & (
        F.col("event_time") < F.lit(start + timedelta(days=1))
    )


def source_files(day_rows: DataFrame) -> dict:
    """Committed raw files of the day and their bytes (Spark's hidden ``_metadata`` column)."""
    row = (
        day_rows.select("_metadata.file_path", "_metadata.file_size")
        .distinct()
        .agg(F.count(F.lit(1)).alias("files"), F.sum("file_size").alias("bytes"))
        .first()
    )
    return {"files": row["files"], "bytes": row["bytes"] or 0}


def table_files(spark: SparkSession, table: str, day: date) -> dict:
    """Live data files of the day in the Iceberg table: count, bytes, sizes."""
    files = spark.sql(
        f"SELECT file_size_in_bytes, lower_bounds, readable_metrics.event_time.lower_bound AS lo "
        f"FROM {table}.files"
    ).where(F.to_date("lo") == F.lit(day.isoformat()).cast("date"))
    sizes = sorted(r[0] for r in files.select("file_size_in_bytes").collect())
    return {"files": len(sizes), "bytes": sum(sizes), "file_bytes": sizes}


def current_snapshot(spark: SparkSession, table: str) -> int | None:
    row = spark.sql(
        f"SELECT snapshot_id FROM {table}.history WHERE is_current_ancestor "
        f"ORDER BY made_current_at DESC LIMIT 1"
    ).first()
    return None if row is None else row[0]


def ensure_table(spark: SparkSession, table: str, schema, target_bytes: int) -> None:
    columns = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in schema.fields)
    spark.sql(
        f"CREATE TABLE IF NOT EXISTS {table} ({columns}) USING iceberg "
        f"PARTITIONED BY (days(event_time)) "
        f"TBLPROPERTIES ('format-version'='2', 'write.parquet.compression-codec'='zstd')"
    )
    spark.sql(f"ALTER TABLE {table} WRITE LOCALLY ORDERED BY category, event_type, event_time")
    spark.sql(
        f"ALTER TABLE {table} SET TBLPROPERTIES ('write.target-file-size-bytes'='{target_bytes}')"
    )


def ensure_mart(spark: SparkSession, table: str, frame: DataFrame) -> None:
    columns = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in frame.schema.fields)
    spark.sql(
        f"CREATE TABLE IF NOT EXISTS {table} ({columns}) USING iceberg PARTITIONED BY (day) "
        f"TBLPROPERTIES ('format-version'='2')"
    )


def replace_day(frame: DataFrame, table: str, condition, roll_bytes: int | None = None) -> None:
    """Atomically replace the rows matching ``condition`` (one Iceberg commit), keeping the
    frame's partitioning (one file per task)."""
    writer = frame.writeTo(table).option("distribution-mode", "none")
    if roll_bytes:
        writer = writer.option("target-file-size-bytes", str(roll_bytes))
    writer.overwrite(condition)


def measured_bytes_per_row(spark: SparkSession, table: str) -> float | None:
    """What the table's live files hold per row (None for an empty table)."""
    row = spark.sql(
        f"SELECT sum(file_size_in_bytes) AS b, sum(record_count) AS n FROM {table}.files"
    ).first()
    return (row["b"] / row["n"]) if row["n"] else None


def compact(spark: SparkSession, args: CompactJob, expired: Sequence[date] = ()) -> dict:
    day: date = args.day
    events_table = f"{catalog.CATALOG}.{args.namespace}.{catalog.EVENTS_TABLE}"
    target_bytes = int(args.target_file_mb * 1024 * 1024)
    report: dict = {"day": day.isoformat(), "table": events_table, "target_bytes": target_bytes}
    started = monotonic()  # the report's seconds leave out the JVM start (benchmarks read them)

    raw = read_sink(spark, args.lake_path, skip_days=expired)
    # Before anything reads a column: a lake without contract fields fails with their names.
    missing = [c for c in contract.FIELD_NAMES if raw is not None and c not in raw.columns]
    if missing:
        raise CompactionFailed(f"{day}: the lake lacks contract field(s) {missing}")
    day_rows = None if raw is None else W.day_slice(raw, day)
    report["source"] = (
        {"files": 0, "bytes": 0, "rows": 0, "distinct_ids": 0, "revenue": 0.0}
        if day_rows is None
        else {**source_files(day_rows), **W.totals(day_rows)}
    )
    if report["source"]["rows"] == 0:
        # Nothing landed for the day (or the lake is new): leave the tables as they are; a
        # day whose raw files were expired keeps its warehouse rows.
        report["status"] = "empty"
        log.warning("%s: no committed raw events for the day; tables left unchanged", day)
        return report
    deduped = W.dedupe_day(day_rows).persist()
    source = W.totals(deduped)

    failures = W.expectations(deduped, day)
    if failures:
        report["expectations"] = [str(f) for f in failures]
        raise CompactionFailed(
            f"{day}: {len(failures)} expectation(s) failed; nothing was written:\n"
            + "\n".join(f"  - {f}" for f in failures)
        )
    report["expectations"] = []

    spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {catalog.CATALOG}.{args.namespace}")
    spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {catalog.CATALOG}.{args.marts_namespace}")
    ensure_table(spark, events_table, deduped.schema, target_bytes)
    before = current_snapshot(spark, events_table)
    bytes_per_row = measured_bytes_per_row(spark, events_table) or args.bytes_per_row
    n_files = W.output_files(source["distinct_ids"], bytes_per_row, target_bytes)
    report["plan"] = {"files": n_files, "bytes_per_row": round(bytes_per_row, 1)}
    log.info("writing %s: %s file(s), %.1f B/row", day, n_files, bytes_per_row)
    replace_day(
        deduped.repartitionByRange(n_files, "category", "event_type", "event_time"),
        events_table,
        _day_filter(day),
        roll_bytes=int(target_bytes * ROLL_FACTOR),
    )
    after = current_snapshot(spark, events_table)
    report["snapshot_id"] = after
    report["seconds"] = {"read_dedupe_write": round(monotonic() - started, 3)}

    stored = spark.table(events_table).where(_day_filter(day))
    target = W.totals(stored)
    report["target"] = {**target, **table_files(spark, events_table, day)}
    problems = []
    if target["rows"] != source["distinct_ids"]:
        problems.append(f"rows {target['rows']} != distinct source events {source['distinct_ids']}")
    if target["distinct_ids"] != target["rows"]:
        problems.append(f"{target['rows'] - target['distinct_ids']} duplicate event_id(s)")
    if abs(target["revenue"] - source["revenue"]) > 0.005:
        problems.append(f"revenue {target['revenue']} != source {source['revenue']}")
    if problems:
        _roll_back(spark, events_table, before, day)
        report["verification"] = problems
        raise CompactionFailed(
            f"{day}: verification failed, table rolled back:\n"
            + "\n".join(f"  - {p}" for p in problems)
        )
    report["verification"] = []
    report["status"] = "verified"
    report["seconds"]["verify"] = round(
        monotonic() - started - report["seconds"]["read_dedupe_write"], 3
    )

    for name, frame in (
        (catalog.SALES_MART, W.daily_sales(stored)),
        (catalog.FUNNEL_MART, W.daily_funnel(stored)),
    ):
        mart = f"{catalog.CATALOG}.{args.marts_namespace}.{name}"
        ensure_mart(spark, mart, frame)
        replace_day(frame.coalesce(1), mart, F.col("day") == F.lit(day.isoformat()).cast("date"))
        report.setdefault("marts", {})[name] = spark.table(mart).where(F.col("day") == day).count()
    deduped.unpersist()
    return report


def _roll_back(spark: SparkSession, table: str, before: int | None, day: date) -> None:
    ident = table.split(".", 1)[1]
    if before is not None:
        spark.sql(f"CALL {catalog.CATALOG}.system.rollback_to_snapshot('{ident}', {before})")
    else:  # the table's first commit: remove what it wrote
        spark.sql(
            f"DELETE FROM {table} WHERE event_time >= TIMESTAMP '{day} 00:00:00' "
            f"AND event_time < TIMESTAMP '{day + timedelta(days=1)} 00:00:00'"
        )


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = CompactJob.from_argv(sys.argv[1:] if argv is None else argv)
    # First: the Postgres schema has the runs' and the Iceberg catalog's tables.
    conn = store.connect(PostgresEndpoint.from_libpq_env(), schema=args.pg_schema)
    try:
        migrations.check(conn, args.pg_schema, aggregates=())
    except migrations.SchemaNotReady as exc:
        log.error("%s", exc)
        conn.close()
        return 2
    spark = session(args)
    try:
        previous = runs.last_run(conn, args.day)
        if previous and previous["raw_expired_at"]:
            # Its raw files are gone (the sink's log still lists them): the warehouse holds the
            # verified day and stays as it is.
            report = {"day": args.day.isoformat(), "status": "empty", "raw_expired": True}
            log.warning(
                "%s: raw files expired at %s; tables left unchanged",
                args.day,
                previous["raw_expired_at"],
            )
            write_report(spark, args.report, "compaction", report)
            return 0
        try:
            report = compact(spark, args, runs.expired_days(conn))
        except CompactionFailed as exc:
            report = {"day": args.day.isoformat(), "error": str(exc)}
            runs.record(conn, args.day, "failed", report)
            write_report(spark, args.report, "compaction", report)
            log.error("%s", exc)
            return 1
        runs.record(conn, args.day, report.get("status", "verified"), report)
        write_report(spark, args.report, "compaction", report)
        if report.get("status") == "empty":
            return 0
        src, dst = report["source"], report["target"]
        log.info(
            "%s: %s raw files (%s B) -> %s files (%s B); %s rows",
            args.day,
            src["files"],
            src["bytes"],
            dst["files"],
            dst["bytes"],
            dst["rows"],
        )
        return 0
    finally:
        conn.close()
        spark.stop()


if __name__ == "__main__":
    sys.exit(main())
