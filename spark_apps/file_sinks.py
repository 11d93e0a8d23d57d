"""The stream's file sinks (Parquet on S3): written through Spark's own ``FileStreamSink`` from
``foreachBatch`` (exactly once by batch id), read back through their ``_spark_metadata`` log.

``spark.read.parquet(<sink path>)`` reads ``<sink path>/_spark_metadata`` and sees exactly the
committed files (never a partial or orphaned one), unlike globbing the objects. The stream
writes; the lake report, reconcile, replay and compaction read.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.utils import AnalysisException


def file_sink(spark: SparkSession, path: str, partition_by: Sequence[str]):
    """Spark's own streaming file sink (Parquet) at ``path``, driven from ``foreachBatch``:
    ``addBatch(batch_id, df)`` writes the files and commits them to ``<path>/_spark_metadata``,
    skipping a batch id already committed, exactly as the sink does behind ``writeStream``.
    Readers that go through the log (Spark reading the path) see each batch once or not at all."""
    jvm = spark._jvm
    utils = jvm.org.apache.spark.api.python.PythonUtils
    return jvm.org.apache.spark.sql.execution.streaming.sinks.FileStreamSink(
        spark._jsparkSession,
        path,
        jvm.org.apache.spark.sql.execution.datasources.parquet.ParquetFileFormat(),
        utils.toSeq(list(partition_by)).toList(),
        utils.toScalaMap({}),
    )


def read_sink(spark: SparkSession, path: str, skip_days: Sequence[date] = ()) -> DataFrame | None:
    """The committed rows of a file sink (``None`` before its first commit). ``skip_days``:
    event days whose raw files retention deleted (the sink's log still lists them; pruning
    the partitions keeps their files from being opened)."""
    try:
        if not skip_days:
            return spark.read.option("mergeSchema", "true").parquet(path)  # old files lack columns
        # Merging the schema reads every listed file's footer: infer it tolerating the deleted
        # files, then read strictly with that schema, pruned to the live days.
        schema = (
            spark.read.option("mergeSchema", "true")
            .option("ignoreCorruptFiles", "true")
            .parquet(path)
            .schema
        )
        return (
            spark.read.schema(schema)
            .parquet(path)
            .where(~F.col("event_date").isin(*[d.isoformat() for d in skip_days]))
        )
    except AnalysisException as exc:  # nothing committed yet: no path, or a log with no files
        message = str(exc).lower()
        if (
            "path_not_found" in message
            or "path does not exist" in message
            or "infer schema" in message
        ):
            return None
        raise
