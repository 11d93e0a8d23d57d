"""Nightly compaction: one event day of the lake -> the Iceberg warehouse and its marts.

Reads the day's raw events *through the file sink's metadata* (committed files only),
deduplicates them by ``event_id``, checks the contract's expectations (in Arrow, in the
driver; a day above ``--arrow-max-mb`` in Spark, on its executors), and replaces the day in
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
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from time import monotonic

import pyarrow as pa
import pyarrow.dataset as ds
from py4j.protocol import Py4JJavaError
from pyarrow import fs as pafs
from pyiceberg.io.pyarrow import schema_to_pyarrow
from pyiceberg.schema import Schema
from pyspark import StorageLevel
from pyspark.errors import IllegalArgumentException as JvmIllegalArgument
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema
from pyspark.sql.types import StructType

from include import pipeline
from include.analytics import migrations, store
from include.endpoints import PostgresEndpoint
from include.events import contract
from include.spark.jobs import SPARK_DEFAULT_HEAP, CompactJob
from include.warehouse import catalog, marts, runs
from spark_apps import arrow_lake
from spark_apps.file_sinks import files_by_day, live_files, read_sink
from spark_apps.reports import stopwatch, write_report
from spark_apps.transforms import compaction as C
from spark_apps.transforms import warehouse as W

log = logging.getLogger("compact_events")


class CompactionFailed(RuntimeError):
    """An expectation or a verification failed; the message is the report."""


PREFETCH_MAX_BLOCKS = 1024  # 8 GiB of 8 MiB blocks: more than any file of the warehouse

# Spark's engine (:func:`spark_day`) reads a day's thousands of small raw files once into a
# cache (make bench, bench/limits.md, compaction, before the Arrow path):
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


def read_day(
    s3: pafs.FileSystem,
    files: Sequence[str],
    day: date,
    sizes: Mapping[str, int],
    schema: pa.Schema | None = None,
) -> pa.Table:
    """The rows of the day's committed raw ``files`` (``sizes``: the sink's log), in Arrow,
    with the lake's columns (``schema``, by default
    :func:`~spark_apps.arrow_lake.lake_schema`; a column older files lack is null)."""
    schema = schema or arrow_lake.lake_schema(s3, files, pipeline.LAKE_PARTITIONS)
    # Every row of a day's partition is of that day; the filter (on the partition, so no row
    # is copied) is what Spark's read of the partition did, kept for a file misplaced by hand.
    where = ds.field(pipeline.DAY_PARTITION) == day
    return arrow_lake.read_files(s3, files, schema, pipeline.LAKE_PARTITIONS, where, sizes)


def source_summary(rows: pa.Table, files: Sequence[str], sizes: dict[str, int]) -> dict:
    """The raw files read (their count and bytes) and the rows' totals."""
    return {"files": len(files), "bytes": sum(sizes.get(f, 0) for f in files), **C.totals(rows)}


def expected(checked: tuple[dict, list[C.Failure]], day: date, what: str) -> dict:
    """The totals of :func:`~spark_apps.transforms.compaction.checked` (or its Spark twin);
    :class:`CompactionFailed` naming each broken expectation."""
    totals, failures = checked
    if failures:
        raise CompactionFailed(
            f"{day}: {len(failures)} expectation(s) failed{what}; nothing was written:\n"
            + "\n".join(f"  - {f}" for f in failures)
        )
    return totals


def table_files(spark: SparkSession, table: str, day: date) -> dict:
    """Live data files of the day in the Iceberg table: count, bytes, sizes."""
    files = spark.sql(
        f"SELECT file_size_in_bytes, lower_bounds, readable_metrics.event_time.lower_bound AS lo "
        f"FROM {table}.files"
    ).where(F.to_date("lo") == F.lit(day.isoformat()).cast("date"))
    sizes = sorted(r[0] for r in files.select("file_size_in_bytes").collect())
    return {"files": len(sizes), "bytes": sum(sizes), "file_bytes": sizes}


