"""Pure transforms of the event stream: DataFrame in, DataFrame out, no I/O.

Everything the rules check comes from :mod:`include.events.contract`; nothing here lists the
fields by hand. The functions work on batch and streaming DataFrames alike, so unit tests use
tiny inline batch DataFrames.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping
from enum import StrEnum
from typing import TYPE_CHECKING

from pyspark.sql import Column, DataFrame, SparkSession, Window
from pyspark.sql import functions as F
from pyspark.sql import types as T
from pyspark.sql.pandas.types import from_arrow_schema

from include import pipeline
from include.events import contract, validation
from include.spark.jobs import duration_ms

if TYPE_CHECKING:
    from py4j.java_gateway import JavaObject

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

# The lake's columns whose values are (nearly) all distinct within a file: written without
# a Parquet dictionary (spark_apps/file_sinks.py, plain_encoded; the stream sets it in
# its BATCH_CONF).
DISTINCT_VALUED_COLUMNS = (
    "event_id",
    "user_id",
    "session_id",
    "event_time",
    "ingestion_time",
    "kafka_offset",
    "kafka_timestamp",
)

# What the validator yields, in Spark's types (one definition: the validator's Arrow schema).
CHECKED_SCHEMA: T.StructType = from_arrow_schema(validation.output_schema())

# The columns the JVM validator reads besides the Kafka record.
JVM_CONTEXT = (validation.PROCESSING_TIME,)

# What the JVM validator yields: CHECKED_SCHEMA with every timestamp as epoch microseconds.
_JVM_CHECKED_SCHEMA = T.StructType(
    [
        T.StructField(f.name, T.LongType()) if isinstance(f.dataType, T.TimestampType) else f
        for f in CHECKED_SCHEMA.fields
    ]
)


def live_quarantine(spark: SparkSession) -> JavaObject:
    """An empty ``rtap.spark.Quarantine``: the quarantined ranges a stream's driver sets at the
    start of each micro-batch (``set`` with :func:`include.supervision.control.quarantined_ranges`
    as JSON) and the contract's operator checks in that batch's tasks."""
    return spark._jvm.rtap.spark.Quarantine()  # type: ignore[union-attr]


def parse(
    raw: DataFrame,
    now: Column | None = None,
    live: JavaObject | None = None,
) -> DataFrame:
    """Kafka rows (``key``, ``value``, ``topic``, ``partition``, ``offset``, ``timestamp``) ->
    checked rows (:data:`CHECKED_SCHEMA`): the contract's typed fields, the raw bytes and Kafka
    coordinates for lineage, and :data:`ERROR`, the reason a record breaks the contract (null
    when valid). Every record is checked once, on the JVM (``rtap.spark.Contract``, the rules of
    :func:`include.events.validation.check` from :func:`~include.events.validation.jvm_spec`);
    ``now`` is the processing time event times are judged against (``absurd_timestamp``).
    Its default on a batch DataFrame is ``current_timestamp()``; on a stream there is none
    here: :func:`first_seen` judges event times against the micro-batch's own processing time
    (a ``current_timestamp()`` in a streaming plan would recompile its code every batch).
    Records inside the ranges of ``live`` (:func:`live_quarantine`, the operators' quarantine)
    are dead-lettered as quarantined, unparsed."""
    if now is None:
        now = F.lit(None).cast("timestamp") if raw.isStreaming else F.current_timestamp()
    rows = raw.select(
        "key",
        "value",
        "topic",
        "partition",
        "offset",
        F.unix_micros("timestamp").alias("_kafka_timestamp_us"),
        F.unix_micros(now).alias(validation.PROCESSING_TIME),
    )
    spark = raw.sparkSession
    jdf = spark._jvm.rtap.spark.Contract.apply(  # type: ignore[union-attr]
        rows._jdf,
        validation.jvm_spec(),
        _JVM_CHECKED_SCHEMA.json(),
        [*KAFKA_SCHEMA.names[:5], "_kafka_timestamp_us", *JVM_CONTEXT],
        live if live is not None else live_quarantine(spark),
    )
    # The JVM hands timestamps over as epoch microseconds (no calendar conversion on the way).
    return DataFrame(jdf, spark).select(
        *(
            F.timestamp_micros(f.name).alias(f.name)
            if isinstance(f.dataType, T.TimestampType)
            else F.col(f.name)
            for f in CHECKED_SCHEMA.fields
        )
    )


def is_relevant() -> Column:
    """Valid events that analytics counts: not heartbeats, not bots, not internal users."""
    irrelevant_traffic = F.col("traffic_type").isin(
        contract.TrafficType.BOT.value, contract.TrafficType.INTERNAL.value
    )
    return (F.col("event_type") != contract.EventType.HEARTBEAT.value) & ~F.coalesce(
        irrelevant_traffic, F.lit(False)
    )


def at_or_above(floor: Mapping[int, int]) -> Column:
    """Rows (with Kafka lineage) at or above ``floor``'s offset of their partition (partition ->
    first offset; a partition it does not name: every row): what an output of an upgraded
    first-release deployment has not written yet (``include.supervision.checkpoint.ResumePlan``)."""
    if not floor:
        return F.lit(True)
    condition = None
    for partition, offset in sorted(floor.items()):
        test = F.col("kafka_offset") >= F.lit(offset)
        condition = (
            F.when(F.col("kafka_partition") == partition, test)
            if condition is None
            else condition.when(F.col("kafka_partition") == partition, test)
        )
    return condition.otherwise(F.lit(True))


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


def without_raw_bytes_of_valid_events(checked: DataFrame) -> DataFrame:
    """Checked records with the original key and value bytes kept only where the contract
    dead-lettered a record (the only output that keeps them) or where the deduplication may
    (:func:`may_be_out_of_bounds`): a valid event's bytes are its typed fields again, and
    carrying them through the deduplication's shuffle and operator cost a tenth of the
    stream's throughput (bench/limits.md). A record the deduplication dead-letters without
    its bytes (:data:`REREAD_REASONS`) gets them back from the topic
    (:func:`with_original_bytes`)."""
    kept = F.col(ERROR).isNotNull() | F.coalesce(may_be_out_of_bounds(), F.lit(False))
    return checked.withColumns(
        {
            "raw_key": F.when(kept, F.col("raw_key")),
            "raw_value": F.when(kept, F.col("raw_value")),
        }
    )


def may_be_out_of_bounds() -> Column:
    """A valid record whose event time lies beyond half the contract's bounds around its Kafka
    timestamp (more than half the allowed skew ahead, or older than the allowed age less a
    day): the deduplication may dead-letter it as ``absurd_timestamp`` against the batch's
    time. A hint that keeps such a record's bytes, never a decision: the Kafka timestamp is a
    producer's clock, and a record the hint misses is read again from the topic."""
    skew_us = contract.MAX_FUTURE_SKEW_SECONDS * 1_000_000 // 2
    age_us = (contract.MAX_PAST_AGE_DAYS - 1) * 86_400 * 1_000_000
    lead = F.unix_micros("event_time") - F.unix_micros("kafka_timestamp")
    return (lead > F.lit(skew_us)) | (lead < F.lit(-age_us))


