"""A live aggregate added through the registry alone: revenue and orders per minute by device.

Imported by the stream's driver when the run names it (DAG param ``aggregate_modules``, the
app's ``--aggregate-modules``): this file is the whole change. Its table, DDL, upsert and
place in the stream's fan-out all derive from the one ``register`` call
(tests/integration/test_pipeline.py checks the table against the generator's own record).
"""

from __future__ import annotations

from pyspark.sql import functions as F
from pyspark.sql import types as T

from include.analytics import store
from include.events import contract
from spark_apps.transforms.events import Measures


def device_sales() -> Measures:
    """Relevant purchases per event-time window, device and currency."""
    line = (F.col("price") * F.col("quantity")).cast(
        T.DecimalType(contract.MONEY_PRECISION, contract.MONEY_SCALE)
    )
    return Measures(
        where=F.col("is_relevant") & (F.col("event_type") == contract.EventType.PURCHASE.value),
        # money is kept per currency (the registry keys it so)
        dimensions=(F.coalesce(F.col("device"), F.lit("unknown")), F.col("currency")),
        sums=(F.lit(1), line),
        distinct=(F.col("user_id"),),
    )


DEVICE_SALES = store.register(
    store.Aggregate(
        "device_sales_minute",
        dimension="device",
        sums=("orders", "revenue"),
        transform=f"{__name__}:device_sales",
        distinct=("buyers",),
        money=("revenue",),
        comment="Relevant purchases per minute and device (added by a test).",
    )
)
