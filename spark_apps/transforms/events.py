"""Pure transforms of the event stream: DataFrame in, DataFrame out, no I/O.

Everything the rules check comes from :mod:`include.events.contract`; nothing here lists the
fields by hand. The functions work on batch and streaming DataFrames alike, so unit tests use
tiny inline batch DataFrames.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from include.events import contract

CORRUPT = "_corrupt_record"
ERROR = "error"

_SPARK_TYPES: dict[str, T.DataType] = {
    "string": T.StringType(),
    "long": T.LongType(),
    "double": T.DoubleType(),
    "timestamp": T.TimestampType(),
    "boolean": T.BooleanType(),
}

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


def event_schema(with_corrupt: bool = True) -> T.StructType:
    fields = [T.StructField(f.name, _SPARK_TYPES[f.type], True) for f in contract.FIELDS]
    if with_corrupt:
        fields.append(T.StructField(CORRUPT, T.StringType(), True))
    return T.StructType(fields)


def parse(raw: DataFrame) -> DataFrame:
    """Kafka rows (``key``, ``value``, ``topic``, ``partition``, ``offset``, ``timestamp``) ->
    the contract's columns, plus the raw bytes and Kafka coordinates for lineage."""
    value = F.col("value").cast("string")
    parsed = F.from_json(
        value,
        event_schema(),
        {
            "mode": "PERMISSIVE",
            "columnNameOfCorruptRecord": CORRUPT,
            "timestampFormat": "yyyy-MM-dd'T'HH:mm:ss[.SSS][.SS][.S]XXX",
        },
    )
    return raw.select(
        parsed.alias("e"),
        F.col("key").alias("raw_key"),
        F.col("value").alias("raw_value"),
        F.length(F.col("value")).alias("raw_bytes"),
        F.col("topic").alias("kafka_topic"),
        F.col("partition").alias("kafka_partition"),
        F.col("offset").alias("kafka_offset"),
        F.col("timestamp").alias("kafka_timestamp"),
    ).select(
        "e.*",
        "raw_key",
        "raw_value",
        "raw_bytes",
        "kafka_topic",
        "kafka_partition",
        "kafka_offset",
        "kafka_timestamp",
    )


def _in(col: Column, values) -> Column:
    return col.isin([v.value for v in values])


def error_expr(now: Column | None = None) -> Column:
    """The first reason the row breaks the contract, or null when it is valid.

    Reasons: ``oversize``, ``malformed_json``, ``wrong_type``, ``unknown_event_type``,
    ``missing_field:<f>``, ``invalid_value:<f>``, ``out_of_range:<f>``,
    ``unsupported_schema_version``, ``absurd_timestamp``.
    """
    now = F.current_timestamp() if now is None else now
    all_null = None
    for f in contract.FIELDS:
        cond = F.col(f.name).isNull()
        all_null = cond if all_null is None else (all_null & cond)
    etype = F.col("event_type")
    checks: list[tuple[Column, Column]] = [
        (F.col("raw_bytes") > contract.MAX_EVENT_BYTES, F.lit("oversize")),
        (F.col(CORRUPT).isNotNull() & all_null, F.lit("malformed_json")),
        (F.col(CORRUPT).isNotNull(), F.lit("wrong_type")),
        (etype.isNull(), F.lit("missing_field:event_type")),
        (~_in(etype, contract.EventType), F.lit("unknown_event_type")),
    ]
    for f in contract.FIELDS:
        if f.name == "event_type" or not f.required_for:
            continue
        required = (
            F.lit(True) if f.required_for == contract.ALL_TYPES else _in(etype, f.required_for)
        )
        checks.append((required & F.col(f.name).isNull(), F.lit(f"missing_field:{f.name}")))
    for f in contract.FIELDS:
        if f.enum is not None and f.name != "event_type":
            checks.append(
                (
                    F.col(f.name).isNotNull() & ~_in(F.col(f.name), f.enum),
                    F.lit(f"invalid_value:{f.name}"),
                )
            )
        if f.minimum is not None:
            checks.append((F.col(f.name) < F.lit(f.minimum), F.lit(f"out_of_range:{f.name}")))
    checks += [
        (
            F.col("schema_version") > F.lit(contract.SCHEMA_VERSION),
            F.lit("unsupported_schema_version"),
        ),
        (
            (
                F.col("event_time")
                > now + F.expr(f"INTERVAL {contract.MAX_FUTURE_SKEW_SECONDS} SECONDS")
            )
            | (F.col("event_time") < now - F.expr(f"INTERVAL {contract.MAX_PAST_AGE_DAYS} DAYS")),
            F.lit("absurd_timestamp"),
        ),
    ]
    expr = F.when(checks[0][0], checks[0][1])
    for cond, reason in checks[1:]:
        expr = expr.when(cond, reason)
    return expr


def with_validation(parsed: DataFrame, now: Column | None = None) -> DataFrame:
    return parsed.withColumn(ERROR, error_expr(now))


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