def current_snapshot(spark: SparkSession, table: str) -> int | None:
    """The id of ``main``'s current commit (None for a table never committed)."""
    snapshot = _iceberg(spark, table).currentSnapshot()
    return None if snapshot is None else snapshot.snapshotId()


def ensure_table(spark: SparkSession, table: str, schema: StructType, target_bytes: int) -> None:
    """The events table, created if missing (in one commit, through Iceberg's catalog API:
    partitioned by ``days(event_time)``, sorted by :data:`C.WRITE_ORDER` within its files,
    files of ``target_bytes``, zstd, format v2); a column the day's rows have and the table
    lacks (a field the contract gained) is added, null in the days written before; an older
    table gets the sort order and file size. A table that has all this gets no commit."""
    jvm = spark.sparkContext._jvm
    ice = jvm.org.apache.iceberg
    cat, _, rest = table.partition(".")
    namespace, _, name = rest.rpartition(".")
    icebergs = spark._jsparkSession.sessionState().catalogManager().catalog(cat).icebergCatalog()
    ident = ice.catalog.TableIdentifier.parse(f"{namespace}.{name}")
    if not icebergs.tableExists(ident):
        columns = ice.spark.SparkSchemaUtil.convert(
            spark._jsparkSession.parseDataType(schema.json())
        )
        order = ice.SortOrder.builderFor(columns)
        for column in C.WRITE_ORDER:
            order = order.asc(column)
        properties = {
            "format-version": "2",
            "write.parquet.compression-codec": "zstd",
            "write.target-file-size-bytes": str(target_bytes),
        }
        try:
            created = (
                icebergs.buildTable(ident, columns)
                .withPartitionSpec(ice.PartitionSpec.builderFor(columns).day("event_time").build())
                .withSortOrder(order.build())
                .withProperties(properties)
                .create()
            )
            created.newAppend().commit()  # the empty first commit an audit branch grows from
        except Py4JJavaError as exc:  # another run created it meanwhile
            if exc.java_exception.getClass().getSimpleName() != "AlreadyExistsException":
                raise
    iceberg = _iceberg(spark, table)
    have = {f.name() for f in iceberg.schema().columns()}
    for f in schema.fields:
        if f.name not in have:
            spark.sql(f"ALTER TABLE {table} ADD COLUMN `{f.name}` {f.dataType.simpleString()}")
    sorted_by = [
        (iceberg.schema().findColumnName(f.sourceId()), str(f.direction()))
        for f in iceberg.sortOrder().fields()
    ]
    if sorted_by != [(c, "ASC") for c in C.WRITE_ORDER]:
        order = ", ".join(C.WRITE_ORDER)
        spark.sql(f"ALTER TABLE {table} WRITE LOCALLY ORDERED BY {order}")
    if iceberg.properties().get("write.target-file-size-bytes") != str(target_bytes):
        spark.sql(
            f"ALTER TABLE {table} SET TBLPROPERTIES "
            f"('write.target-file-size-bytes'='{target_bytes}')"
        )


def ensure_namespaces(spark: SparkSession, *names: str) -> None:
    """The catalog's namespaces ``names``, created if missing (Spark's catalog API)."""
    gateway = spark.sparkContext._gateway
    lake = spark._jsparkSession.sessionState().catalogManager().catalog(catalog.CATALOG)
    for name in names:
        parts = gateway.new_array(gateway.jvm.java.lang.String, 1)
        parts[0] = name
        if lake.namespaceExists(parts):
            continue
        try:
            lake.createNamespace(parts, {})
        except Py4JJavaError as exc:  # another run created it meanwhile
            if "AlreadyExists" not in exc.java_exception.getClass().getSimpleName():
                raise


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


# A write task of the Spark engine holds one planned file. Iceberg rolls a file when its
# *estimated* size reaches the write's limit, and until a row group is flushed that estimate
# counts buffered pages before compression (measured here: 3-4x the final size). At the target
# size it would cut files at a fraction of it, so the write's limit sits far above; the plan
# sizes the files.
ROLL_FACTOR = 10


