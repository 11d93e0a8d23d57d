"""Pure transforms of the nightly compaction's data path, on Arrow tables: one day of landed
events -> its first copies, their expectations and totals, the rows in the warehouse's order.
Table in, table (or plain values) out; no I/O.

The compaction reads a day's thousands of small raw files with pyarrow's C++ reader and keeps
the rows in Arrow: the same day through Spark took 24-34 s against 6-7.6 s (bench/limits.md,
compaction), most of it a cold JVM reading small files. Iceberg's Java API commits the files,
and Spark verifies what the table holds and builds the marts (``spark_apps/compact_events.py``);
a day larger than the driver's memory goes through Spark's engine, with the same rules
(:class:`Dialect`; :mod:`spark_apps.transforms.warehouse`).

The expectations derive from :mod:`include.events.contract` (required fields per type, enums,
minimums), like the stream's validator: a rule added to the contract is checked here too.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.acero as acero
import pyarrow.compute as pc
import pyarrow.dataset as ds

from include.events import contract

PURCHASE = contract.EventType.PURCHASE.value
# Columns of the raw lake that the warehouse does not keep (the hour is a raw-layout detail).
RAW_ONLY = ("event_hour",)
# The first landed copy of an event: the earliest Kafka timestamp, then partition, offset.
FIRST_COPY_ORDER = ("event_id", "kafka_timestamp", "kafka_partition", "kafka_offset")
# The warehouse's sort order (the events table's ``WRITE ORDERED BY``): a reader of one
# category and type skips most row groups.
WRITE_ORDER = ("category", "event_type", "event_time")


def kept_columns(schema: pa.Schema) -> pa.Schema:
    """The raw lake's columns the warehouse keeps (all but :data:`RAW_ONLY`)."""
    return pa.schema([f for f in schema if f.name not in RAW_ONLY])


def first_copies(events: pa.Table) -> pa.Table:
    """One row per ``event_id``: the first landed copy (Kafka timestamp, partition, offset),
    without the raw-only columns; every row of a null id is kept (an expectation fails them).

    The stream dedupes within a horizon; copies further apart (a replay days later) are
    removed here, deterministically, so a re-run picks the same row. Only the keys of ids
    seen more than once are sorted (a few percent of a day; a hash count finds them), and
    the rows are copied once, by one filter."""
    events = events.drop_columns([c for c in RAW_ONLY if c in events.column_names])
    counts = pc.value_counts(events["event_id"])
    repeated = pc.filter(counts.field("values"), pc.greater(counts.field("counts"), 1))
    if not len(repeated):
        return events
    copies = pc.is_in(events["event_id"], value_set=repeated).fill_null(False)
    keys = events.select(list(FIRST_COPY_ORDER)).append_column(
        "_row", pa.array(np.arange(events.num_rows))
    )
    ordered = keys.filter(copies).sort_by([(c, "ascending") for c in FIRST_COPY_ORDER])
    ids = ordered["event_id"].combine_chunks()
    again = pc.equal(ids.slice(1), ids.slice(0, len(ids) - 1)).fill_null(False)
    first = ordered["_row"].filter(pa.concat_arrays([pa.array([True]), pc.invert(again)]))
    keep = np.invert(copies.to_numpy(zero_copy_only=False))
    keep[first.to_numpy()] = True
    return events.filter(pa.array(keep))


def _day_bounds(day: date) -> tuple[datetime, datetime]:
    start = datetime.combine(day, time.min, tzinfo=UTC)
    return start, start + timedelta(days=1)


def _purchase() -> pc.Expression:
    return ds.field("is_relevant") & (ds.field("event_type") == PURCHASE)


def totals(events: pa.Table) -> dict:
    """Rows, distinct non-null ids and the relevant purchases' revenue (price x quantity,
    rounded to cents): what the verification compares with the table's."""
    ids = events["event_id"]
    distinct = len(pc.unique(ids.drop_null())) if events.num_rows else 0
    needed = events.select(["is_relevant", "event_type", "price", "quantity"])
    bought = needed.filter(_purchase()) if events.num_rows else needed
    amounts = pc.multiply(bought["price"], bought["quantity"].cast(pa.float64()))
    revenue = pc.sum(amounts).as_py() if bought.num_rows else None
    return {"rows": events.num_rows, "distinct_ids": distinct, "revenue": round(revenue or 0.0, 2)}


@dataclass(frozen=True)
class Failure:
    rule: str
    rows: int

    def __str__(self) -> str:
        return f"{self.rule}: {self.rows} row(s)"