# The reasons the deduplication gives, after the contract passed a record (so after its raw
# bytes were dropped): a dead letter with one of these and no bytes is read again from Kafka.
REREAD_REASONS = (contract.CONFLICTING_DUPLICATE, contract.ABSURD_TIMESTAMP)


def reread_counter(spark: SparkSession) -> JavaObject:
    """A Spark ``LongAccumulator`` for :func:`first_seen`'s ``rereads``: read before and after
    a micro-batch's first job, it tells whether any of the batch's dead letters needs its
    bytes read again from the topic."""
    return spark.sparkContext._jsc.sc().longAccumulator("rtap.first_seen.rereads")  # type: ignore[union-attr]


def without_bytes() -> Column:
    """Dead letters (:func:`dead_letters`) whose original bytes were dropped before the
    deduplication judged them (a record the contract passes always has a value)."""
    return F.col("reason").isin(*REREAD_REASONS) & F.col("raw_value").isNull()


def with_original_bytes(dead: DataFrame, originals: DataFrame) -> DataFrame:
    """Dead letters with :func:`without_bytes` given their ``key`` and ``value`` from
    ``originals`` (Kafka rows: ``topic``, ``partition``, ``offset``, ``key``, ``value``;
    at least those records). Every other dead letter keeps its own bytes."""
    o = originals.select(
        F.col("topic").alias("_o_topic"),
        F.col("partition").alias("_o_partition"),
        F.col("offset").alias("_o_offset"),
        F.col("key").alias("_o_key"),
        F.col("value").alias("_o_value"),
    )
    joined = dead.join(
        o,
        (dead["kafka_topic"] == o["_o_topic"])
        & (dead["kafka_partition"] == o["_o_partition"])
        & (dead["kafka_offset"] == o["_o_offset"])
        & without_bytes(),
        "left",
    )
    filled = joined.withColumns(
        {
            "raw_key": F.coalesce("raw_key", "_o_key"),
            "raw_value": F.coalesce("raw_value", "_o_value"),
        }
    )
    return filled.select(*dead.columns)


