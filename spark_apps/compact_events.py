"""Nightly compaction: one event day of the lake -> the Iceberg warehouse and its marts.

Reads the day's raw events *through the file sink's metadata* (committed files only),
deduplicates them by ``event_id``, checks the contract's expectations, and replaces the day in
``lake.<namespace>.events`` (Iceberg, partitioned by ``days(event_time)``, sorted by category,
event type and time, files of ``--target-file-mb``) by write-audit-publish: the day is written
on a branch of the table that readers never see, verified there (rows = distinct source
events, revenue equal, one row per id) and only then published to ``main`` (a fast-forward,
or a cherry-pick when another day was committed meanwhile); a failed check drops the branch,
so ``main`` never holds an unverified day. Then it rebuilds the day's marts
(``daily_sales_by_category``, ``daily_funnel``); it records the run in ``compaction_runs``
(and, once verified, the raw files it read in ``compaction_inputs``). Re-running a day replaces it: the same input gives the same tables.
Then, unless ``--late-days=false``, it adds to every verified day the events of the files the
sink committed to its partition after the day's runs read it (late events, appended;
docs/warehouse.md).

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

import dataclasses
import logging
import sys
import uuid
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from time import monotonic

from pyspark import StorageLevel
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from include import pipeline
from include.analytics import migrations, store
from include.endpoints import PostgresEndpoint
from include.events import contract
from include.spark.jobs import SPARK_DEFAULT_HEAP, CompactJob
from include.warehouse import catalog, marts, runs
from spark_apps.file_sinks import files_by_day, logged_files, read_sink
from spark_apps.reports import stopwatch, write_report
from spark_apps.transforms import warehouse as W

log = logging.getLogger("compact_events")

# A write task holds one planned file. Iceberg rolls a file when its *estimated* size reaches
# the write's limit, and until a row group is flushed that estimate counts buffered pages
# before compression (measured here: 3-4x the final size). At the target size it would cut
# files at a fraction of it, so the write's limit sits far above; the plan sizes the files.
ROLL_FACTOR = 10


class CompactionFailed(RuntimeError):
    """An expectation or a verification failed; the message is the report."""


PREFETCH_MAX_BLOCKS = 1024  # 8 GiB of 8 MiB blocks: more than any file of the warehouse

# A day is thousands of small raw files, read once into a cache (make bench, bench/limits.md):
READ_CONF = {
    # S3A's prefetching stream fetches a small file whole in one GET per open, two per file
    # (the footer's reader and the pages' reader each open it) where the classic stream made
    # three (the footer's length, the footer, the pages): a scan of all columns 9.1 s -> 6.6 s.
    "spark.hadoop.fs.s3a.prefetch.enabled": "true",
    # A file larger than one block (8 MiB: the warehouse's own files, which the verification,
    # the late days and the marts read) goes through the stream's block cache on local disk.
    # With its default of 4 blocks per stream, a file over 32 MiB read out of order evicts
    # blocks, and Hadoop 3.4's cache can delete a block's file while a reader opens it: a
    # 2,000,000-event day (a 100 MiB file) failed its verification once in two runs with
    # NoSuchFileException on fs-cache-*.bin. Room for every block of any file it reads
    # (PREFETCH_MAX_BLOCKS x 8 MiB) means nothing is evicted; the blocks are deleted when the
    # file is closed.
    "spark.hadoop.fs.s3a.prefetch.max.blocks.count": str(PREFETCH_MAX_BLOCKS),
    # The cached day is read twice and dropped: choosing each column's compression when it is
    # cached cost more than it saves (the scan 10 s -> 7 s, the dedupe 4.5 s -> 3.5 s).
    "spark.sql.inMemoryColumnarStorage.compressed": "false",
}


def session(args: CompactJob) -> SparkSession:
    builder = SparkSession.builder.appName(f"compact_events {args.day}")
    for key, value in {**READ_CONF, **catalog.spark_conf(args.warehouse, args.pg_schema)}.items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


def _day_filter(day: date):
    start = datetime.combine(day, time.min)
    return (F.col("event_time") >= F.lit(start)) & (
        F.col("event_time") < F.lit(start + timedelta(days=1))
    )


# Each raw row's file (Spark's hidden ``_metadata`` column), as columns of their own: a cached
# frame keeps them (a later select of ``_metadata`` would read the files again).
FILE_PATH, FILE_SIZE = "_file_path", "_file_size"


def with_source_file(rows: DataFrame) -> DataFrame:
    return rows.withColumn(FILE_PATH, F.col("_metadata.file_path")).withColumn(
        FILE_SIZE, F.col("_metadata.file_size")
    )


def source_summary(rows: DataFrame) -> tuple[dict, list[str]]:
    """The raw files ``rows`` (:func:`with_source_file`) came from (their count and bytes)
    and the rows' :func:`~spark_apps.transforms.warehouse.totals`, in one pass; and the files'
    paths as ``_metadata.file_path`` names them (recorded once verified)."""
    row = rows.agg(
        *W.totals_columns(), F.collect_set(F.struct(FILE_PATH, FILE_SIZE)).alias("files")
    ).first()
    files = row["files"]
    summary = {
        "files": len(files),
        "bytes": sum(f[1] for f in files),
        **W.totals_of(row, W.distinct_ids(rows)),
    }
    return summary, [f[0] for f in files]


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
    """The mart's table, created if missing; a column its transform gained since (e.g. the
    sales mart's ``currency``) is added, null in the days written before (``rebuild_marts``
    rewrites them)."""
    columns = ", ".join(f"`{f.name}` {f.dataType.simpleString()}" for f in frame.schema.fields)
    spark.sql(
        f"CREATE TABLE IF NOT EXISTS {table} ({columns}) USING iceberg PARTITIONED BY (day) "
        f"TBLPROPERTIES ('format-version'='2')"
    )
    have = {f.name for f in spark.table(table).schema.fields}
    for f in frame.schema.fields:
        if f.name not in have:
            spark.sql(f"ALTER TABLE {table} ADD COLUMN `{f.name}` {f.dataType.simpleString()}")


def write_marts(
    spark: SparkSession,
    events: DataFrame,
    namespace: str,
    first: date,
    last: date,
    which: Sequence[marts.Mart] = marts.MARTS,
) -> dict[str, int]:
    """Build each mart from ``events`` (verified rows of the days ``first``..``last``) and
    replace those days in its table, one commit per mart; return each one's rows."""
    window = F.col("day").between(
        F.lit(first.isoformat()).cast("date"), F.lit(last.isoformat()).cast("date")
    )
    rows = {}
    for mart in which:
        frame = getattr(W, mart.transform)(events)
        table = mart.table(catalog.CATALOG, namespace)
        ensure_mart(spark, table, frame)
        frame = frame.coalesce(1) if first == last else frame.repartition("day")
        replace_day(frame, table, window)
        rows[mart.name] = spark.table(table).where(window).count()
    return rows


