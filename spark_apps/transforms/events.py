"""Pure transforms of the event stream: DataFrame in, DataFrame out, no I/O.

Everything the rules check comes from :mod:`include.events.contract`; nothing here lists the
fields by hand. The functions work on batch and streaming DataFrames alike, so unit tests use
tiny inline batch DataFrames.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import from_arrow_schema

from include.events import contract, validation

ERROR = validation.ERROR

# The rows of Spark's Kafka source that the stream reads (tests and seeding build them too).
KAFKA_SCHEMA = T.StructType(
    [
        T.StructField("key", T.BinaryType()),
        T.StructField("value", T.BinaryType()),
        T.StructField("topic", T.StringType()),
        T.StructField("partition", T.IntegerType()),
        T.StructField("offset", T.LongType()),
        T.StructField("timestamp", T.TimestampType()),
    ]
)

# Columns the lake keeps besides the contract's fields (lineage and partitioning).
LINEAGE_COLUMNS = ("kafka_partition", "kafka_offset", "kafka_timestamp")

# What the validator yields, in Spark's types (one definition: the validator's Arrow schema).
CHECKED_SCHEMA: T.StructType = from_arrow_schema(validation.output_schema())

# Operator-quarantined offset ranges (include.supervision.control.QUARANTINE_TABLE).
QUARANTINE_SCHEMA = T.StructType(
    [
        T.StructField("topic", T.StringType()),
        T.StructField("partition", T.IntegerType()),
        T.StructField("from_offset", T.LongType()),
        T.StructField("to_offset", T.LongType()),
    ]
)


def mark_quarantined(raw: DataFrame, quarantine: DataFrame | None) -> DataFrame:
    """Kafka rows plus :data:`validation.QUARANTINE`: non-null for a record inside one of the
    operator's ranges (``topic``, ``partition``, ``from_offset``..``to_offset`` inclusive).
    The ranges of one partition never overlap (the quarantine action refuses overlaps), so
    the join adds no row."""
    if quarantine is None:
        return raw.withColumn(validation.QUARANTINE, F.lit(None).cast("string"))
    q = quarantine.select(
        F.col("topic").alias("_q_topic"),
        F.col("partition").cast("int").alias("_q_partition"),
        F.col("from_offset").alias("_q_from"),
        F.col("to_offset").alias("_q_to"),
    )
    joined = raw.join(
        F.broadcast(q),
        (raw["topic"] == q["_q_topic"])
        & (raw["partition"] == q["_q_partition"])
        & raw["offset"].between(q["_q_from"], q["_q_to"]),
        "left",
    )
    return joined.withColumn(
        validation.QUARANTINE, F.when(F.col("_q_from").isNotNull(), F.lit("quarantined"))
    ).drop("_q_topic", "_q_partition", "_q_from", "_q_to")


def parse(
    raw: DataFrame, now: Column | None = None, quarantine: DataFrame | None = None
) -> DataFrame:
    """Kafka rows (``key``, ``value``, ``topic``, ``partition``, ``offset``, ``timestamp``) ->
    checked rows (:data:`CHECKED_SCHEMA`): the contract's typed fields, the raw bytes and Kafka
    coordinates for lineage, and :data:`ERROR`, the reason a record breaks the contract (null
    when valid). Every rule is :func:`include.events.validation.check`, run once per record;
    ``now`` (default: the batch's ``current_timestamp()``, one instant per micro-batch) is the
    processing time event times are judged against."""
    rows = raw.select(
        "key",
        "value",
        "topic",
        "partition",
        "offset",
        "timestamp",
        (F.current_timestamp() if now is None else now).alias(validation.PROCESSING_TIME),
    )
    return mark_quarantined(rows, quarantine).mapInArrow(
        validation.validate_batches, CHECKED_SCHEMA
    )


def is_relevant() -> Column:
    """Valid events that analytics counts: not heartbeats, not bots, not internal users."""
    irrelevant_traffic = F.col("traffic_type").isin(
        contract.TrafficType.BOT.value, contract.TrafficType.INTERNAL.value
    )
    return (F.col("event_type") != contract.EventType.HEARTBEAT.value) & ~F.coalesce(
        irrelevant_traffic, F.lit(False)
    )


def valid_events(validated: DataFrame) -> DataFrame:
    """The lake's rows: contract fields, relevance flag, lineage, partition columns."""
    return validated.where(F.col(ERROR).isNull()).select(
        *contract.FIELD_NAMES,
        is_relevant().alias("is_relevant"),
        *LINEAGE_COLUMNS,
        F.to_date("event_time").alias("event_date"),
        F.hour("event_time").alias("event_hour"),
    )


def enrich(events: DataFrame, catalog: DataFrame) -> DataFrame:
    """Add the catalog's ``list_price`` and ``popularity_rank`` (left join on ``product_id``;
    events without a product, or with one the catalog lacks, get nulls)."""
    ref = catalog.select(
        F.col("product_id").alias("_catalog_product_id"),
        F.col("price").cast("double").alias("list_price"),
        F.col("popularity_rank").cast("int").alias("popularity_rank"),
    )
    joined = events.join(
        F.broadcast(ref), events["product_id"] == ref["_catalog_product_id"], "left"
    )
    return joined.drop("_catalog_product_id")


def dead_letters(validated: DataFrame) -> DataFrame:
    """Rows that broke the contract, with the reason and the original bytes."""
    return validated.where(F.col(ERROR).isNotNull()).select(
        F.col(ERROR).alias("reason"),
        "raw_key",
        "raw_value",
        "kafka_topic",
        "kafka_partition",
        "kafka_offset",
        "kafka_timestamp",
        F.current_timestamp().alias("detected_at"),
        F.to_date(F.current_timestamp()).alias("detected_date"),
    )


def dedupe(events: DataFrame, watermark: str, time_column: str = "event_time") -> DataFrame:
    """Drop repeated ``event_id``s seen within ``watermark`` of ``time_column`` (streaming or
    batch).

    On a stream, a row older than the watermark is dropped *and counted* in the progress
    (``numRowsDroppedByWatermark``). The aggregates dedupe on ``event_time``: an event too late
    for its window is counted, not added. The lake dedupes on the Kafka (ingestion) timestamp:
    copies of one event are re-sent close together in ingestion time, and an event late in
    event time still lands.
    """
    with_wm = events.withWatermark(time_column, watermark)
    if events.isStreaming:
        return with_wm.dropDuplicatesWithinWatermark(["event_id"])
    return with_wm.dropDuplicates(["event_id"])


def category_sales(events: DataFrame, window: str) -> DataFrame:
    """Purchases per event-time window and category: purchases, units, revenue, buyers.

    ``events`` must already carry a watermark (see :func:`dedupe`). Buyers are approximate
    (HyperLogLog, 1% error): exact distinct counts are not supported on streams.
    """
    purchases = events.where(
        F.col("is_relevant") & (F.col("event_type") == contract.EventType.PURCHASE.value)
    )
    return (
        purchases.groupBy(F.window("event_time", window).alias("w"), F.col("category"))
        .agg(
            F.count(F.lit(1)).alias("purchases"),
            F.sum("quantity").alias("units"),
            F.round(F.sum(F.col("price") * F.col("quantity")), 2).alias("revenue"),
            F.approx_count_distinct("user_id", 0.01).alias("buyers"),
        )
        .select(
            F.col("w.start").alias("window_start"),
            F.col("w.end").alias("window_end"),
            "category",
            "purchases",
            "units",
            "revenue",
            "buyers",
        )
    )


def funnel_counts(events: DataFrame, window: str) -> DataFrame:
    """Relevant events per event-time window and event type (the funnel), with approximate
    distinct sessions. ``events`` must already carry a watermark."""
    relevant = events.where(F.col("is_relevant"))
    return (
        relevant.groupBy(F.window("event_time", window).alias("w"), F.col("event_type"))
        .agg(
            F.count(F.lit(1)).alias("events"),
            F.approx_count_distinct("session_id", 0.01).alias("sessions"),
        )
        .select(
            F.col("w.start").alias("window_start"),
            F.col("w.end").alias("window_end"),
            "event_type",
            "events",
            "sessions",
        )
    )


def observe_lake(events: DataFrame) -> DataFrame:
    """Per-batch counts reported in the query's progress (``observedMetrics``)."""
    return events.observe(
        "lake",
        F.count(F.lit(1)).alias("landed"),
        F.coalesce(F.sum((~F.col("is_relevant")).cast("long")), F.lit(0)).alias("irrelevant"),
    )


def observe_dead_letters(dead: DataFrame) -> DataFrame:
    return dead.observe("dead_letter", F.count(F.lit(1)).alias("dead_lettered"))
