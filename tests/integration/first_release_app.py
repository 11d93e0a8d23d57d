"""The first release's four streaming queries, as it ran them (a fixture of
tests/integration/test_upgrade.py, submitted with spark-submit like the stream).

Each deployment (a JSON list: lake, dead letters, checkpoint root, Postgres schema) gets the
queries named by ``--queries``, each with its own checkpoint ``<root>/<query>`` and its own
Kafka offsets, drained once (``availableNow``):

* ``lake``: the contract's valid events, deduplicated by ``event_id`` in the query's own
  state, enriched from the catalog, to Spark's file sink (partitioned by event day and hour);
* ``dead_letter``: records that break the contract, to Spark's file sink (by detection day);
* ``category_sales`` and ``funnel``: per-minute aggregates of the deduplicated valid events in
  the query's state (complete mode), upserted into the first release's tables as absolute
  values with the batch id (``category_sales_minute`` keyed by minute and category, amounts
  of every currency summed; ``funnel_minute`` by minute and event type).

The contract's check is the current one (``rtap.spark.Contract``): the upgrade is about the
checkpoints, the sink logs and the tables the first release left, not about its rules.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from include import pipeline
from include.analytics import store
from include.endpoints import PostgresEndpoint
from spark_apps.stream_events import read_table
from spark_apps.transforms import events as tx

QUERIES = ("lake", "dead_letter", "category_sales", "funnel")

# The first release's aggregate tables (its include/analytics/store.py, commit c2f0d8e).
FIRST_RELEASE_DDL = """
DROP TABLE IF EXISTS category_sales_minute;
DROP TABLE IF EXISTS funnel_minute;
CREATE TABLE funnel_minute (
    window_start  timestamptz NOT NULL,
    window_end    timestamptz NOT NULL,
    event_type    text NOT NULL,
    events        bigint NOT NULL,
    sessions      bigint NOT NULL,
    batch_id      bigint NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (window_start, event_type)
);
CREATE TABLE category_sales_minute (
    window_start  timestamptz NOT NULL,
    window_end    timestamptz NOT NULL,
    category      text NOT NULL,
    purchases     bigint NOT NULL,
    units         bigint NOT NULL,
    revenue       numeric(18, 2) NOT NULL,
    buyers        bigint NOT NULL,
    batch_id      bigint NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (window_start, category)
);
"""


def upsert(table: str, key: tuple[str, ...], pg_schema: str):
    """foreachBatch: the batch's rows (the aggregate's whole state) upserted with its id."""

    def write(batch: DataFrame, batch_id: int) -> None:
        rows = [r.asDict() for r in batch.collect()]
        if not rows:
            return
        columns = [*rows[0], "batch_id"]
        updates = ", ".join(f"{c} = excluded.{c}" for c in columns if c not in key)
        conn = store.connect(PostgresEndpoint.from_libpq_env(), schema=pg_schema)
        try:
            with conn.cursor() as cur:
                cur.executemany(
                    f"INSERT INTO {table} ({', '.join(columns)}) VALUES "
                    f"({', '.join(['%s'] * len(columns))}) "
                    f"ON CONFLICT ({', '.join(key)}) DO UPDATE SET {updates}, updated_at = now()",
                    [(*r.values(), batch_id) for r in rows],
                )
            conn.commit()
        finally:
            conn.close()

    return write


def start(spark: SparkSession, args: argparse.Namespace, where: dict, query: str):
    raw = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", args.bootstrap_servers)
        .option("subscribe", args.topic)
        .option("startingOffsets", "earliest")
        .option("failOnDataLoss", "true")
        .load()
    )
    checked = tx.parse(raw, now=F.current_timestamp())
    if tx.INGESTED_AT in checked.columns:
        checked = checked.withColumn(tx.INGESTED_AT, F.current_timestamp())
    valid = tx.valid_events(checked).dropDuplicates(["event_id"])
    writer_of = {
        "lake": lambda: (
            tx.enrich(valid, read_table(spark, where["pg_schema"], "products"))
            .writeStream.format("parquet")
            .partitionBy(*pipeline.LAKE_PARTITIONS)
            .option("path", where["lake"])
        ),
        "dead_letter": lambda: (
            tx.dead_letters(checked)
            .writeStream.format("parquet")
            .partitionBy(pipeline.DEAD_LETTER_DAY_PARTITION)
            .option("path", where["dead"])
        ),
        "category_sales": lambda: (
            tx.category_sales(valid, pipeline.STREAM_WINDOW)
            .writeStream.outputMode("complete")
            .foreachBatch(
                lambda batch, batch_id: upsert(
                    "category_sales_minute", ("window_start", "category"), where["pg_schema"]
                )(
                    batch.groupBy("window_start", "window_end", "category").agg(
                        F.sum("purchases").alias("purchases"),
                        F.sum("units").alias("units"),
                        F.sum("revenue").alias("revenue"),
                        F.hll_sketch_estimate(F.hll_union_agg("buyers_sketch")).alias("buyers"),
                    ),
                    batch_id,
                )
            )
        ),
        "funnel": lambda: (
            tx.funnel_counts(valid, pipeline.STREAM_WINDOW)
            .writeStream.outputMode("complete")
            .foreachBatch(
                lambda batch, batch_id: upsert(
                    "funnel_minute", ("window_start", "event_type"), where["pg_schema"]
                )(
                    batch.select(
                        "window_start",
                        "window_end",
                        "event_type",
                        "events",
                        F.hll_sketch_estimate("sessions_sketch").alias("sessions"),
                    ),
                    batch_id,
                )
            )
        ),
    }
    return (
        writer_of[query]()
        .queryName(f"{query}-{where['pg_schema']}")
        .option("checkpointLocation", f"{where['root'].rstrip('/')}/{query}")
        .trigger(availableNow=True)
        .start()
    )


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--bootstrap-servers", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--deployments", required=True, help="JSON: [{lake, dead, root, pg_schema}]")
    p.add_argument("--queries", default=",".join(QUERIES))
    args = p.parse_args()
    spark = SparkSession.builder.appName("first-release").getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    spark.conf.set("spark.sql.shuffle.partitions", "2")
    queries = [
        start(spark, args, where, query)
        for where in json.loads(args.deployments)
        for query in args.queries.split(",")
    ]
    for q in queries:
        q.awaitTermination()
    failed = [q.name for q in queries if q.exception() is not None]
    spark.stop()
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
