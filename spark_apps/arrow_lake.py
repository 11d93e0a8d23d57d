"""The lake's and the warehouse's files through pyarrow, in a Spark app's driver: the
compaction reads a day's committed raw files and writes its Iceberg data files with pyarrow's
C++ Parquet reader and writer (bench/limits.md, compaction: ~5x Spark's read of small files in
a cold JVM). Which files to read comes from the sink's log (read here, :func:`sink_log`);
where to write, from Iceberg's table through Spark's JVM (``spark_apps/compact_events.py``).

S3 is the endpoint the session's ``fs.s3a`` settings name, with the driver's ``AWS_*``
credentials (the environment the operator gives the app; never its command line).
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Mapping, Sequence
from datetime import date
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.parquet as pq
from pyarrow import fs as pafs
from pyspark.sql import SparkSession

from include.endpoints import S3Endpoint
from spark_apps.file_sinks import partition_value, schema_sample
from spark_apps.sink_log import committed, object_path


def use_jemalloc() -> None:
    """Arrow's jemalloc pool for this process (a build without it keeps its default). With the
    default mimalloc, each first pass over a freshly read day cost ~0.5 s more: the day's
    totals, dedupe and checks took 2.7 s against 1.2 s (the benchmark's day, 2026-12-05)."""
    with contextlib.suppress(NotImplementedError):
        pa.set_memory_pool(pa.jemalloc_memory_pool())


def filesystem(spark: SparkSession) -> pafs.FileSystem:
    """pyarrow's S3 client for the session's S3 endpoint and the driver's credentials."""
    return S3Endpoint.from_aws_env(
        spark.conf.get("spark.hadoop.fs.s3a.endpoint", "")
    ).pyarrow_filesystem()


# Spark's own Parquet files keep timestamps as INT96: read in microseconds (Spark's unit).
PARQUET = ds.ParquetFileFormat(read_options=ds.ParquetReadOptions(coerce_int96_timestamp_unit="us"))


def lake_schema(s3: pafs.FileSystem, files: Sequence[str], partitions: Sequence[str]) -> pa.Schema:
    """The schema of a sink's ``files`` as Spark reads it: the columns of a sample of their
    footers (:func:`~spark_apps.file_sinks.schema_sample`: the files of one sink share the
    schema of the stream version that wrote them), merged, timestamps as UTC instants in
    microseconds; then the Hive partition columns ``partitions`` typed as Spark infers them
    from the paths (an integer, a date, else a string)."""
    sample = [object_path(f) for f in schema_sample(files)]
    factory = ds.FileSystemDatasetFactory(s3, sample, PARQUET, ds.FileSystemFactoryOptions())
    physical = factory.inspect(promote_options="permissive", fragments=None)
    fields = [
        pa.field(f.name, pa.timestamp("us", tz="UTC")) if pa.types.is_timestamp(f.type) else f
        for f in physical
        if f.name not in partitions
    ]
    for name in partitions:
        values = {partition_value(f, name) for f in files} - {None}
        fields.append(pa.field(name, _partition_type(values)))
    return pa.schema(fields)


def _partition_type(values: set[str]) -> pa.DataType:
    """The type Spark infers for a partition column's values (integers, dates, strings)."""
    for kind, parse in ((pa.int32(), int), (pa.date32(), date.fromisoformat)):
        try:
            for v in values:
                parse(v)
        except ValueError:
            continue
        if values:
            return kind
    return pa.string()


def read_files(
    s3: pafs.FileSystem,
    files: Sequence[str],
    schema: pa.Schema,
    partitions: Sequence[str],
    where: pc.Expression | None = None,
    sizes: Mapping[str, int] | None = None,
) -> pa.Table:
    """The rows of ``files`` (Hive-style partitioned by ``partitions``) as ``schema`` says,
    those ``where`` holds: a column a file lacks is null, the partition columns come from the
    paths (a filter on them costs no copy of the rows). Spark's legacy INT96 timestamps are
    read in microseconds. ``sizes`` (each file's bytes, as the sink's log records them) spare
    a request per file for its size: 2.7-3.0 s -> 2.3-2.7 s for the benchmark's day."""
    fragments = [
        PARQUET.make_fragment(
            object_path(f),
            s3,
            partition_expression=_partition_expression(f, schema, partitions),
            **({"file_size": sizes[f]} if sizes and f in sizes else {}),
        )
        for f in files
    ]
    # Small files: more of them in flight than the default 4 (2.7-3.8 s -> 2.3-2.6 s for the
    # benchmark's day of 1,923 files).
    return ds.FileSystemDataset(fragments, schema, PARQUET, s3).to_table(
        filter=where, fragment_readahead=16
    )


def _partition_expression(file: str, schema: pa.Schema, partitions: Sequence[str]):
    """``partition = value and ...`` for a file's Hive-style path, each value in the schema's
    type (how the dataset fills the partition columns)."""
    expression = None
    for name in partitions:
        value = partition_value(file, name)
        term = (
            ds.field(name).is_null()
            if value is None
            else ds.field(name) == pa.scalar(value).cast(schema.field(name).type)
        )
        expression = term if expression is None else expression & term
    return expression


def sink_log(
    s3: pafs.FileSystem, path: str, partitions: Collection[str] | None = None
) -> dict[str, int] | None:
    """The files Spark's file sink at ``path`` committed, by name (as its log and
    ``_metadata.file_path`` write them) with their sizes; ``None`` before its first commit.
    Read here rather than through the session: it is the compaction's first S3 read, and a
    cold JVM took ~1.7 s for it (its S3 client's start) against ~0.1 s. The log's entries and
    its archive's (of ``partitions`` only when given: spark_apps/sink_log.py)."""
    return committed(s3, path, partitions)


def write_file(s3: pafs.FileSystem, uri: str, rows: pa.Table, compression: str, **kw: Any) -> int:
    """Write ``rows`` as one Parquet file at ``uri``; return its size in bytes. On a local
    file system (a warehouse in a directory) its directory is made first."""
    path = object_path(uri)
    if isinstance(s3, pafs.LocalFileSystem):
        s3.create_dir(path.rsplit("/", 1)[0], recursive=True)
    with s3.open_output_stream(path) as out:
        pq.write_table(rows, out, compression=compression, **kw)
        return out.tell()
