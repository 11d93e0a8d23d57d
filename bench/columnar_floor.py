"""PROBE: the columnar floor -- Spark's Kafka source, then Arrow batches in Python.

Kafka source -> ``mapInArrow``: the values parsed by Arrow's JSON reader with the contract's
schema and written as Parquet straight to S3 by pyarrow (one file per task and batch, named by
batch id and partition: a replayed batch overwrites its own files) -> the driver records the
batch's files. Same backlog, batch size and result file as bench/spark_floor.py.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator, Sequence

import pyarrow as pa
from pyspark.sql import SparkSession

from bench.spark_floor import batch_seconds
from include.events import contract

ARROW_TYPES = {
    "string": pa.string(),
    "long": pa.int64(),
    "double": pa.float64(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "boolean": pa.bool_(),
}


def arrow_schema() -> pa.Schema:
    return pa.schema([(f.name, ARROW_TYPES[f.type]) for f in contract.FIELDS])


def writer(endpoint: str, bucket_path: str, batch_id: int):
    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        import pyarrow.compute as pc
        import pyarrow.json as pj
        import pyarrow.parquet as pq
        from pyspark import TaskContext

        from include.endpoints import S3Endpoint

        schema = arrow_schema()
        opts = pj.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
        import os

        mode = os.environ.get("COLUMNAR_MODE", "write")
        tables = []
        for b in batches:
            if mode == "count":
                tables.append(pa.table({"n": pa.array([b.num_rows])}))
                continue
            values = b.column(0)
            lst = pa.ListArray.from_arrays(pa.array([0, len(values)], pa.int32()), values)
            joined = pc.binary_join(lst, b"\n")[0].as_buffer()
            tables.append(pj.read_json(pa.BufferReader(joined), parse_options=opts))
        if mode == "count":
            yield pa.RecordBatch.from_pydict(
                {"path": ["-"], "rows": [sum(t["n"][0].as_py() for t in tables)]}
            )
            return
        rows = sum(t.num_rows for t in tables)
        pid = TaskContext.get().partitionId()
        path = f"{bucket_path}/batch={batch_id}/part-{pid:05d}.parquet"
        if rows and mode == "write":
            fs = S3Endpoint.from_aws_env(endpoint).pyarrow_filesystem()
            pq.write_table(pa.concat_tables(tables), path, filesystem=fs)
        yield pa.RecordBatch.from_pydict({"path": [path], "rows": [rows]})

    return run


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="columnar_floor")
    p.add_argument("--bootstrap-servers", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--path", required=True)
    p.add_argument("--result", required=True)
    p.add_argument("--max-offsets-per-trigger", type=int, default=200_000)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)

    spark = SparkSession.builder.appName("columnar_floor").getOrCreate()
    endpoint = spark.conf.get("spark.hadoop.fs.s3a.endpoint")
    bucket_path = args.path.removeprefix("s3a://") + "/events"
    raw = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", args.bootstrap_servers)
        .option("subscribe", args.topic)
        .option("startingOffsets", "earliest")
        .option("maxOffsetsPerTrigger", args.max_offsets_per_trigger)
        .load()
        .select("value")
    )

    def per_batch(df, batch_id: int) -> None:
        files = df.mapInArrow(writer(endpoint, bucket_path, batch_id), "path string, rows long")
        files.collect()

    query = (
        raw.writeStream.foreachBatch(per_batch)
        .option("checkpointLocation", f"{args.path}/_checkpoint")
        .trigger(availableNow=True)
        .start()
    )
    query.awaitTermination()
    progress = [json.loads(p.json) if hasattr(p, "json") else p for p in query.recentProgress]
    rows, seconds = batch_seconds(progress)
    with open(args.result, "w") as f:
        json.dump({"rows": rows, "seconds": seconds}, f)
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