@dataclass(frozen=True)
class Dialect:
    """How an engine writes a rule's condition: a column by name and the operations the rules
    use besides comparisons and ``& | ~`` (Arrow's expressions here, Spark's columns in
    :mod:`spark_apps.transforms.warehouse`), so the rules are written once for both."""

    col: Callable[[str], Any]
    is_null: Callable[[Any], Any]
    is_valid: Callable[[Any], Any]
    isin: Callable[[Any, list], Any]
    date_of: Callable[[Any], Any]  # a UTC timestamp's date


ARROW = Dialect(
    col=ds.field,
    is_null=lambda c: c.is_null(),
    is_valid=lambda c: c.is_valid(),
    isin=lambda c, values: c.isin(values),
    date_of=lambda c: c.cast(pa.date32()),
)


def expectation_rules(day: date, columns: Sequence[str], d: Dialect = ARROW) -> dict[str, Any]:
    """Rule name -> a condition that is true for a row that *breaks* the rule (null counts as
    not broken), in dialect ``d``. Contract fields the data lacks are skipped (older files'
    columns)."""
    start, end = _day_bounds(day)
    when = d.col("event_time")
    rules: dict[str, Any] = {
        "event_id is null": d.is_null(d.col("event_id")),
        "event_time outside the day": d.is_null(when) | (when < start) | (when >= end),
        "event_date differs from event_time's date": d.col("event_date") != d.date_of(when),
    }
    for f in contract.FIELDS:
        if f.name not in columns:
            continue
        column = d.col(f.name)
        if f.required_for:
            types = sorted(t.value for t in f.required_for)
            rules[f"{f.name} is null for {_types_label(types)}"] = d.is_null(column) & d.isin(
                d.col("event_type"), types
            )
        if f.enum is not None:
            values = [e.value for e in f.enum]
            rules[f"{f.name} not one of {sorted(values)}"] = d.is_valid(column) & ~d.isin(
                column, values
            )
        if f.minimum is not None:
            rules[f"{f.name} below {f.minimum:g}"] = d.is_valid(column) & (column < f.minimum)
    return rules


def _types_label(types: list[str]) -> str:
    return "all types" if len(types) == len(contract.ALL_TYPES) else ", ".join(types)


def checked(events: pa.Table, day: date) -> tuple[dict, list[Failure]]:
    """:func:`totals` and every expectation: the broken rules with their row counts, and
    ``event_id`` unique (the table must hold one row per event). The rules are evaluated in
    one multi-threaded pass (an Acero plan: each rule a column, summed)."""
    summary = totals(events)
    rules = expectation_rules(day, events.column_names)
    names = [f"r{i}" for i in range(len(rules))]
    plan = acero.Declaration.from_sequence(
        [
            acero.Declaration("table_source", acero.TableSourceNodeOptions(events)),
            acero.Declaration(
                "project",
                acero.ProjectNodeOptions([r.cast(pa.int64()) for r in rules.values()], names),
            ),
            acero.Declaration(
                "aggregate", acero.AggregateNodeOptions([(n, "sum", None, n) for n in names])
            ),
        ]
    )
    broken = plan.to_table().to_pylist()[0]
    failures = [
        Failure(rule, broken[n]) for n, rule in zip(names, rules, strict=True) if broken[n] or 0
    ]
    dup = summary["rows"] - summary["distinct_ids"]
    if dup > 0:
        failures.append(Failure("event_id not unique", dup))
    return summary, failures


def without_ids(events: pa.Table, ids: pa.Array | pa.ChunkedArray) -> pa.Table:
    """The rows of ``events`` whose ``event_id`` is not among ``ids`` (an anti-join)."""
    if not len(ids) or not events.num_rows:
        return events
    known = pc.is_in(events["event_id"], value_set=pa.chunked_array(ids).combine_chunks())
    return events.filter(pc.invert(known))


def conformed(events: pa.Table, schema: pa.Schema) -> pa.Table:
    """``events`` as ``schema`` says: its columns in its order and types, a column the rows
    lack (older files) null, and no other."""
    columns = [
        events[f.name].cast(f.type)
        if f.name in events.column_names
        else pa.nulls(len(events), f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(columns, schema=schema)


def for_reading(events: pa.Table, files: int) -> list[pa.Table]:
    """The rows in the warehouse's order (:data:`WRITE_ORDER`), cut into ``files`` slices
    whose rows differ by one at most (fewer when there are fewer rows): each is one file, and
    each covers its own range of the order."""
    ordered = events.sort_by([(c, "ascending") for c in WRITE_ORDER])
    n = max(1, files)
    bounds = [i * ordered.num_rows // n for i in range(n + 1)]
    return [ordered.slice(a, b - a) for a, b in pairwise(bounds) if b > a] or [ordered]