def write_day(frame: DataFrame, table: str, roll_bytes: int | None = None) -> None:
    """Replace the partitions (days) ``frame`` holds rows of, in one Iceberg commit (Spark's
    engine: :func:`spark_day`): a dynamic overwrite, as :func:`write_files` commits."""
    writer = frame.writeTo(table).option("distribution-mode", "none")
    if roll_bytes:
        writer = writer.option("target-file-size-bytes", str(roll_bytes))
    writer.overwritePartitions()


def replace_day(frame: DataFrame, table: str, condition) -> None:
    """Atomically replace the rows matching ``condition`` (one Iceberg commit), keeping the
    frame's partitioning (one file per task)."""
    frame.writeTo(table).option("distribution-mode", "none").overwrite(condition)


def iceberg_arrow_schema(spark: SparkSession, table: str) -> pa.Schema:
    """The Iceberg table's schema in Arrow, each field with its Iceberg id (``PARQUET:field_id``:
    how Iceberg's readers match a data file's columns), by pyiceberg's own mapping."""
    jvm = spark.sparkContext._jvm
    written = jvm.org.apache.iceberg.SchemaParser.toJson(_iceberg(spark, table).schema())
    schema = schema_to_pyarrow(Schema.model_validate_json(written), include_field_ids=True)
    # Its strings as Arrow's plain ones, which the rows hold (no copy to 64-bit offsets;
    # Parquet stores both alike).
    return pa.schema(
        f.with_type(pa.string()) if pa.types.is_large_string(f.type) else f for f in schema
    )


def write_files(
    spark: SparkSession,
    table: str,
    branch: str,
    s3: pafs.FileSystem,
    day: date,
    parts: Sequence[pa.Table],
    *,
    replace: bool,
    schema: pa.Schema | None = None,
) -> list[str]:
    """Write ``parts`` (rows of ``day``, one file each) as Parquet data files of ``table`` and
    commit them to ``branch`` in one commit: a replace of the day's partition (``replace``,
    the dynamic overwrite a cherry-pick can replay onto a ``main`` that moved on:
    :func:`publish`) or an append. pyarrow writes the files where the table's location
    provider says (zstd, or the table's codec), with ``schema`` (by default
    :func:`iceberg_arrow_schema`); Iceberg reads each footer for its metrics.
    The table is partitioned by ``days(event_time)`` (:func:`ensure_table`). Returns the
    files' locations."""
    jvm = spark.sparkContext._jvm
    ice = jvm.org.apache.iceberg
    iceberg = _iceberg(spark, table)
    spec = iceberg.spec()
    transforms = [str(f.transform()) for f in spec.fields()]
    if transforms != ["day"]:
        raise CompactionFailed(f"{table}: partitioned by {transforms}, not days(event_time)")
    partition = ice.PartitionData(spec.partitionType())
    partition.set(0, (day - date(1970, 1, 1)).days)
    schema = schema or iceberg_arrow_schema(spark, table)
    codec = iceberg.properties().getOrDefault("write.parquet.compression-codec", "zstd")
    metrics = ice.MetricsConfig.forTable(iceberg)
    update = iceberg.newReplacePartitions() if replace else iceberg.newAppend()
    token = uuid.uuid4().hex
    written = []
    for i, rows in enumerate(parts):
        location = iceberg.locationProvider().newDataLocation(
            spec, partition, f"{i:05d}-{token}.parquet"
        )
        size = arrow_lake.write_file(s3, location, C.conformed(rows, schema), codec)
        data_file = (
            ice.DataFiles.builder(spec)
            .withPath(location)
            .withFileSizeInBytes(size)
            .withFormat(ice.FileFormat.PARQUET)
            .withPartition(partition)
            .withMetrics(
                ice.parquet.ParquetUtil.fileMetrics(
                    iceberg.io().newInputFile(location, size), metrics
                )
            )
            .withSortOrder(iceberg.sortOrder())
            .build()
        )
        (update.addFile if replace else update.appendFile)(data_file)
        written.append(location)
    update.toBranch(branch).commit()
    return written


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
    iceberg = _iceberg(spark, table)  # loaded once: each commit below refreshes it
    if iceberg.currentSnapshot() is None:
        iceberg.newAppend().commit()
    branch = audit_branch_name(day, datetime.now(UTC), uuid.uuid4().hex[:8])
    main = iceberg.currentSnapshot().snapshotId()
    iceberg.manageSnapshots().createBranch(branch, main).commit()
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


