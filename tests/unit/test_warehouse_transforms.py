"""Compaction's pure transforms on tiny inline DataFrames (local SparkSession)."""

from __future__ import annotations

from datetime import date, datetime

import pytest

from include.warehouse import marts
from spark_apps.transforms import warehouse as W

DAY = date(2026, 11, 20)
COLUMNS = (
    "event_id string, event_type string, event_time timestamp, event_date date, user_id string, "
    "session_id string, category string, price double, quantity long, currency string, "
    "is_relevant boolean, kafka_timestamp timestamp, kafka_partition int, kafka_offset long, "
    "event_hour int"
)


def row(eid, etype="purchase", *, t=None, session="s1", user="u1", price=10.0, qty=2, **kw):
    t = t or datetime(2026, 11, 20, 10, 0)
    base = {
        "event_id": eid,
        "event_type": etype,
        "event_time": t,
        "event_date": t.date(),
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
        "event_hour": t.hour,
    }
    base.update(kw)
    return tuple(base.values())


def frame(spark, *rows):
    return spark.createDataFrame(list(rows), COLUMNS)


def test_dedupe_keeps_the_first_landed_copy_and_drops_raw_only_columns(spark):
    late = datetime(2026, 11, 20, 11, 0)
    df = frame(
        spark,
        row("a", kafka_offset=9, kafka_timestamp=late, price=99.0),
        row("a", kafka_offset=3),
        row("b"),
    )
    out = {r["event_id"]: r for r in W.dedupe_day(df).collect()}
    assert sorted(out) == ["a", "b"] and out["a"]["price"] == 10.0
    assert "event_hour" not in W.dedupe_day(df).columns


def test_day_slice_keeps_one_event_date(spark):
    df = frame(spark, row("a"), row("b", t=datetime(2026, 11, 21, 0, 0)))
    assert [r["event_id"] for r in W.day_slice(df, DAY).collect()] == ["a"]


def test_daily_sales_counts_relevant_purchases_only(spark):
    df = frame(
        spark,
        row("a", user="u1", price=10.0, qty=2),
        row("b", user="u2", price=5.0, qty=1),
        row("c", user="u1", price=7.5, qty=2),
        row("d", "add_to_cart"),
        row("e", is_relevant=False),
    )
    (r,) = W.daily_sales(df).collect()
    assert (r["day"], r["category"], r["orders"], r["units"], r["buyers"]) == (
        DAY,
        "books",
        3,
        5,
        2,
    )
    assert r["revenue"] == 40.0 and r["avg_order_value"] == pytest.approx(13.33)
    assert r["currency"] == "USD"


def test_daily_sales_keeps_each_currency_apart(spark):
    df = frame(
        spark,
        row("a", user="u1", price=10.0, qty=2),
        row("b", user="u1", price=3.0, qty=1, currency="EUR"),
        row("c", user="u2", price=2.0, qty=1, currency="EUR"),
    )
    got = {
        r["currency"]: (r["revenue"], r["orders"], r["buyers"]) for r in W.daily_sales(df).collect()
    }
    assert got == {"USD": (20.0, 1, 1), "EUR": (5.0, 2, 2)}, "never 25 of no currency"


def test_daily_funnel_counts_sessions_per_stage_and_conversions(spark):
    df = frame(
        spark,
        row("1", "page_view", session="s1"),
        row("2", "product_view", session="s2"),
        row("3", "click", session="s1"),
        row("4", "add_to_cart", session="s1"),
        row("5", "purchase", session="s1"),
        row("6", "page_view", session="bot", is_relevant=False),
    )
    (r,) = W.daily_funnel(df).collect()
    assert (r["views"], r["clicks"], r["carts"], r["checkouts"], r["purchases"]) == (2, 1, 1, 0, 1)
    assert r["views_to_clicks"] == 0.5 and r["views_to_purchases"] == 0.5
    assert r["carts_to_checkouts"] == 0.0 and r["checkouts_to_purchases"] is None


