"""Count what the stream landed, reading the lake *through the file sink's metadata*.

The sinks are read by :func:`spark_apps.file_sinks.read_sink` (committed files only).

Usage::

    spark-submit ... spark_apps/lake_report.py --lake-path s3a://lake/raw/events \\
        --dead-letter-path s3a://lake/dead_letter/events

Writes its totals as JSON to ``--report`` (``include/reports.py``).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from include.spark.jobs import LakeReportJob
from spark_apps.file_sinks import read_sink
from spark_apps.reports import write_report


def summarize(events: DataFrame) -> dict:
    """Totals of a lake DataFrame: rows, distinct ids, relevant purchases, units, revenue."""
    purchase = F.col("is_relevant") & (F.col("event_type") == "purchase")
    row = events.agg(
        F.count(F.lit(1)).alias("rows"),
        F.countDistinct("event_id").alias("distinct_ids"),
        F.count("list_price").alias("enriched"),
        F.sum(F.col("is_relevant").cast("int")).alias("relevant"),
        F.sum(purchase.cast("int")).alias("purchases"),
        F.sum(F.when(purchase, F.col("quantity"))).alias("units"),
        F.round(F.sum(F.when(purchase, F.col("price") * F.col("quantity"))), 2).alias("revenue"),
    ).first()
    return {k: (row[k] or 0) for k in row.asDict()}


EMPTY = {
    "rows": 0,
    "enriched": 0,
    "distinct_ids": 0,
    "relevant": 0,
    "purchases": 0,
    "units": 0,
    "revenue": 0,
}


def report(spark: SparkSession, lake_path: str, dead_letter_path: str) -> dict:
    """Totals of the lake and the dead letters (per reason), read through the sinks' metadata."""
    lake = read_sink(spark, lake_path)
    dead = read_sink(spark, dead_letter_path)
    out = summarize(lake) if lake is not None else dict(EMPTY)
    out["dead_letter_rows"] = dead.count() if dead is not None else 0
    out["dead_letter_reasons"] = (
        {r["reason"]: r["count"] for r in dead.groupBy("reason").count().collect()}
        if dead is not None
        else {}
    )
    return json.loads(json.dumps(out, default=float))


def main(argv: Sequence[str] | None = None) -> int:
    args = LakeReportJob.from_argv(sys.argv[1:] if argv is None else argv)
    spark = SparkSession.builder.appName("lake_report").getOrCreate()
    write_report(
        spark, args.report, "lake_report", report(spark, args.lake_path, args.dead_letter_path)
    )
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