def dead_letters(validated: DataFrame) -> DataFrame:
    """Rows that broke the contract, with the reason and the original bytes, stamped with the
    batch's processing time (:data:`INGESTED_AT` when present, one instant per batch)."""
    detected = F.col(INGESTED_AT) if INGESTED_AT in validated.columns else F.current_timestamp()
    return validated.where(F.col(ERROR).isNotNull()).select(
        F.col(ERROR).alias("reason"),
        "raw_key",
        "raw_value",
        "kafka_topic",
        "kafka_partition",
        "kafka_offset",
        "kafka_timestamp",
        detected.alias("detected_at"),
        F.to_date(detected).alias(pipeline.DEAD_LETTER_DAY_PARTITION),
    )


# When the stream first saw a record: the micro-batch's processing time, one instant per
# batch, on the platform's clock (never a producer's).
INGESTED_AT = "ingested_at"


def dedupe_key() -> Column:
    """A valid event's ``event_id``; for a record that broke the contract, its Kafka coordinates
    (so each dead letter is kept, and never collides with an event)."""
    coordinates = F.concat_ws("/", F.lit("!"), "kafka_topic", "kafka_partition", "kafka_offset")
    return F.when(F.col(ERROR).isNull(), F.col("event_id")).otherwise(coordinates)


# What makes two records with one event_id "the same event": every contract field but the
# producer's own send stamp (a retry may re-stamp ``ingestion_time``).
CONTENT_FIELDS = tuple(f for f in contract.FIELD_NAMES if f != "ingestion_time")

CONFLICTING_DUPLICATE = contract.CONFLICTING_DUPLICATE


def content_digest() -> Column:
    """A 64-bit digest of an event's :data:`CONTENT_FIELDS` (as JSON, so a null never reads as
    a neighbour's value)."""
    return F.xxhash64(F.to_json(F.struct(*CONTENT_FIELDS)))


class DedupeState(StrEnum):
    """The layouts of the deduplication's state (``rtap.spark.FirstSeen``, whose constants of the
    same names these are), each by the name Spark's state metadata shows for it: the state
    variable of its ``transformWithState``, or the earlier releases' operator. A checkpoint keeps
    the layout that wrote it (Spark refuses a state whose schema changed): :func:`dedupe_state_of`.
    """

    # New checkpoints: keyed by the id's bytes (a UUID in 16 bytes; ~61 bytes of state per id).
    KEY_BYTES = "first_digest_by_id_bytes"
    # 2026-12-04 to 12-06: the same operator keyed by the id string (~101 bytes per id).
    STRING_KEY = "first_digest"
    # The earlier releases' ``flatMapGroupsWithState``, whose keys expire by a full scan.
    LEGACY = "flatMapGroupsWithState"


# The name Spark's state metadata gives a ``transformWithState`` operator.
TRANSFORM_WITH_STATE = "transformWithStateExec"


def dedupe_state_of(operators: Iterable[tuple[str, str | None]]) -> DedupeState:
    """The layout of the deduplication's state in a checkpoint, from its state metadata (the
    operator's name and properties per stateful operator): the current one for a new
    checkpoint."""
    for name, properties in operators:
        if name == DedupeState.LEGACY:
            return DedupeState.LEGACY
        if name == TRANSFORM_WITH_STATE:
            declared = json.loads(properties or "{}").get("stateVariables", [])
            variables = {v["stateName"] for v in declared}
            for layout in (DedupeState.KEY_BYTES, DedupeState.STRING_KEY):
                if layout in variables:
                    return layout
            raise ValueError(
                f"the checkpoint's deduplication state has none of the known layouts "
                f"({', '.join(DedupeState)}): its state variables are {sorted(variables)}"
            )
    return DedupeState.KEY_BYTES


