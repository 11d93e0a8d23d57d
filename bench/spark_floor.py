"""The Spark floor: the smallest honest Spark job on the benchmark's backlog.

Kafka source -> ``from_json`` with the contract's schema -> Parquet through Spark's own file
sink (exactly once by its log), drained in ``availableNow`` batches of the pipeline's size: no
validation, deduplication, dead letters, enrichment or aggregates. ``make bench`` measures it
beside ``spark_apps/stream_events.py`` on the same backlog; the pipeline's ratio to it is what
correctness costs.

Usage (``bench/__main__.py`` runs it with the platform's Spark settings)::

    spark-submit ... bench/spark_floor.py --bootstrap-servers 127.0.0.1:9092 --topic T \\
        --path s3a://lake/it/bench-floor-x/raw --result /tmp/floor.json

Writes ``{"rows": n, "seconds": s}`` to ``--result``: rows read, and the seconds from the first
batch's start to the last batch's end (the JVM's start left out, as for the pipeline).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from datetime import datetime

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from include.events import contract

SPARK_TYPES = {
    "string": "string",
    "long": "bigint",
    "double": "double",
    "timestamp": "timestamp",
    "boolean": "boolean",
}


def contract_schema() -> str:
    """The contract's fields as a Spark DDL schema (what a naive job would parse with)."""
    return ", ".join(f"`{f.name}` {SPARK_TYPES[f.type]}" for f in contract.FIELDS)


def batch_seconds(progress: Sequence[dict]) -> tuple[int, float]:
    """Rows and seconds from the first batch's start to the last batch's end (batches that
    read rows)."""
    busy = [p for p in progress if p["numInputRows"] > 0]
    starts = [datetime.fromisoformat(p["timestamp"].replace("Z", "+00:00")) for p in busy]
    ends = [
        s.timestamp() + p["durationMs"]["triggerExecution"] / 1000
        for s, p in zip(starts, busy, strict=True)
    ]
    return sum(p["numInputRows"] for p in busy), max(ends) - min(starts).timestamp()


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="spark_floor", description=__doc__.splitlines()[0])
    p.add_argument("--bootstrap-servers", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--path", required=True, help="s3a:// prefix for the Parquet and checkpoint")
    p.add_argument("--result", required=True, help="local JSON file for the figures")
    p.add_argument("--max-offsets-per-trigger", type=int, default=200_000)
    args = p.parse_args(sys.argv[1:] if argv is None else argv)

    spark = SparkSession.builder.appName("spark_floor").getOrCreate()
    raw = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", args.bootstrap_servers)
        .option("subscribe", args.topic)
        .option("startingOffsets", "earliest")
        .option("maxOffsetsPerTrigger", args.max_offsets_per_trigger)
        .load()
    )
    events = raw.select(F.from_json(F.col("value").cast("string"), contract_schema()).alias("e"))
    query = (
        events.select("e.*")
        .writeStream.format("parquet")
        .option("path", f"{args.path}/events")
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