def replace_day(frame: DataFrame, table: str, condition, roll_bytes: int | None = None) -> None:
    """Atomically replace the rows matching ``condition`` (one Iceberg commit), keeping the
    frame's partitioning (one file per task)."""
    writer = frame.writeTo(table).option("distribution-mode", "none")
    if roll_bytes:
        writer = writer.option("target-file-size-bytes", str(roll_bytes))
    writer.overwrite(condition)


def write_day(frame: DataFrame, table: str, roll_bytes: int | None = None) -> None:
    """Replace the partitions (days) ``frame`` holds rows of, in one Iceberg commit: a dynamic
    overwrite, the kind of commit a cherry-pick can replay onto a ``main`` that moved on
    (:func:`publish`; an overwrite by filter cannot be). The expectations ensure the frame
    holds its day only."""
    writer = frame.writeTo(table).option("distribution-mode", "none")
    if roll_bytes:
        writer = writer.option("target-file-size-bytes", str(roll_bytes))
    writer.overwritePartitions()


class PublishConflict(RuntimeError):
    """``main`` changed the run's day while the run audited it (another run of that day)."""


def _iceberg(spark: SparkSession, table: str):
    """The Iceberg table object (its Java API: branches, fast-forward, cherry-pick), freshly
    loaded. The Java API, not the SQL procedures, so it needs no session extensions."""
    jvm = spark.sparkContext._jvm
    return jvm.org.apache.iceberg.spark.Spark3Util.loadIcebergTable(spark._jsparkSession, table)


def on_branch(table: str, branch: str) -> str:
    """The identifier that reads or writes ``branch`` of ``table``."""
    return f"{table}.branch_{branch}"


AUDIT_PREFIX = "audit_"
_OPENED = "%Y%m%d%H%M%S"  # when a run opened its branch (UTC), in the branch's name