def _refused(commit: Callable[[], object]) -> str | None:
    """None once ``commit`` is done; Iceberg's reason when it refuses: a validation, or a
    fast-forward whose ``main`` moved on meanwhile (Iceberg re-checks it at the commit, after
    reloading the table, and PySpark raises that as its own ``IllegalArgumentException``)."""
    try:
        commit()
        return None
    except Py4JJavaError as exc:
        if exc.java_exception.getClass().getSimpleName() != "ValidationException":
            raise
        return str(exc.java_exception.getMessage())
    except JvmIllegalArgument as exc:
        if "Cannot fast-forward" not in str(exc):
            raise
        return str(exc)


def fast_forward(iceberg, branch: str) -> str | None:
    """``main`` of ``iceberg`` (a loaded table) fast-forwarded to ``branch``; None once done,
    the reason when ``main`` is no longer an ancestor of the branch (another run published
    since the table was loaded)."""
    return _refused(lambda: iceberg.manageSnapshots().fastForwardBranch("main", branch).commit())


def publish(spark: SparkSession, table: str, branch: str) -> None:
    """Write-audit-publish, publish: ``main`` takes the audited branch's commit. A
    fast-forward when ``main`` has not moved since the branch was opened; else (or when it
    moved between the check and the commit: two runs publishing at once) a cherry-pick of the
    branch's commit onto ``main``, which keeps what other runs committed meanwhile (other
    days) and which Iceberg refuses when one of them replaced the same day
    (:class:`PublishConflict`; ``main`` keeps the other run's day)."""
    util = spark.sparkContext._jvm.org.apache.iceberg.util.SnapshotUtil
    iceberg = _iceberg(spark, table)
    ref = iceberg.refs().get(branch)
    if ref is None:
        raise PublishConflict(f"the audit branch {branch} is gone (removed by the maintenance?)")
    head = ref.snapshotId()
    if util.isAncestorOf(iceberg, head, iceberg.currentSnapshot().snapshotId()):
        if fast_forward(iceberg, branch) is None:
            return
        iceberg = _iceberg(spark, table)  # main moved on between the check and the commit
    # (The snapshot manager commits each operation as it is called.)
    reason = _refused(lambda: iceberg.manageSnapshots().cherrypick(head).commit())
    if reason is not None:
        raise PublishConflict(reason)


def measured_bytes_per_row(spark: SparkSession, table: str) -> float | None:
    """What the table's live files hold per row (None for an empty table), from its current
    commit's summary."""
    snapshot = _iceberg(spark, table).currentSnapshot()
    summary = {} if snapshot is None else snapshot.summary()
    size, rows = summary.get("total-files-size"), summary.get("total-records")
    return int(size) / int(rows) if size and rows and int(rows) else None


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


@dataclasses.dataclass(frozen=True)
class DayFiles:
    """What a run reads of its day (:func:`compact`)."""

    inputs: Sequence[str]  # the committed raw files, less those retention deleted
    sizes: Mapping[str, int]  # each file's bytes (the sink's log)
    schema: pa.Schema  # the lake's columns (:func:`~spark_apps.arrow_lake.lake_schema`)
    expired: Collection[str]  # raw files retention deleted
    carry: bool  # some of the day's files were deleted: keep the table's rows of them


