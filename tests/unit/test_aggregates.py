"""The live aggregates' registry and the merge of a micro-batch's partials into stored rows
(include/analytics/store.py): sums add up, HyperLogLog sketches merge to the distinct count of
the union, whatever way the events were split into batches."""

from __future__ import annotations

import random
from datetime import datetime
from decimal import Decimal

import pytest
from datasketches import hll_sketch, tgt_hll_type

from include.analytics import store
from spark_apps.transforms import events as tx

W0, W1 = datetime(2026, 12, 1, 10, 0), datetime(2026, 12, 1, 10, 1)


def sketch(items) -> bytes:
    s = hll_sketch(store.SKETCH_LG_K, tgt_hll_type.HLL_4)
    for item in items:
        s.update(item)
    return s.serialize_compact()


def partial(purchases: int, revenue: str, users) -> dict:
    return {
        "window_start": W0,
        "window_end": W1,
        "category": "books",
        "currency": "EUR",
        "purchases": purchases,
        "units": purchases * 2,
        "revenue": Decimal(revenue),
        "buyers_sketch": sketch(users),
    }


def as_stored(row: tuple) -> dict:
    agg = store.AGGREGATES["category_sales_minute"]
    return dict(zip(agg.columns + agg.sketches, row, strict=True))


def test_every_live_aggregate_has_its_transform_and_columns():
    assert set(tx.live_aggregates()) == set(store.AGGREGATES)
    for agg in store.AGGREGATES.values():
        money_key = ("currency",) if agg.money else ()
        assert agg.key == ("window_start", agg.dimension, *money_key)
        assert set(agg.key) <= set(agg.columns)
        assert agg.partial_columns[:3] == agg.columns[:3]
        assert all(f"{d}_sketch" in agg.partial_columns for d in agg.distinct)


def test_a_new_key_takes_the_partial_and_its_estimate():
    agg = store.AGGREGATES["category_sales_minute"]
    row = as_stored(store.merge_partial(agg, None, partial(3, "30.10", ["u1", "u2", "u1"])))
    assert (row["purchases"], row["units"], row["revenue"], row["buyers"]) == (
        3,
        6,
        Decimal("30.10"),
        2,
    )
    assert (row["category"], row["currency"]) == ("books", "EUR")


def test_batches_add_up_to_the_whole_whatever_the_split():
    agg = store.AGGREGATES["category_sales_minute"]
    rng = random.Random(7)
    users = [f"u{rng.randrange(3_000)}" for _ in range(5_000)]
    stored = None
    for start in range(0, len(users), 700):  # eight micro-batches
        chunk = users[start : start + 700]
        stored = as_stored(store.merge_partial(agg, stored, partial(len(chunk), "1.01", chunk)))
    exact = len(set(users))
    assert stored["purchases"] == 5_000 and stored["revenue"] == Decimal("8.08")
    assert abs(stored["buyers"] - exact) <= 0.03 * exact
    one_pass = hll_sketch.deserialize(sketch(users)).get_estimate()
    assert abs(stored["buyers"] - one_pass) <= 0.01 * exact, "merged = sketched in one pass"


def test_a_row_stored_without_a_sketch_keeps_its_count():
    agg = store.AGGREGATES["category_sales_minute"]
    old = {"purchases": 4, "units": 8, "revenue": Decimal("4.00"), "buyers": 4}
    row = as_stored(store.merge_partial(agg, old, partial(1, "1.00", ["u9"])))
    assert (row["purchases"], row["buyers"]) == (5, 5)


def test_each_table_is_declared_once_and_its_ddl_follows():
    sales = store.AGGREGATES["category_sales_minute"].ddl()
    assert "revenue numeric(18, 2) NOT NULL" in sales and "purchases bigint NOT NULL" in sales
    assert "buyers_sketch bytea" in sales
    assert "PRIMARY KEY (window_start, category, currency)" in sales, "money kept per currency"
    funnel = store.AGGREGATES["funnel_minute"].ddl()
    assert "PRIMARY KEY (window_start, event_type)" in funnel and "currency" not in funnel
    from include.analytics import migrations

    hand_written = " ".join(m.sql for m in migrations.migrations())
    assert "category_sales_minute" not in hand_written, "no second, hand-written definition"


def test_a_declaration_names_its_transform_and_plain_columns():
    with pytest.raises(ValueError, match="not 'module:function'"):
        store.Aggregate("t", dimension="d", sums=("n",), transform="no_function_named")
    with pytest.raises(ValueError, match="SQL identifiers"):
        store.Aggregate("t; drop", dimension="d", sums=("n",), transform="m:f")
    with pytest.raises(ValueError, match="money columns must be sums"):
        store.Aggregate("t", dimension="d", sums=("n",), money=("r",), transform="m:f")


def test_an_aggregate_module_registers_its_table_once(monkeypatch):
    monkeypatch.setattr(store, "AGGREGATES", dict(store.AGGREGATES))
    added = store.load_aggregate_modules(["tests.integration.device_aggregate"])
    assert added == ["device_sales_minute"]
    agg = store.AGGREGATES["device_sales_minute"]
    assert "CREATE TABLE IF NOT EXISTS device_sales_minute" in agg.ddl()
    assert set(tx.live_aggregates()) == set(store.AGGREGATES)
    assert store.load_aggregate_modules(["tests.integration.device_aggregate"]) == []
    other = store.Aggregate("device_sales_minute", dimension="device", sums=("n",), transform="m:f")
    with pytest.raises(ValueError, match="already registered differently"):
        store.register(other)
    with pytest.raises(ValueError, match=r"--aggregate-modules: 'no\.such\.module'"):
        store.load_aggregate_modules(["no.such.module"])


def test_a_transform_that_does_not_resolve_is_named(monkeypatch):
    monkeypatch.setattr(store, "AGGREGATES", dict(store.AGGREGATES))
    store.register(store.Aggregate("t1", dimension="d", sums=("n",), transform="no_such_mod:f"))
    with pytest.raises(ValueError, match="aggregate 't1': 'no_such_mod:f'"):
        tx.live_aggregates()
    del store.AGGREGATES["t1"]
    store.register(store.Aggregate("t2", dimension="d", sums=("n",), transform="json:nothing"))
    with pytest.raises(ValueError, match="aggregate 't2': 'json:nothing' names no function"):
        tx.live_aggregates()