def first_seen(
    checked: DataFrame,
    horizon: str,
    state: DedupeState = DedupeState.KEY_BYTES,
    rereads: JavaObject | None = None,
) -> DataFrame:
    """Checked records with the repeats of an ``event_id`` first seen within ``horizon`` of
    processing time resolved: the first record is kept; a later one with the same content
    (:func:`content_digest`) is a copy and dropped; a later one with different content is kept
    with :data:`ERROR` = ``conflicting_duplicate`` (dead-lettered, counted, never silently
    dropped). Within one micro-batch "first" is the lowest (partition, offset). Records that
    broke the contract all pass.

    The horizon runs on :data:`INGESTED_AT`, the platform's clock: no producer clock, Kafka
    timestamp or event time can make a record "late", so no valid first-seen event is ever
    dropped. A repeat that arrives after the horizon lands again; compaction drops it and
    reconcile counts it. On a stream the state is kept by ``rtap.spark.FirstSeen``
    (``spark_apps/jvm``: one JVM call per key and batch; a ``transformWithState`` whose keys
    expire after the horizon, in the layout ``state`` the checkpoint holds,
    :class:`DedupeState`), which also stamps :data:`INGESTED_AT` with the micro-batch's
    processing time (Spark's batch timestamp, the same when a batch is replayed) and applies
    the contract's event-time bounds against it (:func:`parse` left them out on a stream); on a
    batch DataFrame every repeat is resolved against the first record of its id, with the same
    rules, and the processing time is the query's ``current_timestamp()``. ``rereads`` (a
    stream's Spark ``LongAccumulator``, :func:`reread_counter`) counts the records the operator
    dead-letters without their bytes (:func:`without_bytes`)."""
    keyed = checked.withColumn("_dedupe_key", dedupe_key()).withColumn(
        "_digest", F.when(F.col(ERROR).isNull(), content_digest()).otherwise(F.lit(0))
    )
    if checked.isStreaming:
        spark = checked.sparkSession
        # A processing-time stateful operator makes Spark run an empty micro-batch after every
        # batch, for ever (an availableNow run would never end); the horizon's keys are
        # evicted by the next batch with data instead.
        spark.conf.set("spark.sql.streaming.noDataMicroBatches.enabled", "false")
        jvm = spark._jvm  # type: ignore[union-attr]
        bounds = jvm.rtap.spark.FirstSeen.Bounds(
            "event_time",
            contract.MAX_FUTURE_SKEW_SECONDS * 1000,
            contract.MAX_PAST_AGE_DAYS * 86_400_000,
            contract.ABSURD_TIMESTAMP,
        )
        jdf = jvm.rtap.spark.FirstSeen.apply(
            keyed.withColumn("_seen_ms", F.lit(0).cast("long"))._jdf,  # the operator fills it
            "_dedupe_key",
            "_digest",
            "_seen_ms",
            ERROR,
            "kafka_partition",
            "kafka_offset",
            CONFLICTING_DUPLICATE,
            duration_ms(horizon),
            bounds,
            str(state),
            "raw_value",
            rereads,
        )
        resolved = (
            DataFrame(jdf, spark)
            .withColumn(INGESTED_AT, F.timestamp_millis("_seen_ms"))
            .drop("_seen_ms")
        )
    else:
        order = Window.partitionBy("_dedupe_key").orderBy("kafka_partition", "kafka_offset")
        ranked = (
            keyed.withColumn(INGESTED_AT, F.current_timestamp())
            .withColumn("_rank", F.row_number().over(order))
            .withColumn("_first_digest", F.first("_digest").over(order))
        )
        first = F.col("_rank") == 1
        same = F.col("_digest") == F.col("_first_digest")
        resolved = (
            ranked.where(first | F.col(ERROR).isNotNull() | ~same)
            .withColumn(
                ERROR,
                F.when(first | F.col(ERROR).isNotNull(), F.col(ERROR)).otherwise(
                    F.lit(CONFLICTING_DUPLICATE)
                ),
            )
            .drop("_rank", "_first_digest")
        )
    return resolved.drop("_dedupe_key", "_digest")