@dataclasses.dataclass
class DayRows:
    """A day's rows, deduplicated and checked, ready to be written (:func:`compact`)."""

    totals: dict  # rows, distinct ids, revenue (what the verification compares)
    write: Callable[[str, int, Prepared], object]  # (branch, files, the table) -> written
    release: Callable[[], object] = lambda: None  # frees the rows once written


def arrow_day(
    spark: SparkSession,
    s3: pafs.FileSystem,
    args: CompactJob,
    files: DayFiles,
    report: dict,
    lap: Callable[[str], None],
) -> DayRows | None:
    """The day in Arrow, in the driver (None when its files hold no row): read by pyarrow,
    deduplicated, checked; written by pyarrow as the table's files (:func:`write_files`)."""
    day = args.day
    events_table = f"{catalog.CATALOG}.{args.namespace}.{catalog.EVENTS_TABLE}"
    rows = read_day(s3, files.inputs, day, files.sizes, files.schema)
    report["source"] = C.totals(rows)
    lap("read")
    if not rows.num_rows:
        return None
    deduped = C.first_copies(rows)
    del rows
    totals = expected(C.checked(deduped, day), day, "")
    if files.carry:
        # Retention deleted some of the day's raw files: their events are the table's (a
        # verified run read them). Keep those rows, add the late ones it lacks.
        kept = spark.table(events_table).where(_day_filter(day)).toArrow()
        late = C.without_ids(deduped, kept["event_id"])
        deduped = pa.concat_tables([C.conformed(kept, deduped.schema), late])
        report["carried_from_table"] = kept.num_rows
        totals = expected(C.checked(deduped, day), day, " on the table's rows and the late ones")
    lap("dedupe_check")

    held = {"rows": deduped}
    del deduped

    def write(branch: str, n_files: int, ready: Prepared) -> object:
        parts = C.for_reading(held["rows"], n_files)
        return write_files(
            spark, events_table, branch, s3, day, parts, replace=True, schema=ready.schema
        )

    return DayRows(totals, write, held.clear)


def spark_day(
    spark: SparkSession,
    s3: pafs.FileSystem,
    args: CompactJob,
    files: DayFiles,
    report: dict,
    lap: Callable[[str], None],
) -> DayRows | None:
    """The day through Spark's executors, for a day larger than the driver's memory (None
    when its files hold no row): read through the sink's log once into a cache (memory, then
    local disk), deduplicated and checked by the same rules in Spark
    (:mod:`spark_apps.transforms.warehouse`), range-partitioned into the planned files and
    written by Iceberg's Spark writer as a replace of the day's partition."""
    day = args.day
    events_table = f"{catalog.CATALOG}.{args.namespace}.{catalog.EVENTS_TABLE}"
    raw = read_sink(spark, args.lake_path, skip_files=files.expired, days=[day])
    if raw is None:
        return None
    rows = raw.where(F.col(pipeline.DAY_PARTITION) == F.lit(day.isoformat()).cast("date"))
    rows = rows.persist(StorageLevel.MEMORY_AND_DISK)
    report["source"] = W.totals(rows)
    lap("read")
    if not report["source"]["rows"]:
        rows.unpersist()
        return None
    deduped = W.dedupe_day(rows)
    if files.carry:
        kept = spark.table(events_table).where(_day_filter(day))
        late = deduped.join(kept.select("event_id"), "event_id", "left_anti")
        deduped = kept.unionByName(late, allowMissingColumns=True)
        report["carried_from_table"] = kept.count()
    deduped = deduped.persist()
    try:
        totals = expected(W.checked(deduped, day), day, "")
    except CompactionFailed:
        deduped.unpersist()
        raise
    finally:
        rows.unpersist()
    lap("dedupe_check")

    def write(branch: str, n_files: int, ready: Prepared) -> object:
        # The table's columns, in its order: a column the day's (older) files lack is null.
        frame = spark.table(events_table).limit(0).unionByName(deduped, allowMissingColumns=True)
        return write_day(
            frame.repartitionByRange(n_files, *C.WRITE_ORDER),
            on_branch(events_table, branch),
            roll_bytes=int(args.target_file_mb * 1024 * 1024 * ROLL_FACTOR),
        )

    return DayRows(totals, write, deduped.unpersist)