def test_expectations_name_each_broken_rule_with_its_count(spark):
    df = frame(
        spark,
        row("ok"),
        row("neg", price=-1.0),
        row("cur", currency="XXX"),
        row("late", t=datetime(2026, 11, 21, 1, 0)),
        row("ok"),
        row(None),
        row("noprice", price=None),
    )
    failures = {f.rule: f.rows for f in W.expectations(df, DAY)}
    assert failures["price below 0"] == 1
    assert failures["currency not one of ['EUR', 'GBP', 'USD']"] == 1
    assert failures["event_time outside the day"] == 1
    assert failures["event_id is null"] == 1
    assert failures["event_id not unique"] == 2  # the duplicate "ok" and the null id
    assert any(rule.startswith("price is null for") for rule in failures)


def test_totals_and_expectations_in_one_pass_agree_with_each_alone(spark):
    df = frame(
        spark,
        row("a"),
        row("a", "page_view", price=None),
        row("b", price=2.5, qty=4),
        row("bot", is_relevant=False),
        row(None, "click", price=None),
        row("neg", price=-1.0, qty=1),
    )
    totals, failures = W.checked(df, DAY)
    # By hand: 6 rows; a, b, bot, neg (a null id is not an id); purchases of relevant
    # events: a 10 x 2, b 2.5 x 4, neg -1 x 1.
    assert totals == {"rows": 6, "distinct_ids": 4, "revenue": 29.0}
    assert totals == W.totals(df)
    assert failures == W.expectations(df, DAY)
    assert {f.rule: f.rows for f in failures}["event_id not unique"] == 2


def test_clean_rows_pass_every_expectation(spark):
    assert W.expectations(frame(spark, row("a"), row("b", "page_view", price=None)), DAY) == []


def test_output_files_rounds_the_expected_size_to_target_sized_files():
    assert W.output_files(0, 60, 1024) == 1
    assert W.output_files(100_000, 60, 1_000_000) == 6
    assert W.output_files(1_000, 100, 40_000) == 2  # 2.5 -> 2 files of 50 KB (+25 %)
    with pytest.raises(ValueError, match="positive"):
        W.output_files(1, 1, 0)


def test_every_registered_mart_is_a_transform_to_rows_keyed_by_day(spark):
    df = frame(spark, row("1", "page_view"), row("2", "purchase"), row("3", "click"))
    for mart in marts.MARTS:
        out = getattr(W, mart.transform)(df)
        assert "day" in out.columns, mart.name
        assert {r["day"] for r in out.collect()} == {DAY}, mart.name
    assert len({m.name for m in marts.MARTS}) == len(marts.MARTS)


def test_marts_are_picked_by_name_and_an_unknown_one_is_named():
    assert marts.named("") == marts.MARTS
    assert marts.named(" daily_funnel ,") == (marts.FUNNEL,)
    assert marts.named(["daily_funnel", "daily_sales_by_category"]) == marts.MARTS
    with pytest.raises(ValueError, match=r"unknown mart\(s\) \['nope'\]; the marts are"):
        marts.named("daily_funnel,nope")


def test_a_sink_read_for_some_days_opens_only_their_files(spark, tmp_path):
    """``read_sink(days=...)``: the rows of those days only, and the schema of their files
    only (another day's files with an extra column, or unreadable ones, are never opened)."""
    from pyspark.sql import functions as F

    from spark_apps.file_sinks import file_sink, logged_files, read_sink

    lake = f"file:{tmp_path}/lake"
    sink = file_sink(spark, lake, ["event_date", "event_hour"])
    old = spark.createDataFrame([row("a"), row("b")], COLUMNS)
    sink.addBatch(0, old._jdf)
    later = datetime(2026, 11, 21, 9, 0)
    newer = spark.createDataFrame([row("c", t=later)], COLUMNS).withColumn("extra", F.lit(1))
    sink.addBatch(1, newer._jdf)
    # The later day's file is made unreadable: reading the first day must not open it.
    for f in logged_files(spark, lake) or []:
        if "event_date=2026-11-21" in f:
            with open(f.removeprefix("file:"), "wb") as fh:
                fh.write(b"not parquet")
    frame = read_sink(spark, lake, days=[DAY])
    assert sorted(r["event_id"] for r in frame.collect()) == ["a", "b"]
    assert "extra" not in frame.columns
    assert read_sink(spark, lake, days=[date(2026, 11, 22)]) is None