def audit_branch_name(day: date, opened: datetime, token: str) -> str:
    """``audit_<day>_<opened, UTC>_<token>``: the day and when the run opened it, so that the
    maintenance tells a killed run's branch from the branch of a run in progress."""
    return f"{AUDIT_PREFIX}{day:%Y%m%d}_{opened.astimezone(UTC):{_OPENED}}_{token}"


def abandoned_audit_branches(names: Sequence[str], opened_before: datetime) -> list[str]:
    """The audit branches among ``names`` opened before ``opened_before`` (a run takes minutes:
    an older branch is a killed run's), or whose name does not say when (older runs' names),
    sorted; other refs and recent audit branches are kept."""
    out = []
    for name in names:
        if not name.startswith(AUDIT_PREFIX):
            continue
        parts = name[len(AUDIT_PREFIX) :].split("_")
        try:
            opened = datetime.strptime(parts[1], _OPENED).replace(tzinfo=UTC)
        except (IndexError, ValueError):
            opened = None
        if opened is None or opened < opened_before:
            out.append(name)
    return sorted(out)


@contextmanager
def audit_branch(spark: SparkSession, table: str, day: date) -> Iterator[str]:
    """Write-audit-publish, write: a branch of its own for the day's run, at ``main``'s
    current commit, dropped when the run ends whatever the outcome (once published, ``main``
    holds its commit). An empty table first gets an empty commit on ``main``, so the branch
    grows from ``main``'s history and a cherry-pick can publish it. A killed run's branch is
    left behind; the weekly maintenance removes such branches once they are older than a run
    takes (:func:`abandoned_audit_branches`)."""
    if current_snapshot(spark, table) is None:
        _iceberg(spark, table).newAppend().commit()
    branch = audit_branch_name(day, datetime.now(UTC), uuid.uuid4().hex[:8])
    main = current_snapshot(spark, table)
    _iceberg(spark, table).manageSnapshots().createBranch(branch, main).commit()
    try:
        yield branch
    finally:
        try:
            drop_branch(spark, table, branch)
        except Exception:  # a JVM going down: the maintenance removes it
            log.warning("could not drop the audit branch %s of %s", branch, table, exc_info=True)


def drop_branch(spark: SparkSession, table: str, branch: str) -> None:
    iceberg = _iceberg(spark, table)
    if iceberg.refs().containsKey(branch):
        iceberg.manageSnapshots().removeBranch(branch).commit()


def publish(spark: SparkSession, table: str, branch: str) -> None:
    """Write-audit-publish, publish: ``main`` takes the audited branch's commit. A fast-forward when ``main`` has not moved since the branch was
    opened; else a cherry-pick of the branch's commit onto ``main``, which keeps what other
    runs committed meanwhile (other days) and which Iceberg refuses when one of them
    replaced the same day (:class:`PublishConflict`; ``main`` keeps the other run's day)."""
    from py4j.protocol import Py4JJavaError

    def refused(commit: Callable[[], object]) -> str | None:
        """None once ``commit`` is done; Iceberg's reason when it refuses (validation)."""
        try:
            commit()
            return None
        except Py4JJavaError as exc:
            if exc.java_exception.getClass().getSimpleName() != "ValidationException":
                raise
            return str(exc.java_exception.getMessage())

    util = spark.sparkContext._jvm.org.apache.iceberg.util.SnapshotUtil
    iceberg = _iceberg(spark, table)
    ref = iceberg.refs().get(branch)
    if ref is None:
        raise PublishConflict(f"the audit branch {branch} is gone (removed by the maintenance?)")
    head = ref.snapshotId()
    if util.isAncestorOf(iceberg, head, iceberg.currentSnapshot().snapshotId()):
        if (
            refused(lambda: iceberg.manageSnapshots().fastForwardBranch("main", branch).commit())
            is None
        ):
            return
        iceberg = _iceberg(spark, table)  # main moved on between the check and the commit
    # (The snapshot manager commits each operation as it is called.)
    reason = refused(lambda: iceberg.manageSnapshots().cherrypick(head).commit())
    if reason is not None:
        raise PublishConflict(reason)


def measured_bytes_per_row(spark: SparkSession, table: str) -> float | None:
    """What the table's live files hold per row (None for an empty table)."""
    row = spark.sql(
        f"SELECT sum(file_size_in_bytes) AS b, sum(record_count) AS n FROM {table}.files"
    ).first()
    return (row["b"] / row["n"]) if row["n"] else None


