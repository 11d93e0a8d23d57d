"""The stream's file sinks (Parquet on S3): written through Spark's own ``FileStreamSink`` from
``foreachBatch`` (exactly once by batch id), read back through their ``_spark_metadata`` log.

``spark.read.parquet(<sink path>)`` reads ``<sink path>/_spark_metadata`` and sees exactly the
committed files (never a partial or orphaned one), unlike globbing the objects. The stream
writes; the lake report, reconcile, replay and compaction read.
"""

from __future__ import annotations

import os
from collections.abc import Collection, Iterable, Sequence
from datetime import date

from pyarrow import fs as pafs
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.types import StructType
from pyspark.sql.utils import AnalysisException

from include.endpoints import S3Endpoint
from include.pipeline import DAY_PARTITION
from spark_apps import sink_log
from spark_apps.sink_log import object_path


def file_sink(
    spark: SparkSession, path: str, partition_by: Sequence[str], retention_ms: int | None = None
):
    """Spark's own streaming file sink (Parquet) at ``path``, driven from ``foreachBatch``:
    ``addBatch(batch_id, df)`` writes the files and commits them to ``<path>/_spark_metadata``,
    skipping a batch id already committed, exactly as the sink does behind ``writeStream``.
    Readers that go through the log (Spark reading the path) see each batch once or not at all.
    ``retention_ms``: the log's (its entries older than that leave it at its next compaction;
    the stream archives them first: spark_apps/sink_log.py)."""
    jvm = spark._jvm
    utils = jvm.org.apache.spark.api.python.PythonUtils
    return jvm.org.apache.spark.sql.execution.streaming.sinks.FileStreamSink(
        spark._jsparkSession,
        path,
        jvm.org.apache.spark.sql.execution.datasources.parquet.ParquetFileFormat(),
        utils.toSeq(list(partition_by)).toList(),
        utils.toScalaMap({} if retention_ms is None else {"retention": f"{int(retention_ms)}ms"}),
    )


def plain_encoded(columns: Collection[str]) -> dict[str, str]:
    """Session settings that make Spark's Parquet writer (parquet-java) write ``columns``
    without a dictionary (``parquet.enable.dictionary#<column>``). A column whose values are
    nearly all distinct (ids, offsets, timestamps) gains nothing from one, but the writer
    hashes each value into it until it outgrows its page limit and falls back to plain for
    the rest of the file: on the lake's write that hashing was the largest single cost of a
    warm micro-batch (bench/limits.md). Readers see no difference. Session settings, not the
    sink's options: those reached the string columns but not the INT96 timestamps."""
    return {f"parquet.enable.dictionary#{c}": "false" for c in sorted(columns)}


def logged_files(spark: SparkSession, path: str) -> list[str] | None:
    """The files a sink's log lists as committed (``None`` before its first commit), as
    ``_metadata.file_path`` names them; no file is opened. Not the archive's
    (:func:`committed_files` adds them)."""
    try:
        listed = spark.read.schema("event_id string").parquet(path).inputFiles()
    except AnalysisException as exc:
        if _nothing_committed(exc):
            return None
        raise
    return [_as_metadata_path(p) for p in listed]


def session_filesystem(spark: SparkSession, path: str) -> pafs.FileSystem:
    """pyarrow's file system for a sink at ``path``: a local directory's, or S3 at the
    session's s3a endpoint with the keys its Hadoop settings hold (a test's reader), else the
    driver's ``AWS_*`` environment (a Spark app's)."""
    if object_path(path).startswith("/"):
        return pafs.LocalFileSystem()
    hadoop = spark.sparkContext._jsc.hadoopConfiguration()
    env = dict(os.environ)
    if hadoop.get("fs.s3a.access.key"):
        env["AWS_ACCESS_KEY_ID"] = hadoop.get("fs.s3a.access.key")
        env["AWS_SECRET_ACCESS_KEY"] = hadoop.get("fs.s3a.secret.key") or ""
    return S3Endpoint.from_aws_env(hadoop.get("fs.s3a.endpoint") or "", env).pyarrow_filesystem()


def archived_files(
    spark: SparkSession, path: str, partitions: Collection[str] | None = None
) -> set[str]:
    """The files a sink's log moved to its archive (of ``partitions`` only when given;
    spark_apps/sink_log.py), as ``_metadata.file_path`` names them."""
    return set(sink_log.archived_entries(session_filesystem(spark, path), path, partitions))


def committed_files(
    spark: SparkSession, path: str, partitions: Collection[str] | None = None
) -> tuple[list[str] | None, set[str]]:
    """A sink's committed files: those its log lists (:func:`logged_files`) and those only
    its log's archive holds (:func:`archived_files`)."""
    logged, archived = logged_files(spark, path), archived_files(spark, path, partitions)
    if logged is None and not archived:
        return None, set()
    return logged or [], archived - set(logged or [])


def partition_value(file_path: str, column: str) -> str | None:
    """The value of a Hive-style partition ``column`` in a file's path (``.../column=v/...``)."""
    for part in file_path.split("/"):
        if part.startswith(f"{column}="):
            return part.split("=", 1)[1]
    return None