def _window(window: str) -> Column:
    return F.window("event_time", window).alias("w")


def _sketch(column: str) -> Column:
    from include.analytics.store import SKETCH_LG_K

    return F.hll_sketch_agg(column, SKETCH_LG_K)


def category_sales(events: DataFrame, window: str) -> DataFrame:
    """One batch's purchases per event-time window, category and currency: purchases, units,
    revenue (exact decimals: each line rounded to cents, then summed; never across currencies)
    and the buyers' HyperLogLog sketch. The stream adds these partials to Postgres
    (``store.add_batch``); every valid purchase counts, however late or early its event time."""
    purchases = events.where(
        F.col("is_relevant") & (F.col("event_type") == contract.EventType.PURCHASE.value)
    )
    line = (F.col("price") * F.col("quantity")).cast(
        T.DecimalType(contract.MONEY_PRECISION, contract.MONEY_SCALE)
    )
    return (
        purchases.groupBy(_window(window), F.col("category"), F.col("currency"))
        .agg(
            F.count(F.lit(1)).alias("purchases"),
            F.sum("quantity").alias("units"),
            F.sum(line).alias("revenue"),
            _sketch("user_id").alias("buyers_sketch"),
        )
        .select(
            F.col("w.start").alias("window_start"),
            F.col("w.end").alias("window_end"),
            "category",
            "currency",
            "purchases",
            "units",
            "revenue",
            "buyers_sketch",
        )
    )


def funnel_counts(events: DataFrame, window: str) -> DataFrame:
    """One batch's relevant events per event-time window and event type (the funnel), with
    the sessions' HyperLogLog sketch."""
    relevant = events.where(F.col("is_relevant"))
    return (
        relevant.groupBy(_window(window), F.col("event_type"))
        .agg(
            F.count(F.lit(1)).alias("events"),
            _sketch("session_id").alias("sessions_sketch"),
        )
        .select(
            F.col("w.start").alias("window_start"),
            F.col("w.end").alias("window_end"),
            "event_type",
            "events",
            "sessions_sketch",
        )
    )


def live_aggregates() -> dict[str, Callable[[DataFrame, str], DataFrame]]:
    """The stream's live aggregates: each registered table (``include.analytics.store``
    ``AGGREGATES``) -> its transform from one batch's valid events to that table's partial
    rows, resolved from the declaration's ``"module:function"``."""
    import importlib

    from include.analytics.store import AGGREGATES

    out = {}
    for table, agg in AGGREGATES.items():
        module, _, function = agg.transform.partition(":")
        try:
            transform = getattr(importlib.import_module(module), function, None)
        except ImportError as exc:
            raise ValueError(f"aggregate {table!r}: {agg.transform!r}: {exc}") from exc
        if not callable(transform):
            raise ValueError(f"aggregate {table!r}: {agg.transform!r} names no function")
        out[table] = transform
    return out


def observe(
    checked: DataFrame,
    lake_floor: Mapping[int, int] | None = None,
    dead_floor: Mapping[int, int] | None = None,
) -> DataFrame:
    """Per-batch counts reported in the query's progress (``observedMetrics``): ``lake``
    (landed, irrelevant) and ``dead_letter`` (dead_lettered, of which conflicting_duplicates).
    The floors: what an upgraded first-release deployment's lake or dead letters already hold
    is not written again, nor counted (:func:`at_or_above`)."""
    valid = F.col(ERROR).isNull()
    conflict = F.col(ERROR) == F.lit(CONFLICTING_DUPLICATE)
    dead = ~valid
    if lake_floor:
        valid = valid & at_or_above(lake_floor)
    if dead_floor:
        dead = dead & at_or_above(dead_floor)
        conflict = conflict & at_or_above(dead_floor)
    return checked.observe(
        "lake",
        F.count(F.when(valid, F.lit(1))).alias("landed"),
        F.count(F.when(valid & ~is_relevant(), F.lit(1))).alias("irrelevant"),
    ).observe(
        "dead_letter",
        F.count(F.when(dead, F.lit(1))).alias("dead_lettered"),
        F.count(F.when(conflict, F.lit(1))).alias("conflicting_duplicates"),
    )