def table_exists(spark: SparkSession, table: str) -> bool:
    """Whether the Iceberg ``table`` (``catalog.namespace.name``) exists. Not
    ``spark.catalog.tableExists``: for a missing table it asks the JDBC catalog for a view,
    which raises on a catalog without view support (ours: schema v0, shared with pyiceberg)."""
    cat, _, rest = table.partition(".")
    namespace, _, name = rest.rpartition(".")
    if namespace not in {r[0] for r in spark.sql(f"SHOW NAMESPACES IN {cat}").collect()}:
        return False
    rows = spark.sql(f"SHOW TABLES IN {cat}.{namespace}").collect()
    return any(r["tableName"] == name for r in rows)


def compact(
    spark: SparkSession, args: CompactJob, expired: Collection[str] = ()
) -> tuple[dict, list[str]]:
    """Compact ``args.day``; return the report and the raw files it read (to record once
    verified). ``expired``: raw files retention deleted; a day that lost some keeps the
    warehouse's rows of them (verified before) and adds what arrived since."""
    day: date = args.day
    events_table = f"{catalog.CATALOG}.{args.namespace}.{catalog.EVENTS_TABLE}"
    target_bytes = int(args.target_file_mb * 1024 * 1024)
    report: dict = {"day": day.isoformat(), "table": events_table, "target_bytes": target_bytes}
    started = monotonic()  # the report's seconds leave out the JVM start (benchmarks read them)
    phases = report["phases"] = {}  # seconds per step: where a run's time goes (make bench)
    lap = stopwatch(phases)

    # The day's files only (a sample of their footers gives the schema, not every file).
    raw = read_sink(spark, args.lake_path, skip_files=expired, days=[day])
    lap("read")
    # Before anything reads a column: a lake without contract fields fails with their names.
    missing = [c for c in contract.FIELD_NAMES if raw is not None and c not in raw.columns]
    if missing:
        raise CompactionFailed(f"{day}: the lake lacks contract field(s) {missing}")
    day_rows = None
    if raw is not None:
        # The day's files are read once: the listing of the inputs with the source totals,
        # then the dedupe read the cached rows (each pass over thousands of small files in
        # S3 costs their opening again).
        day_rows = with_source_file(W.day_slice(raw, day)).persist(StorageLevel.MEMORY_AND_DISK)
    inputs: list[str] = []
    report["source"] = {"files": 0, "bytes": 0, "rows": 0, "distinct_ids": 0, "revenue": 0.0}
    if day_rows is not None:
        report["source"], inputs = source_summary(day_rows)
        lap("scan")
    if report["source"]["rows"] == 0:
        # Nothing (more) landed for the day (or the lake is new): leave the tables as they
        # are; a day whose raw files were all expired keeps its warehouse rows.
        report["status"] = "empty"
        log.warning("%s: no committed raw events for the day; tables left unchanged", day)
        if day_rows is not None:
            day_rows.unpersist()
        return report, inputs
    deduped = W.dedupe_day(day_rows).drop(FILE_PATH, FILE_SIZE)
    marker = f"/{pipeline.DAY_PARTITION}={day.isoformat()}/"
    exists = table_exists(spark, events_table)
    if any(marker in f for f in expired) and exists:
        # Retention deleted some of the day's raw files: their events are the table's (a
        # verified run read them). Keep those rows, add the late ones it lacks.
        kept = spark.table(events_table).where(_day_filter(day))
        late = deduped.join(kept.select("event_id"), "event_id", "left_anti")
        deduped = kept.unionByName(late, allowMissingColumns=True)
        report["carried_from_table"] = kept.count()
    if exists:
        # The table's columns, in its order: a column the day's (older) files lack is null.
        deduped = spark.table(events_table).limit(0).unionByName(deduped, allowMissingColumns=True)
    deduped = deduped.persist()
    source, failures = W.checked(deduped, day)
    day_rows.unpersist()
    lap("dedupe_check")
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
    bytes_per_row = measured_bytes_per_row(spark, events_table) or args.bytes_per_row
    n_files = W.output_files(source["distinct_ids"], bytes_per_row, target_bytes)
    report["plan"] = {"files": n_files, "bytes_per_row": round(bytes_per_row, 1)}
    with audit_branch(spark, events_table, day) as branch:
        report["branch"] = branch
        log.info(
            "writing %s on branch %s: %s file(s), %.1f B/row", day, branch, n_files, bytes_per_row
        )
        write_day(
            deduped.repartitionByRange(n_files, "category", "event_type", "event_time"),
            on_branch(events_table, branch),
            roll_bytes=int(target_bytes * ROLL_FACTOR),
        )
        lap("write")
        report["seconds"] = {"read_dedupe_write": round(monotonic() - started, 3)}

        # The audit, on the branch: readers of main see none of it yet.
        target = W.totals(spark.table(on_branch(events_table, branch)).where(_day_filter(day)))
        problems = []
        if target["rows"] != source["distinct_ids"]:
            problems.append(
                f"rows {target['rows']} != distinct source events {source['distinct_ids']}"
            )
        if target["distinct_ids"] != target["rows"]:
            problems.append(f"{target['rows'] - target['distinct_ids']} duplicate event_id(s)")
        if abs(target["revenue"] - source["revenue"]) > 0.005:
            problems.append(f"revenue {target['revenue']} != source {source['revenue']}")
        if problems:
            report["verification"] = problems
            raise CompactionFailed(
                f"{day}: verification failed; nothing was published (the table is as it was):\n"
                + "\n".join(f"  - {p}" for p in problems)
            )
        report["verification"] = []
        _publish(spark, events_table, branch, day)
    report["snapshot_id"] = current_snapshot(spark, events_table)
    report["target"] = {**target, **table_files(spark, events_table, day)}
    report["status"] = "verified"
    report["seconds"]["verify"] = round(
        monotonic() - started - report["seconds"]["read_dedupe_write"], 3
    )
    lap("verify")

    stored = spark.table(events_table).where(_day_filter(day))
    report["marts"] = write_marts(spark, stored, args.marts_namespace, day, day)
    lap("marts")
    deduped.unpersist()
    return report, inputs