def files_by_day(files: Iterable[str]) -> dict[date, set[str]]:
    """Files grouped by their event day partition."""
    out: dict[date, set[str]] = {}
    for f in files:
        value = partition_value(f, DAY_PARTITION)
        if value:
            out.setdefault(date.fromisoformat(value), set()).add(f)
    return out


def live_files(
    logged: Iterable[str],
    skip_files: Collection[str] = (),
    skip_days: Sequence[date] = (),
    days: Collection[date] = (),
    day_partition: str = DAY_PARTITION,
) -> list[str]:
    """Of a sink's ``logged`` files, those not in ``skip_files`` nor of ``skip_days``, and of
    ``days`` only when given (see :func:`read_sink`)."""
    skip = set(skip_files)
    skipped = {d.isoformat() for d in skip_days}
    wanted = {d.isoformat() for d in days}
    return [
        f
        for f in logged
        if f not in skip
        and partition_value(f, day_partition) not in skipped
        and (not wanted or partition_value(f, day_partition) in wanted)
    ]


def sink_schema(spark: SparkSession, path: str, files: Sequence[str]) -> StructType:
    """The sink's schema (its partition columns included) from a sample of ``files``' footers
    (:func:`schema_sample`): the files of one sink share the schema of the stream version that
    wrote them, and every footer of a day of 2,000 small files took ~70 s on 2 cores."""
    return (
        spark.read.option("mergeSchema", "true")
        .option("basePath", path)
        .parquet(*schema_sample(files))
        .schema
    )


def read_sink(
    spark: SparkSession,
    path: str,
    skip_files: Collection[str] = (),
    skip_days: Sequence[date] = (),
    days: Collection[date] = (),
    day_partition: str = DAY_PARTITION,
) -> DataFrame | None:
    """The committed rows of a file sink (``None`` before its first commit).

    ``skip_files``: files raw retention deleted (the sink's log still lists them; a filter on
    ``_metadata.file_path`` prunes them before any is opened). ``skip_days``: event days
    whose files were all deleted before retention recorded files (pruned by partition).
    ``days``: only these days (``None`` when none of their files is committed): only their
    files are opened, and only their footers are read for the schema, not every file the sink
    holds. ``day_partition``: the sink's day partition column (the lake's event day by
    default; the dead letters' is their detection day)."""
    partitions = {f"{day_partition}={d.isoformat()}" for d in days} if days else None
    try:
        # The archive first: without it (and without filters) Spark's read of the path, which
        # lists the log itself, is the whole read.
        archived = archived_files(spark, path, partitions)
        if not skip_files and not skip_days and not days and not archived:
            return spark.read.option("mergeSchema", "true").parquet(path)  # old files lack columns
        logged = logged_files(spark, path)
        if logged is None and not archived:
            return None
        logged = logged or []  # an upgraded sink's log may be empty: spark_apps/upgrade.py
        archived -= set(logged)
        live = live_files([*logged, *archived], skip_files, skip_days, days, day_partition)
        if not live:
            return None
        # The schema from a sample of the live files' footers (a deleted file fails the
        # inference whatever ignore* option is set), then the log read strictly with it; files
        # the log's archive holds too are read by name (the log no longer lists them).
        schema = sink_schema(spark, path, live)
        if archived:
            frame = spark.read.schema(schema).option("basePath", path).parquet(*live)
        else:
            frame = spark.read.schema(schema).parquet(path)
        skipped = sorted(d.isoformat() for d in skip_days)
        wanted = sorted(d.isoformat() for d in days)
        if skipped:
            frame = frame.where(~F.col(day_partition).cast("string").isin(*skipped))
        if wanted:
            frame = frame.where(F.col(day_partition).cast("string").isin(*wanted))
        if skip_files:
            frame = frame.where(~F.col("_metadata.file_path").isin(*sorted(skip_files)))
        return frame
    except AnalysisException as exc:
        if _nothing_committed(exc):
            return None
        raise


# Footers read for a sink's schema (:func:`sink_schema`).
SCHEMA_SAMPLE = 32


def schema_sample(files: Sequence[str], size: int = SCHEMA_SAMPLE) -> list[str]:
    """Up to ``size`` of ``files``, spread evenly over them in name order, the last included.
    The files of one sink share the schema of the stream version that wrote them; a column
    that only unsampled files hold would be left out (Spark's own default reads one file)."""
    ordered = sorted(files)
    if len(ordered) <= size:
        return ordered
    step = len(ordered) / (size - 1)
    picked = {ordered[min(len(ordered) - 1, round(i * step))] for i in range(size - 1)}
    return sorted(picked | {ordered[-1]})


def _nothing_committed(exc: AnalysisException) -> bool:
    """No path, or a log with no files."""
    message = str(exc).lower()
    return (
        "path_not_found" in message
        or "path does not exist" in message
        or ("infer schema" in message)
    )


def _as_metadata_path(listed: str) -> str:
    """``inputFiles()`` names a local file ``file:///x``, ``_metadata.file_path`` ``file:/x``
    (S3 paths read the same either way)."""
    return "file:/" + listed[len("file:///") :] if listed.startswith("file:///") else listed
