"""Stream user-activity events from Kafka into the lake (Parquet on S3) and Postgres.

Four streaming queries share one Kafka source definition:

* ``lake``        valid events, enriched from the product catalog (Postgres ``products``),
                  deduplicated by ``event_id`` within the watermark, written by
                  Spark's file sink (exactly once via checkpoint + ``_spark_metadata``),
                  partitioned by ``event_date``/``event_hour``;
* ``dead_letter`` events that break the contract, with the reason, the original bytes and
                  their Kafka coordinates (file sink, exactly once);
* ``category_sales`` per-minute purchase aggregates by category, upserted into Postgres keyed
                  by window and category, so a replayed micro-batch leaves the same rows;
* ``funnel``      per-minute counts of relevant events by type (and sessions), upserted the
                  same way.

Every batch's progress (offsets, rates, durations, watermark, late rows dropped, observed counts
of landed / irrelevant / dead-lettered events) goes to Postgres ``stream_progress``
(``spark_apps/progress.py``).

Modes: ``continuous`` (processing-time trigger, runs until stopped) and ``bounded`` (drain what
is in the topic now, then exit; used by ``airflow dags test`` and the tests).

Usage (Airflow runs this through SparkSubmitOperator; see ``include/spark/submit.py``)::

    spark-submit --master 'local[*]' --jars <connector jars> \\
        --conf spark.hadoop.fs.s3a.endpoint=http://127.0.0.1:9000 ... \\
        spark_apps/stream_events.py \\
        --bootstrap-servers 127.0.0.1:9092 --topic events \\
        --lake-path s3a://lake/raw/events --dead-letter-path s3a://lake/dead_letter/events \\
        --checkpoint-root s3a://lake/_checkpoints/stream_events --mode bounded

Postgres is reached with libpq's environment (``PGHOST``, ``PGPORT``, ``PGUSER``,
``PGPASSWORD``, ``PGDATABASE``), which the operator fills from the Airflow connection.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Sequence

from pyspark.sql import DataFrame, SparkSession

from include.analytics import store
from spark_apps.progress import PostgresProgressListener, record_recent_progress
from spark_apps.transforms import events as T

log = logging.getLogger("stream_events")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="stream_events", description=__doc__.splitlines()[0])
    p.add_argument("--bootstrap-servers", required=True)
    p.add_argument("--topic", required=True)
    p.add_argument("--lake-path", required=True, help="s3a://bucket/prefix of the raw events")
    p.add_argument("--dead-letter-path", required=True)
    p.add_argument("--checkpoint-root", required=True, help="one sub-directory per query")
    p.add_argument("--mode", choices=("bounded", "continuous"), default="continuous")
    p.add_argument("--trigger", default="10 seconds", help="processing-time trigger (continuous)")
    p.add_argument("--watermark", default="10 minutes", help="late-data / dedupe horizon")
    p.add_argument("--window", default="1 minute", help="aggregate window length")
    p.add_argument("--starting-offsets", default="earliest")
    p.add_argument("--max-offsets-per-trigger", type=int, default=200_000)
    p.add_argument("--pg-schema", default="public", help="Postgres schema of the aggregates")
    p.add_argument("--app-name", default="stream_events")
    args = p.parse_args(list(argv))
    for name in ("lake_path", "dead_letter_path", "checkpoint_root"):
        value = getattr(args, name)
        if "://" not in value and not value.startswith("/"):
            p.error(
                f"--{name.replace('_', '-')}={value!r}: expected a URI (s3a://...) or an absolute path"
            )
    return args


def read_kafka(spark: SparkSession, args: argparse.Namespace) -> DataFrame:
    return (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", args.bootstrap_servers)
        .option("subscribe", args.topic)
        .option("startingOffsets", args.starting_offsets)
        .option("failOnDataLoss", "true")  # never skip offsets silently (see docs/streaming.md)
        .option("maxOffsetsPerTrigger", args.max_offsets_per_trigger)
        .load()
    )


def read_catalog(spark: SparkSession, pg_schema: str) -> DataFrame:
    """The product catalog from Postgres (JDBC, libpq's PG* environment). As the static side of
    a stream-static join it is read again for every micro-batch: catalog changes reach the
    next batch."""
    env = os.environ
    url = (
        f"jdbc:postgresql://{env.get('PGHOST', '127.0.0.1')}:{env.get('PGPORT', '5432')}/"
        f"{env.get('PGDATABASE', 'postgres')}?currentSchema={pg_schema}"
    )
    return (
        spark.read.format("jdbc")
        .option("url", url)
        .option("driver", "org.postgresql.Driver")
        .option("dbtable", "products")
        .option("user", env.get("PGUSER", ""))
        .option("password", env.get("PGPASSWORD", ""))
        .load()
    )


def upsert_aggregates(table: str, pg_schema: str):
    """foreachBatch writer: one Postgres transaction per micro-batch, keyed upserts."""
    columns, _ = store.AGGREGATES[table]

    def write(batch: DataFrame, batch_id: int) -> None:
        rows = [tuple(r) for r in batch.select(*columns).collect()]
        conn = store.connect({}, schema=pg_schema)  # libpq reads PG* from the environment
        try:
            store.ensure_schema(conn)
            n = store.upsert_aggregates(conn, table, rows, batch_id)
        finally:
            conn.close()
        log.info("batch %s: upserted %s %s rows", batch_id, n, table)

    return write


def start_queries(spark: SparkSession, args: argparse.Namespace) -> list:
    validated = T.with_validation(T.parse(read_kafka(spark, args)))
    events = T.dedupe(
        T.enrich(T.valid_events(validated), read_catalog(spark, args.pg_schema)), args.watermark
    )

    def trigger(writer):
        if args.mode == "bounded":
            return writer.trigger(availableNow=True)
        return writer.trigger(processingTime=args.trigger)

    root = args.checkpoint_root.rstrip("/")
    lake = trigger(
        T.observe_lake(events)
        .writeStream.queryName("lake")
        .format("parquet")
        .option("path", args.lake_path)
        .option("checkpointLocation", f"{root}/lake")
        .partitionBy("event_date", "event_hour")
        .outputMode("append")
    ).start()
    dead = trigger(
        T.observe_dead_letters(T.dead_letters(validated))
        .writeStream.queryName("dead_letter")
        .format("parquet")
        .option("path", args.dead_letter_path)
        .option("checkpointLocation", f"{root}/dead_letter")
        .partitionBy("detected_date")
        .outputMode("append")
    ).start()
    sales = trigger(
        T.category_sales(events, args.window)
        .writeStream.queryName("category_sales")
        .option("checkpointLocation", f"{root}/category_sales")
        .outputMode("update")
        .foreachBatch(upsert_aggregates("category_sales_minute", args.pg_schema))
    ).start()
    funnel = trigger(
        T.funnel_counts(events, args.window)
        .writeStream.queryName("funnel")
        .option("checkpointLocation", f"{root}/funnel")
        .outputMode("update")
        .foreachBatch(upsert_aggregates("funnel_minute", args.pg_schema))
    ).start()
    return [lake, dead, sales, funnel]


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = parse_args(sys.argv[1:] if argv is None else argv)
    conn = store.connect({}, schema=args.pg_schema)
    try:
        store.ensure_schema(conn)  # fail fast on a bad Postgres config, before any data moves
    finally:
        conn.close()
    spark = SparkSession.builder.appName(args.app_name).getOrCreate()
    spark.streams.addListener(PostgresProgressListener(args.pg_schema))
    queries = start_queries(spark, args)
    log.info("started %s in %s mode", [q.name for q in queries], args.mode)
    if args.mode == "bounded":
        for q in queries:
            q.awaitTermination()
    else:
        # Fail fast: the first query to fail stops the app with a non-zero exit, and Airflow's
        # retry restarts it from the checkpoints (supervision lives in Airflow, not here).
        spark.streams.awaitAnyTermination()
    failed = [(q.name, q.exception()) for q in queries if q.exception() is not None]
    for q in queries:
        if q.isActive:
            q.stop()
    if failed:
        for name, exc in failed:
            log.error("query %s failed: %s", name, exc)
        return 1
    record_recent_progress(queries, args.pg_schema)
    for q in queries:
        progress = q.lastProgress or {}
        log.info(
            "query %s done: last batch %s, %s input rows",
            q.name,
            progress.get("batchId"),
            progress.get("numInputRows"),
        )
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