def append_late(
    spark: SparkSession, args: CompactJob, late_files: Collection[str], expired: Collection[str]
) -> tuple[dict, list[str]]:
    """Add to a verified day the events of its late files (committed after the day's runs
    read it) that the table lacks, in one append commit, then verify and rebuild the day's
    marts. Only the late files are opened and the day's rows are not rewritten: a few late
    events a night cost a small file, not a day's compaction."""
    day: date = args.day
    events_table = f"{catalog.CATALOG}.{args.namespace}.{catalog.EVENTS_TABLE}"
    report: dict = {"day": day.isoformat(), "table": events_table, "mode": "late-append"}
    started = monotonic()
    raw = read_sink(spark, args.lake_path, skip_files=expired, days=[day])
    if raw is None:
        raise CompactionFailed(f"{day}: the sink's log lists no file of the day")
    # Filtered on ``_metadata`` itself: Spark prunes the other files before opening any.
    late = W.day_slice(raw, day).where(F.col("_metadata.file_path").isin(*sorted(late_files)))
    rows = with_source_file(late)
    report["source"], inputs = source_summary(rows)
    with audit_branch(spark, events_table, day) as branch:
        report["branch"] = branch
        existing = spark.table(on_branch(events_table, branch)).where(_day_filter(day))
        before = W.totals(existing)
        # The table's columns, in its order (a column the late rows lack is null).
        new = existing.limit(0).unionByName(
            W.dedupe_day(rows)
            .drop(FILE_PATH, FILE_SIZE)
            .join(existing.select("event_id"), "event_id", "left_anti"),
            allowMissingColumns=True,
        )
        new = new.persist()
        added, failures = W.checked(new, day)
        report["appended"] = added["rows"]
        if failures:
            report["expectations"] = [str(f) for f in failures]
            raise CompactionFailed(
                f"{day}: {len(failures)} expectation(s) failed on its late events; nothing "
                "was written:\n" + "\n".join(f"  - {f}" for f in failures)
            )
        report["expectations"] = []
        if added["rows"]:
            new.coalesce(1).writeTo(on_branch(events_table, branch)).append()
        target = W.totals(spark.table(on_branch(events_table, branch)).where(_day_filter(day)))
        problems = []
        if target["rows"] != before["rows"] + added["rows"]:
            problems.append(f"rows {target['rows']} != {before['rows']} + {added['rows']} appended")
        if target["distinct_ids"] != target["rows"]:
            problems.append(f"{target['rows'] - target['distinct_ids']} duplicate event_id(s)")
        if abs(target["revenue"] - before["revenue"] - added["revenue"]) > 0.005:
            problems.append(
                f"revenue {target['revenue']} != {before['revenue']} + {added['revenue']} appended"
            )
        new.unpersist()
        if problems:
            report["verification"] = problems
            raise CompactionFailed(
                f"{day}: verification of the late append failed; nothing was published (the "
                "day is as it was):\n" + "\n".join(f"  - {p}" for p in problems)
            )
        report["verification"] = []
        if added["rows"]:
            _publish(spark, events_table, branch, day)
    report["snapshot_id"] = current_snapshot(spark, events_table)
    report["target"] = {**target, **table_files(spark, events_table, day)}
    stored = spark.table(events_table).where(_day_filter(day))
    report["status"] = "verified"
    # Always: a run that appended and then died before the marts left them behind the table.
    report["marts"] = write_marts(spark, stored, args.marts_namespace, day, day)
    report["seconds"] = {"append_verify_marts": round(monotonic() - started, 3)}
    return report, inputs