def day_partitions(day: date) -> set[str]:
    """The lake's partition directory of ``day`` (the sink log's archive is kept by it)."""
    return {f"{pipeline.DAY_PARTITION}={day.isoformat()}"}


def compact(
    spark: SparkSession, args: CompactJob, expired: Collection[str] = ()
) -> tuple[dict, list[str]]:
    """Compact ``args.day``; return the report and the raw files it read (to record once
    verified). ``expired``: raw files retention deleted; a day that lost some keeps the
    warehouse's rows of them (verified before) and adds what arrived since.

    A day whose committed raw files hold at most ``args.arrow_max_mb`` goes through Arrow in
    the driver (:func:`arrow_day`); a larger one through Spark's executors
    (:func:`spark_day`). Either way the rows are read from the committed files the sink's log
    lists, deduplicated, checked and written as the table's data files on an audit branch;
    Spark's Iceberg verifies the branch, publishes it and builds the marts."""
    day: date = args.day
    events_table = f"{catalog.CATALOG}.{args.namespace}.{catalog.EVENTS_TABLE}"
    target_bytes = int(args.target_file_mb * 1024 * 1024)
    report: dict = {"day": day.isoformat(), "table": events_table, "target_bytes": target_bytes}
    started = monotonic()  # the report's seconds leave out the JVM start (benchmarks read them)
    phases = report["phases"] = {}  # seconds per step: where a run's time goes (make bench)
    lap = stopwatch(phases)
    s3 = arrow_lake.filesystem(spark)

    # The day's committed files only (the sink's log; no listing of the lake).
    logged = arrow_lake.sink_log(s3, args.lake_path, day_partitions(day)) or {}
    inputs = live_files(logged, skip_files=expired, days=[day])
    report["source"] = {"files": 0, "bytes": 0, "rows": 0, "distinct_ids": 0, "revenue": 0.0}
    if not inputs:
        return _empty(report, inputs)
    raw_bytes = sum(logged.get(f, 0) for f in inputs)
    report["engine"] = "arrow" if raw_bytes <= args.arrow_max_mb * 1024**2 else "spark"
    schema = arrow_lake.lake_schema(s3, inputs, pipeline.LAKE_PARTITIONS)
    # Before anything reads a column: a lake without contract fields fails with their names.
    missing = [c for c in contract.FIELD_NAMES if c not in schema.names]
    if missing:
        raise CompactionFailed(f"{day}: the lake lacks contract field(s) {missing}")
    marker = f"/{pipeline.DAY_PARTITION}={day.isoformat()}/"
    carry = any(marker in f for f in expired) and table_exists(spark, events_table)
    source_files = {"files": len(inputs), "bytes": raw_bytes}
    read = arrow_day if report["engine"] == "arrow" else spark_day
    with ThreadPoolExecutor(1, thread_name_prefix="catalog") as catalog_work:
        # The tables' catalog work runs in the JVM while the day is read (it needs only the
        # schema); a run whose rows then fail leaves at most an empty table behind.
        columns = from_arrow_schema(C.kept_columns(schema))
        prepared = catalog_work.submit(
            prepare_tables, spark, args, events_table, columns, target_bytes
        )
        day_files = DayFiles(inputs, logged, schema, expired, carry)
        rows = read(spark, s3, args, day_files, report, lap)
        if rows is not None:
            report["source"] = {**source_files, **report["source"]}
        ready = prepared.result()
    if rows is None:
        return _empty(report, inputs)
    source = rows.totals
    report["expectations"] = []
    bytes_per_row = ready.bytes_per_row or args.bytes_per_row
    n_files = W.output_files(source["distinct_ids"], bytes_per_row, target_bytes)
    report["plan"] = {"files": n_files, "bytes_per_row": round(bytes_per_row, 1)}
    with audit_branch(spark, events_table, day) as branch:
        report["branch"] = branch
        log.info(
            "writing %s on branch %s: %s file(s), %.1f B/row", day, branch, n_files, bytes_per_row
        )
        rows.write(branch, n_files, ready)
        rows.release()
        lap("write")
        report["seconds"] = {"read_dedupe_write": round(monotonic() - started, 3)}
        if report["engine"] == "arrow":
            # The most the day's rows took in Arrow at once (its memory pool's peak).
            report["arrow_peak_bytes"] = pa.default_memory_pool().max_memory()

        # The audit, on the branch, by Spark's Iceberg reader: readers of main see none of it.
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
    return report, inputs


