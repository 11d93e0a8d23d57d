"""A live aggregate added through the registry alone: revenue and orders per minute by device.

Imported by the stream's driver when the run names it (DAG param ``aggregate_modules``, the
app's ``--aggregate-modules``): this file is the whole change. Its table, DDL, upsert and
place in the stream's fan-out all derive from the one ``register`` call
(tests/integration/test_pipeline.py checks the table against the generator's own record).
"""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc
from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql import types as T

from include.analytics import store
from include.analytics.store import SKETCH_LG_K
from include.events import contract
from spark_apps.columnar import aggregates as A


def device_sales(events: DataFrame, window: str) -> DataFrame:
    """One batch's relevant purchases per event-time window, device and currency."""
    purchases = events.where(
        F.col("is_relevant") & (F.col("event_type") == contract.EventType.PURCHASE.value)
    )
    line = (F.col("price") * F.col("quantity")).cast(
        T.DecimalType(contract.MONEY_PRECISION, contract.MONEY_SCALE)
    )
    return (
        purchases.groupBy(
            F.window("event_time", window).alias("w"),
            F.coalesce(F.col("device"), F.lit("unknown")).alias("device"),
            F.col("currency"),  # money is kept per currency (the registry keys it so)
        )
        .agg(
            F.count(F.lit(1)).alias("orders"),
            F.sum(line).alias("revenue"),
            F.hll_sketch_agg("user_id", SKETCH_LG_K).alias("buyers_sketch"),
        )
        .select(
            F.col("w.start").alias("window_start"),
            F.col("w.end").alias("window_end"),
            "device",
            "currency",
            "orders",
            "revenue",
            "buyers_sketch",
        )
    )


def device_sales_arrow(events: pa.Table, window_ms: int) -> pa.Table:
    """The same for the columnar stream (one task's kept events, a pyarrow Table)."""
    keys = ["window_start", "window_end", "device", "currency"]
    table = A.with_windows(A.purchases(events), window_ms)
    table = table.set_column(
        table.schema.get_field_index("device"), "device", pc.fill_null(table["device"], "unknown")
    ).append_column("line", A.money_lines(table))
    sums = table.group_by(keys, use_threads=False).aggregate(
        [("event_id", "count"), ("line", "sum"), ("user_id", "distinct")]
    )
    return pa.table(
        {
            **{k: sums[k] for k in keys},
            "orders": sums["event_id_count"],
            "revenue": sums["line_sum"].cast(A.MONEY),
            "buyers_sketch": A.sketches(sums["user_id_distinct"]),
        }
    )


DEVICE_SALES = store.register(
    store.Aggregate(
        "device_sales_minute",
        dimension="device",
        sums=("orders", "revenue"),
        transform=f"{__name__}:device_sales",
        arrow_transform=f"{__name__}:device_sales_arrow",
        distinct=("buyers",),
        money=("revenue",),
        comment="Relevant purchases per minute and device (added by a test).",
    )
)