def _publish(spark: SparkSession, table: str, branch: str, day: date) -> None:
    try:
        publish(spark, table, branch)
    except PublishConflict as exc:
        raise CompactionFailed(
            f"{day}: another run replaced the day while this one audited it; nothing was "
            f"published, the other run's day stays ({exc})"
        ) from exc


# How Spark says a job ran out of memory: a task's (SparkOutOfMemoryError: an aggregation's or
# a sort's memory), or the JVM's heap.
OUT_OF_MEMORY_MARKERS = ("OutOfMemoryError", "OUT_OF_MEMORY", "UNABLE_TO_ACQUIRE_MEMORY")


def out_of_memory(exc: BaseException, day: date, heap: str) -> str | None:
    """The failure's reason when ``exc`` is Spark running out of memory, naming the setting
    that gives it more (``None`` for any other failure)."""
    if not any(marker in str(exc) for marker in OUT_OF_MEMORY_MARKERS):
        return None
    return (
        f"{day}: the day did not fit in the compaction's memory (spark.driver.memory={heap}); "
        "run it again with a larger driver_memory, the compact_warehouse param (a day's "
        "compaction is idempotent)"
    )


def run_day(spark: SparkSession, conn, args: CompactJob, late_files: Collection[str] = ()) -> dict:
    """Compact one day, or add its ``late_files`` to it, and record the run (and, once
    verified, the raw files it read). A day too large for the memory fails with the setting
    to raise (:func:`out_of_memory`), recorded like any other failed run."""
    try:
        if late_files:
            report, inputs = append_late(spark, args, late_files, runs.expired_files(conn))
        else:
            report, inputs = compact(spark, args, runs.expired_files(conn))
    except Exception as exc:
        heap = spark.sparkContext.getConf().get("spark.driver.memory") or SPARK_DEFAULT_HEAP
        reason = (
            str(exc) if isinstance(exc, CompactionFailed) else out_of_memory(exc, args.day, heap)
        )
        if reason is None:
            raise
        report = {"day": args.day.isoformat(), "error": reason, "status": "failed"}
        runs.record(conn, args.day, "failed", report)
        log.error("%s", reason)
        return report
    status = report.get("status", "verified")
    if status == "verified":
        # The files first: a concurrent run looking for late days counts a verified day's
        # files as read only once they are recorded.
        runs.record_inputs(conn, args.day, inputs)
    runs.record(conn, args.day, status, report)
    if status == "verified":
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
    return report


def late_days(spark: SparkSession, conn, args: CompactJob) -> dict[date, set[str]]:
    """Verified days (but ``args.day``) whose raw partition holds files the sink committed
    after the day's verified runs read it: day -> the files no run read."""
    logged = files_by_day(logged_files(spark, args.lake_path) or [])
    verified = runs.verified_days(conn) - {args.day}
    recorded = runs.recorded_inputs(conn, verified & set(logged))
    return runs.stale_days(logged, recorded, verified)


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
        report = run_day(spark, conn, args)
        if args.late_days:
            # Late events: days compacted before whose partition got files since. Each gets
            # the events it lacks appended (idempotent), recorded on its own.
            report["late_days"] = []
            for day, files in sorted(late_days(spark, conn, args).items()):
                log.warning("%s: %s raw file(s) arrived after its compaction", day, len(files))
                again = run_day(spark, conn, dataclasses.replace(args, day=day), files)
                report["late_days"].append(
                    {
                        "day": day.isoformat(),
                        "late_files": len(files),
                        "appended": again.get("appended"),
                        "status": again["status"],
                    }
                    | ({"error": again["error"]} if "error" in again else {})
                )
        write_report(spark, args.report, "compaction", report)
        failed = [report] + [d for d in report.get("late_days", []) if d["status"] == "failed"]
        return 1 if any(r.get("status") == "failed" for r in failed) else 0
    finally:
        conn.close()
        spark.stop()


if __name__ == "__main__":
    sys.exit(main())
