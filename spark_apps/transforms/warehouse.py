"""Pure transforms of the nightly compaction: one day of landed events -> warehouse rows, marts,
expectations. DataFrame in, DataFrame (or plain values) out; no I/O.

The expectations derive from :mod:`include.events.contract` (required fields per type, enums,
minimums), like the stream's validator: a rule added to the contract is checked here too.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from itertools import pairwise

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from include.events import contract

PURCHASE = contract.EventType.PURCHASE.value
# Funnel stages of the daily mart, in order (shared with the dashboard's live funnel).
FUNNEL_STAGES = contract.FUNNEL_STAGES
# Columns of the raw lake that the warehouse does not keep (the hour is a raw-layout detail).
RAW_ONLY = ("event_hour",)


def day_slice(raw: DataFrame, day: date) -> DataFrame:
    """The landed rows of one event day (partition pruning on the lake's ``event_date``)."""
    return raw.where(F.col("event_date") == F.lit(day.isoformat()).cast("date"))


def dedupe_day(events: DataFrame) -> DataFrame:
    """One row per ``event_id``: the first landed copy (Kafka timestamp, partition, offset).

    The stream dedupes within a horizon; copies further apart (a replay days later) are
    removed here, deterministically, so a re-run picks the same row."""
    first = Window.partitionBy("event_id").orderBy(
        "kafka_timestamp", "kafka_partition", "kafka_offset"
    )
    return (
        events.withColumn("_n", F.row_number().over(first))
        .where(F.col("_n") == 1)
        .drop("_n", *[c for c in RAW_ONLY if c in events.columns])
    )


def _purchase() -> Column:
    return F.col("is_relevant") & (F.col("event_type") == PURCHASE)


def totals_columns() -> list[Column]:
    """The one-pass aggregates of :func:`totals` (``rows``, ``revenue``), to compute them in a
    pass that aggregates more. The distinct ids are counted apart (:func:`distinct_ids`):
    beside other aggregates, Spark expands every row into one per distinct and one for the
    rest, which made a pass over the benchmark's day about twice as slow as the two jobs
    (bench/limits.md, compaction)."""
    return [
        F.count(F.lit(1)).alias("rows"),
        F.round(
            F.coalesce(F.sum(F.when(_purchase(), F.col("price") * F.col("quantity"))), F.lit(0.0)),
            2,
        ).alias("revenue"),
    ]


def distinct_ids(events: DataFrame) -> int:
    """The distinct non-null ``event_id``s."""
    return events.select("event_id").where(F.col("event_id").isNotNull()).distinct().count()


def totals_of(row, distinct: int) -> dict:
    """:func:`totals` from a row that aggregated :func:`totals_columns`, and the distinct
    ids."""
    return {"rows": row["rows"], "distinct_ids": distinct, "revenue": row["revenue"]}


def totals(events: DataFrame) -> dict:
    """Rows, distinct ids and relevant purchase revenue: what verification compares."""
    return totals_of(events.agg(*totals_columns()).first(), distinct_ids(events))


def daily_sales(events: DataFrame) -> DataFrame:
    """Per day, category and currency: revenue, orders (purchase events), units, buyers
    (exact), average order value. Amounts stay in their own currency (never added across
    currencies); readers convert them with the catalog's dated rates, as for the live view."""
    return (
        events.where(_purchase())
        .groupBy(F.col("event_date").alias("day"), "category", "currency")
        .agg(
            F.round(F.sum(F.col("price") * F.col("quantity")), 2).alias("revenue"),
            F.count(F.lit(1)).alias("orders"),
            F.sum("quantity").alias("units"),
            F.countDistinct("user_id").alias("buyers"),
        )
        .withColumn("avg_order_value", F.round(F.col("revenue") / F.col("orders"), 2))
    )


def daily_funnel(events: DataFrame) -> DataFrame:
    """Per day: sessions reaching each stage (views -> clicks -> carts -> checkouts ->
    purchases) and each stage's conversion from the stage before, plus views -> purchases."""
    relevant = events.where(F.col("is_relevant"))
    stages = [
        F.countDistinct(F.when(F.col("event_type").isin(*types), F.col("session_id"))).alias(name)
        for name, types in FUNNEL_STAGES
    ]
    out = relevant.groupBy(F.col("event_date").alias("day")).agg(*stages)
    names = [name for name, _ in FUNNEL_STAGES]
    for before, after in pairwise(names):
        out = out.withColumn(f"{before}_to_{after}", _rate(after, before))
    return out.withColumn("views_to_purchases", _rate("purchases", "views"))


def _rate(numerator: str, denominator: str) -> Column:
    return F.when(
        F.col(denominator) > 0, F.round(F.col(numerator) / F.col(denominator), 4)
    ).otherwise(F.lit(None).cast("double"))


@dataclass(frozen=True)
class Failure:
    rule: str
    rows: int

    def __str__(self) -> str:
        return f"{self.rule}: {self.rows} row(s)"


def expectation_rules(day: date, columns: Sequence[str] | None = None) -> dict[str, Column]:
    """Rule name -> a condition that is true for a row that *breaks* the rule. With
    ``columns``, contract fields the data lacks are skipped (a frame of selected columns)."""
    rules: dict[str, Column] = {
        "event_id is null": F.col("event_id").isNull(),
        "event_time outside the day": F.col("event_time").isNull()
        | (F.to_date("event_time") != F.lit(day.isoformat()).cast("date")),
        "event_date differs from event_time's date": F.col("event_date") != F.to_date("event_time"),
    }
    for f in contract.FIELDS:
        if columns is not None and f.name not in columns:
            continue
        column = F.col(f.name)
        if f.required_for:
            types = sorted(t.value for t in f.required_for)
            rules[f"{f.name} is null for {_types_label(types)}"] = column.isNull() & F.col(
                "event_type"
            ).isin(*types)
        if f.enum is not None:
            rules[f"{f.name} not one of {sorted(e.value for e in f.enum)}"] = (
                column.isNotNull() & ~column.isin(*[e.value for e in f.enum])
            )
        if f.minimum is not None:
            rules[f"{f.name} below {f.minimum:g}"] = column.isNotNull() & (column < f.minimum)
    return rules


def _types_label(types: list[str]) -> str:
    return "all types" if len(types) == len(contract.ALL_TYPES) else ", ".join(types)


def expectations(events: DataFrame, day: date) -> list[Failure]:
    """Every rule checked in one pass; returns the broken ones with their row counts.
    Also: ``event_id`` unique (the table must hold one row per event)."""
    return checked(events, day)[1]


def checked(events: DataFrame, day: date) -> tuple[dict, list[Failure]]:
    """:func:`totals` and :func:`expectations` in one pass over ``events`` and a count of its
    distinct ids (which serves both)."""
    rules = expectation_rules(day, events.columns)
    aliases = {f"r{i}": name for i, name in enumerate(rules)}
    row = events.agg(
        *totals_columns(),
        *[
            F.sum(F.coalesce(cond, F.lit(False)).cast("long")).alias(alias)
            for alias, cond in zip(aliases, rules.values(), strict=True)
        ],
    ).first()
    totals = totals_of(row, distinct_ids(events))
    failures = [Failure(aliases[a], row[a]) for a in aliases if (row[a] or 0) > 0]
    dup = totals["rows"] - totals["distinct_ids"]
    if dup > 0:
        failures.append(Failure("event_id not unique", dup))
    return totals, failures


def output_files(rows: int, bytes_per_row: float, target_bytes: int) -> int:
    """How many files (and write tasks) the day is written as: its expected compacted size over
    the target size, rounded to the nearest count so each file lands within about +-25 % of the
    target once the day holds two target sizes or more.

    ``bytes_per_row`` comes from the table's own files (what earlier days compacted to), or a
    first estimate for a new table; the raw files' size says little, as small files carry
    mostly footer and poorly compressed pages."""
    if target_bytes <= 0:
        raise ValueError(f"target file size must be positive, got {target_bytes}")
    return max(1, round(rows * bytes_per_row / target_bytes))