def _empty(report: dict, inputs: list[str]) -> tuple[dict, list[str]]:
    """Nothing (more) landed for the day (or the lake is new): the tables' rows are left as
    they are; a day whose raw files were all expired keeps its warehouse rows."""
    report["status"] = "empty"
    log.warning("%s: no committed raw events for the day; tables left unchanged", report["day"])
    return report, inputs


@dataclasses.dataclass(frozen=True)
class Prepared:
    """The events table, ready for a day's files (:func:`prepare_tables`)."""

    schema: pa.Schema  # its columns in Arrow, with their Iceberg ids
    bytes_per_row: float | None  # what its files hold per row (None while it is empty)


def prepare_tables(
    spark: SparkSession, args: CompactJob, events_table: str, columns: StructType, target: int
) -> Prepared:
    """The namespaces and the events table with ``columns`` (:func:`ensure_table`). Runs in
    a thread of its own: its JVM thread gets the session as its active one (Spark's settings,
    the catalog among them, are looked up through it)."""
    spark.sparkContext._jvm.org.apache.spark.sql.SparkSession.setActiveSession(spark._jsparkSession)
    ensure_namespaces(spark, args.namespace, args.marts_namespace)
    ensure_table(spark, events_table, columns, target)
    return Prepared(
        iceberg_arrow_schema(spark, events_table), measured_bytes_per_row(spark, events_table)
    )


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
    s3 = arrow_lake.filesystem(spark)
    inputs = sorted(set(late_files) - set(expired))
    if not inputs:
        raise CompactionFailed(f"{day}: the sink's log lists no late file of the day")
    logged = arrow_lake.sink_log(s3, args.lake_path, day_partitions(day)) or {}
    rows = read_day(s3, inputs, day, logged)
    report["source"] = source_summary(rows, inputs, logged)
    with audit_branch(spark, events_table, day) as branch:
        report["branch"] = branch
        existing = spark.table(on_branch(events_table, branch)).where(_day_filter(day))
        before = W.totals(existing)
        known = existing.select("event_id").toArrow()["event_id"]
        new = C.without_ids(C.first_copies(rows), known)
        added = expected(C.checked(new, day), day, " on its late events")
        report["expectations"] = []
        report["appended"] = added["rows"]
        if added["rows"]:
            write_files(spark, events_table, branch, s3, day, [new], replace=False)
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
    that gives it more, or Arrow (the day's rows in the driver's Python) running out of the
    machine's (``None`` for any other failure)."""
    if isinstance(exc, MemoryError):  # pyarrow's ArrowMemoryError too
        return (
            f"{day}: the day's rows did not fit in the driver's memory ({exc}); run it on a "
            "machine with more free memory (a day's compaction holds about 3x its rows in "
            "Arrow; docs/warehouse.md) — a day's compaction is idempotent"
        )
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
    logged = files_by_day(arrow_lake.sink_log(arrow_lake.filesystem(spark), args.lake_path) or {})
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
    arrow_lake.use_jemalloc()
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
