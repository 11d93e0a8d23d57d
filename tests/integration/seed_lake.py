"""Test-only: land generated days in a lake the way the stream does (run in the tests'
in-process Spark session, ``lake_checks.reader``).

Events come from the real generator, go through the stream's own transforms (parse, validate,
enrich) and are written by Spark's file sink (a streaming query, so ``_spark_metadata`` lists
the committed files), spread over many small files per hour like a day of micro-batches.
``break_day`` makes some rows of a day break a warehouse expectation (an older stream version
or a bug upstream would), for the compaction's checks.

:func:`seed` returns, per day, the rows landed, distinct ids and relevant purchase revenue.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from itertools import islice

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from include import pipeline
from include.events.catalog import build_catalog
from include.events.generator import GeneratorConfig, iter_events
from spark_apps.transforms import events as E
from tests.integration.phases import timed


def kafka_rows(day: date, n: int, seed: int, duplicate_share: float) -> list[tuple]:
    return [row for chunk in kafka_chunks(day, n, seed, duplicate_share, n) for row in chunk]


# Rows handed to Spark at once: a local DataFrame is shipped inside its tasks, and 2,000,000
# rows in one overflowed the driver's heap (a benchmark day).
SEED_CHUNK = 250_000


def kafka_chunks(
    day: date, n: int, seed: int, duplicate_share: float, chunk: int = SEED_CHUNK
) -> Iterator[list[tuple]]:
    """The generator's first ``n`` events of ``day`` as Kafka rows, ``chunk`` at a time."""
    cfg = GeneratorConfig(
        seed=seed,
        users=2_000,
        start=datetime.combine(day, time.min, tzinfo=UTC),
        span_seconds=22 * 3600,
        duplicate_share=duplicate_share,
    )
    rows: list[tuple] = []
    for i, p in enumerate(islice(iter_events(cfg), n)):
        ts = datetime.fromtimestamp(p.event_time_ms / 1000 + 1 + i % 5, UTC).replace(tzinfo=None)
        rows.append((p.key, p.value, "seed", i % 3, i, ts))
        if len(rows) == chunk:
            yield rows
            rows = []
    if rows:
        yield rows


@timed
def seed(
    spark: SparkSession,
    lake_path: str,
    days: dict[date, int],
    tasks: int,
    break_day: date | None = None,
    duplicate_share: float = 0.03,
    generator_seed: int = 7,
) -> dict[str, dict]:
    """Land ``days`` (day -> events) at ``lake_path`` through ``tasks`` write tasks (each
    writes ~24 files: one per hour); return per day rows, distinct_ids and revenue."""
    products = spark.createDataFrame(
        [(x.product_id, x.price, rank) for rank, x in enumerate(build_catalog().products, 1)],
        "product_id string, price double, popularity_rank int",
    )
    broken = None
    if break_day:  # a tenth of the day's purchases with a negative price
        hit = (
            (F.col("event_date") == F.lit(break_day.isoformat()).cast("date"))
            & (F.col("event_type") == "purchase")
            & (F.abs(F.hash("event_id")) % 10 == 0)
        )
        broken = F.when(hit, -F.abs(F.col("price"))).otherwise(F.col("price"))
    with tempfile.TemporaryDirectory() as tmp:
        for i, (day, n) in enumerate(days.items()):
            now = F.lit(datetime.combine(day + timedelta(days=1), time(12)))
            for rows in kafka_chunks(day, n, generator_seed + i, duplicate_share):
                raw = spark.createDataFrame(rows, E.KAFKA_SCHEMA)
                landed = E.enrich(E.valid_events(E.parse(raw, now)), products)
                if broken is not None:
                    landed = landed.withColumn("price", broken)
                landed.write.mode("append").parquet(f"{tmp}/staging")
        staged = spark.read.parquet(f"{tmp}/staging")
        stats = {
            str(r["event_date"]): {
                "rows": r["rows"],
                "distinct_ids": r["ids"],
                "revenue": round(r["revenue"] or 0.0, 2),
            }
            for r in staged.groupBy("event_date")
            .agg(
                F.count(F.lit(1)).alias("rows"),
                F.countDistinct("event_id").alias("ids"),
                F.lit(None).alias("revenue"),
            )
            .collect()
        }
        # Revenue over distinct events (the first copy of each; copies carry the same values).
        distinct = staged.dropDuplicates(["event_id"])
        purchase = F.col("is_relevant") & (F.col("event_type") == "purchase")
        for r in (
            distinct.where(purchase)
            .groupBy("event_date")
            .agg(F.sum(F.col("price") * F.col("quantity")).alias("revenue"))
            .collect()
        ):
            stats[str(r["event_date"])]["revenue"] = round(r["revenue"], 2)
        query = (
            spark.readStream.schema(staged.schema)
            .parquet(f"{tmp}/staging")
            .repartition(tasks)
            .writeStream.format("parquet")
            .option("path", lake_path)
            .option("checkpointLocation", f"{tmp}/checkpoint")
            .partitionBy("event_date", "event_hour")
            .trigger(availableNow=True)
            .start()
        )
        query.awaitTermination()
    return stats


def append_late(
    spark: SparkSession, lake_path: str, batch_id: int, day: date, n: int, generator_seed: int
) -> dict:
    """Land ``n`` more events of ``day`` in an existing lake as the stream would land late
    ones: batch ``batch_id`` (the next of its ``_spark_metadata`` log) of its file sink,
    processed two days after the day. Returns the events' ids and their relevant revenue
    (from the generator's rows, not from a read of the lake)."""
    from spark_apps.file_sinks import file_sink

    raw = spark.createDataFrame(
        kafka_rows(day, n, generator_seed, duplicate_share=0.0), E.KAFKA_SCHEMA
    )
    now = F.lit(datetime.combine(day + timedelta(days=2), time(9)))
    products = spark.createDataFrame(
        [(x.product_id, x.price, rank) for rank, x in enumerate(build_catalog().products, 1)],
        "product_id string, price double, popularity_rank int",
    )
    late = E.enrich(E.valid_events(E.parse(raw, now)), products).coalesce(1).cache()
    rows = late.select("event_id", "event_type", "is_relevant", "price", "quantity").collect()
    file_sink(spark, lake_path, pipeline.LAKE_PARTITIONS).addBatch(batch_id, late._jdf)
    late.unpersist()
    revenue = sum(
        r["price"] * r["quantity"]
        for r in rows
        if r["is_relevant"] and r["event_type"] == "purchase"
    )
    return {"ids": {r["event_id"] for r in rows}, "revenue": revenue}
