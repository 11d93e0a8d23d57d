"""Pure transforms of the warehouse in Spark: the events table's totals (what a compaction
verifies), the marts, the files a day is written as, and the compaction's data path for a day
too large for the driver's memory (dedupe, expectations: the same rules as the Arrow path of
:mod:`spark_apps.transforms.compaction`, which compacts the days that fit). DataFrame in,
DataFrame (or plain values) out; no I/O.
"""

from __future__ import annotations

from datetime import date
from itertools import pairwise

from pyspark.sql import Column, DataFrame, Window
from pyspark.sql import functions as F

from include.events import contract
from spark_apps.transforms import compaction as C

PURCHASE = contract.EventType.PURCHASE.value
# Funnel stages of the daily mart, in order (shared with the dashboard's live funnel).
FUNNEL_STAGES = contract.FUNNEL_STAGES


def _purchase() -> Column:
    return F.col("is_relevant") & (F.col("event_type") == PURCHASE)


def totals(events: DataFrame) -> dict:
    """Rows, distinct non-null ids and relevant purchase revenue: what verification compares
    (with :func:`spark_apps.transforms.compaction.totals` of the rows written). The distinct
    ids are their own job: beside other aggregates, Spark expands every row into one per
    distinct and one for the rest, about twice as slow (bench/limits.md, compaction)."""
    row = events.agg(
        F.count(F.lit(1)).alias("rows"),
        F.round(
            F.coalesce(F.sum(F.when(_purchase(), F.col("price") * F.col("quantity"))), F.lit(0.0)),
            2,
        ).alias("revenue"),
    ).first()
    distinct = events.select("event_id").where(F.col("event_id").isNotNull()).distinct().count()
    return {"rows": row["rows"], "distinct_ids": distinct, "revenue": row["revenue"]}


def dedupe_day(events: DataFrame) -> DataFrame:
    """:func:`~spark_apps.transforms.compaction.first_copies` in Spark: one row per
    ``event_id``, the first landed copy (Kafka timestamp, partition, offset), without the
    raw-only columns; every row of a null id is kept (an expectation fails them)."""
    first = Window.partitionBy("event_id").orderBy(*C.FIRST_COPY_ORDER[1:])
    return (
        events.withColumn("_n", F.row_number().over(first))
        .where((F.col("_n") == 1) | F.col("event_id").isNull())
        .drop("_n", *[c for c in C.RAW_ONLY if c in events.columns])
    )


SPARK = C.Dialect(
    col=F.col,
    is_null=lambda c: c.isNull(),
    is_valid=lambda c: c.isNotNull(),
    isin=lambda c, values: c.isin(*values),
    date_of=F.to_date,  # in the session's time zone: UTC (include/spark/submit.py)
)


def checked(events: DataFrame, day: date) -> tuple[dict, list[C.Failure]]:
    """:func:`~spark_apps.transforms.compaction.checked` in Spark: :func:`totals` and every
    expectation (the same rules, in Spark's columns), the rules in one pass."""
    rules = C.expectation_rules(day, events.columns, SPARK)
    aliases = {f"r{i}": name for i, name in enumerate(rules)}
    row = events.agg(
        *[
            F.sum(F.coalesce(cond, F.lit(False)).cast("long")).alias(alias)
            for alias, cond in zip(aliases, rules.values(), strict=True)
        ],
    ).first()
    summary = totals(events)
    failures = [C.Failure(aliases[a], row[a]) for a in aliases if (row[a] or 0) > 0]
    dup = summary["rows"] - summary["distinct_ids"]
    if dup > 0:
        failures.append(C.Failure("event_id not unique", dup))
    return summary, failures


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
