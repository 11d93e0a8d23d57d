"""The compaction's data path in Arrow (spark_apps/transforms/compaction.py) on tiny inline
tables; every expected figure is worked out by hand in the test."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pyarrow as pa
import pytest

from spark_apps.transforms import compaction as C

DAY = date(2026, 11, 20)
SCHEMA = pa.schema(
    [
        ("event_id", pa.string()),
        ("event_type", pa.string()),
        ("event_time", pa.timestamp("us", tz="UTC")),
        ("user_id", pa.string()),
        ("session_id", pa.string()),
        ("category", pa.string()),
        ("price", pa.float64()),
        ("quantity", pa.int64()),
        ("currency", pa.string()),
        ("is_relevant", pa.bool_()),
        ("kafka_timestamp", pa.timestamp("us", tz="UTC")),
        ("kafka_partition", pa.int32()),
        ("kafka_offset", pa.int64()),
        ("event_date", pa.date32()),
        ("event_hour", pa.int32()),
    ]
)


def row(eid, etype="purchase", *, t=None, session="s1", user="u1", price=10.0, qty=2, **kw) -> dict:
    t = t or datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    base = {
        "event_id": eid,
        "event_type": etype,
        "event_time": t,
        "user_id": user,
        "session_id": session,
        "category": "books",
        "price": price,
        "quantity": qty,
        "currency": "USD",
        "is_relevant": True,
        "kafka_timestamp": t,
        "kafka_partition": 0,
        "kafka_offset": 0,
        "event_date": t.date(),
        "event_hour": t.hour,
    }
    unknown = set(kw) - set(base)
    assert not unknown, f"not a column: {unknown}"
    return base | kw


def table(*rows: dict) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=SCHEMA)


def test_first_copies_keep_the_earliest_landed_copy_and_drop_raw_only_columns():
    early = datetime(2026, 11, 20, 10, 0, tzinfo=UTC)
    late = datetime(2026, 11, 20, 11, 0, tzinfo=UTC)
    out = C.first_copies(
        table(
            row("a", kafka_offset=9, kafka_timestamp=late, price=99.0),
            row("a", kafka_offset=3, price=10.0),
            row("b", kafka_partition=2, kafka_offset=1, kafka_timestamp=early, price=1.0),
            row("b", kafka_partition=1, kafka_offset=7, kafka_timestamp=early, price=2.0),
            row("c", kafka_partition=1, kafka_offset=8, price=3.0),
            row("c", kafka_partition=1, kafka_offset=5, price=4.0),
            row("d"),
            row(None, price=5.0),
            row(None, price=6.0),
        )
    )
    by_id = {}
    for r in out.to_pylist():
        by_id.setdefault(r["event_id"], []).append(r["price"])
    # a: earliest Kafka timestamp; b: same time, lower partition; c: same partition, lower
    # offset; every null-id row stays (the expectations fail them).
    assert by_id == {"a": [10.0], "b": [2.0], "c": [4.0], "d": [10.0], None: [5.0, 6.0]}
    assert "event_hour" not in out.column_names


def test_first_copies_of_unique_ids_are_the_rows_themselves():
    rows = table(row("a"), row("b"), row("c"))
    out = C.first_copies(rows)
    assert out.to_pylist() == rows.drop_columns(["event_hour"]).to_pylist()


def test_totals_count_rows_non_null_ids_and_relevant_purchase_revenue():
    got = C.totals(
        table(
            row("a"),
            row("a", "page_view", price=None),
            row("b", price=2.5, qty=4),
            row("bot", is_relevant=False),
            row(None, "click", price=None),
            row("neg", price=-1.0, qty=1),
        )
    )
    # By hand: 6 rows; ids a, b, bot, neg; relevant purchases 10 x 2 + 2.5 x 4 - 1 x 1.
    assert got == {"rows": 6, "distinct_ids": 4, "revenue": 29.0}
    assert C.totals(table()) == {"rows": 0, "distinct_ids": 0, "revenue": 0.0}


def test_expectations_name_each_broken_rule_with_its_count():
    next_day = datetime(2026, 11, 21, 1, 0, tzinfo=UTC)
    _, failures = C.checked(
        table(
            row("ok"),
            row("neg", price=-1.0),
            row("cur", currency="XXX"),
            row("late", t=next_day, event_date=DAY),  # in the day's partition, not its day
            row("ok"),
            row(None),
            row("noprice", price=None),
            row("kind", "teleport"),
        ),
        DAY,
    )
    got = {f.rule: f.rows for f in failures}
    assert got.pop("price below 0") == 1
    assert got.pop("currency not one of ['EUR', 'GBP', 'USD']") == 1
    assert got.pop("event_time outside the day") == 1
    assert got.pop("event_date differs from event_time's date") == 1
    assert got.pop("event_id is null") == 1
    assert got.pop("event_id is null for all types") == 1  # the contract's rule as well
    assert got.pop("event_id not unique") == 2  # the second "ok" and the null id
    assert (
        got.pop("event_type not one of " + str(sorted(e.value for e in C.contract.EventType))) == 1
    )
    (price_rule,) = [r for r in got if r.startswith("price is null for")]
    assert got.pop(price_rule) == 1
    assert got == {}, "no other rule fires"


def test_clean_rows_pass_every_expectation_and_their_totals_come_back():
    totals, failures = C.checked(table(row("a"), row("b", "page_view", price=None)), DAY)
    assert failures == []
    assert totals == {"rows": 2, "distinct_ids": 2, "revenue": 20.0}
    assert C.checked(table(), DAY) == ({"rows": 0, "distinct_ids": 0, "revenue": 0.0}, [])


def test_a_field_the_rows_lack_is_not_checked():
    rows = table(row("a", currency=None)).drop_columns(["currency"])
    assert C.checked(rows, DAY)[1] == []


def test_without_ids_is_an_anti_join():
    rows = table(row("a"), row("b"), row("c"))
    assert C.without_ids(rows, pa.array(["b", "x"]))["event_id"].to_pylist() == ["a", "c"]
    assert C.without_ids(rows, pa.array([], pa.string())).num_rows == 3


def test_conformed_orders_casts_and_fills_the_target_columns():
    target = pa.schema(
        [("price", pa.float64()), ("note", pa.string()), ("event_id", pa.large_string())]
    )
    out = C.conformed(table(row("a", price=3.0)), target)
    assert out.schema == target
    assert out.to_pylist() == [{"price": 3.0, "note": None, "event_id": "a"}]


@pytest.mark.parametrize("files", [1, 2, 3, 7])
def test_for_reading_sorts_and_cuts_the_rows_into_files(files):
    rows = table(
        *[
            row(f"{i}", etype, category=cat)
            for i, (cat, etype) in enumerate(
                [("toys", "click"), ("books", "purchase"), ("books", "click"), ("art", "click")] * 3
            )
        ]
    )
    parts = C.for_reading(rows, files)
    assert len(parts) == min(files, 12) and sum(p.num_rows for p in parts) == 12
    keys = [(r["category"], r["event_type"]) for p in parts for r in p.to_pylist()]
    assert keys == sorted(keys)
    assert max(p.num_rows for p in parts) - min(p.num_rows for p in parts) <= 1
