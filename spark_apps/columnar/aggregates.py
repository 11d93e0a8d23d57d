"""The built-in live aggregates over Arrow tables (the columnar stream's side of
``include.analytics.store.AGGREGATES``; the row-based stream's are in
``spark_apps/transforms/events.py``, with the same meaning).

Each function takes one task's kept events of a micro-batch (the lake's columns) and the
window in milliseconds, and returns that task's partial rows (``Aggregate.partial_columns``):
sums, and HyperLogLog sketches serialized as Apache DataSketches does (the format of Spark's
``hll_sketch_agg``, which ``store.add_batch`` merges). The driver combines the tasks' partials
(``store.combine_partials``) before adding them to Postgres.
"""

from __future__ import annotations

import itertools
from decimal import ROUND_HALF_UP, Decimal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from include.analytics.store import SKETCH_LG_K
from include.events import contract

_CENT = Decimal(1).scaleb(-contract.MONEY_SCALE)
MONEY = pa.decimal128(contract.MONEY_PRECISION, contract.MONEY_SCALE)
WINDOW = pa.timestamp("us", tz="UTC")


def windows(event_time: pa.ChunkedArray | pa.Array, window_ms: int) -> tuple[pa.Array, pa.Array]:
    """The tumbling event-time window (start, end) of each time, as Spark's ``window()``."""
    us = pc.cast(event_time, pa.int64()).to_numpy(zero_copy_only=False)
    size = window_ms * 1000
    start = us - np.mod(us, size)
    return pa.array(start, pa.int64()).cast(WINDOW), pa.array(start + size, pa.int64()).cast(WINDOW)


def with_windows(events: pa.Table, window_ms: int) -> pa.Table:
    start, end = windows(events["event_time"], window_ms)
    return events.append_column("window_start", start).append_column("window_end", end)


def sketches(distinct: pa.ChunkedArray | pa.Array) -> pa.Array:
    """A serialized HyperLogLog sketch per group from each group's distinct values (a list
    column, the ``"distinct"`` aggregation of a ``group_by``): the values' UTF-8, as Spark's
    ``hll_sketch_agg`` of a string reads them."""
    from datasketches import hll_sketch

    lists = distinct.combine_chunks() if isinstance(distinct, pa.ChunkedArray) else distinct
    values = lists.values.to_pylist()
    bounds = lists.offsets.to_pylist()
    out = []
    for lo, hi in itertools.pairwise(bounds):
        sketch = hll_sketch(SKETCH_LG_K)
        for v in values[lo:hi]:
            if v is not None:
                sketch.update(v)
        out.append(sketch.serialize_compact())
    return pa.array(out, pa.binary())


def money_lines(events: pa.Table) -> pa.Array:
    """Each event's line, price times quantity (a double, as Spark multiplies them), rounded
    half up to cents as Spark casts a double to the money decimal."""
    lines = [
        Decimal(repr(float(p) * q)).quantize(_CENT, ROUND_HALF_UP)
        for p, q in zip(events["price"].to_pylist(), events["quantity"].to_pylist(), strict=True)
    ]
    return pa.array(lines, MONEY)


def purchases(events: pa.Table) -> pa.Table:
    """The relevant purchases."""
    buys = relevant(events)
    return buys.filter(pc.equal(buys["event_type"], contract.EventType.PURCHASE.value))


def relevant(events: pa.Table) -> pa.Table:
    return events.filter(pc.fill_null(events["is_relevant"], False))


def category_sales(events: pa.Table, window_ms: int) -> pa.Table:
    """Relevant purchases per event-time window, category and currency: purchases, units,
    revenue (each line, price times quantity, rounded half up to cents, then summed: exact
    decimals, never across currencies) and the buyers' sketch."""
    keys = ["window_start", "window_end", "category", "currency"]
    table = with_windows(purchases(events), window_ms)
    table = table.append_column("line", money_lines(table))
    sums = table.group_by(keys, use_threads=False).aggregate(
        [("event_id", "count"), ("quantity", "sum"), ("line", "sum"), ("user_id", "distinct")]
    )
    return pa.table(
        {
            **{k: sums[k] for k in keys},
            "purchases": sums["event_id_count"],
            "units": sums["quantity_sum"],
            "revenue": sums["line_sum"].cast(MONEY),
            "buyers_sketch": sketches(sums["user_id_distinct"]),
        }
    )


def funnel_counts(events: pa.Table, window_ms: int) -> pa.Table:
    """Relevant events per event-time window and event type, with the sessions' sketch."""
    keys = ["window_start", "window_end", "event_type"]
    table = with_windows(relevant(events), window_ms)
    sums = table.group_by(keys, use_threads=False).aggregate(
        [("event_id", "count"), ("session_id", "distinct")]
    )
    return pa.table(
        {
            **{k: sums[k] for k in keys},
            "events": sums["event_id_count"],
            "sessions_sketch": sketches(sums["session_id_distinct"]),
        }
    )
