"""The warehouse's Spark transforms (marts, totals) on tiny inline DataFrames (local
SparkSession); the compaction's Arrow data path: test_compaction_transforms.py."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from include.warehouse import marts
from spark_apps.transforms import warehouse as W
from tests.unit import test_compaction_transforms as A

DAY = date(2026, 11, 20)
row = A.row  # one event of the day, as the Arrow path's tests build it


def frame(spark, *rows):
    return spark.createDataFrame(A.table(*rows))


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
    old = frame(spark, row("a"), row("b"))
    sink.addBatch(0, old._jdf)
    later = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
    newer = frame(spark, row("c", t=later)).withColumn("extra", F.lit(1))
    sink.addBatch(1, newer._jdf)
    # The later day's file is made unreadable: reading the first day must not open it.
    for f in logged_files(spark, lake) or []:
        if "event_date=2026-11-21" in f:
            with open(f.removeprefix("file:"), "wb") as fh:
                fh.write(b"not parquet")
    read = read_sink(spark, lake, days=[DAY])
    assert sorted(r["event_id"] for r in read.collect()) == ["a", "b"]
    assert "extra" not in read.columns
    assert read_sink(spark, lake, days=[date(2026, 11, 22)]) is None


def test_a_sink_read_sees_the_files_its_log_s_retention_moved_to_the_archive(spark, tmp_path):
    """The row engine's sink (Spark's ``FileStreamSink`` with a retention) compacting its log
    at batch 1 (an interval of 2): the first batch's entries, older than the retention, leave
    the log; archived just before the commit, every reader still sees them: ``read_sink``
    (whole, and of a day), ``committed_files`` and the compaction's ``arrow_lake.sink_log``."""
    import time

    from pyarrow import fs

    from spark_apps import arrow_lake, sink_log
    from spark_apps.file_sinks import committed_files, file_sink, logged_files, read_sink

    lake = f"file:{tmp_path}/lake"
    interval = "spark.sql.streaming.fileSink.log.compactInterval"
    before = spark.conf.get(interval)
    spark.conf.set(interval, "2")
    try:
        sink = file_sink(spark, lake, ["event_date", "event_hour"], retention_ms=1_000)
    finally:
        spark.conf.set(interval, before)
    archiver = sink_log.Archiver(fs.LocalFileSystem(), lake, 1_000)
    archiver.before_commit()
    sink.addBatch(0, frame(spark, row("a"), row("b"))._jdf)
    time.sleep(1.2)  # the first batch's files older than the retention
    later = datetime(2026, 11, 21, 9, 0, tzinfo=UTC)
    assert archiver.before_commit() == 2
    sink.addBatch(1, frame(spark, row("c", t=later))._jdf)

    assert len(logged_files(spark, lake) or []) == 1  # the log dropped batch 0's entries
    logged, archived = committed_files(spark, lake)
    assert len(archived) == 2 and not set(archived) & set(logged or [])
    assert sorted(r["event_id"] for r in read_sink(spark, lake).collect()) == ["a", "b", "c"]
    assert sorted(r["event_id"] for r in read_sink(spark, lake, days=[DAY]).collect()) == [
        "a",
        "b",
    ]
    assert len(arrow_lake.sink_log(fs.LocalFileSystem(), lake) or {}) == 3


def test_the_lakes_distinct_valued_columns_are_written_without_a_dictionary(spark, tmp_path):
    """The stream's session settings (``batch_conf``): the lake's distinct-valued columns
    are plain-encoded (no dictionary to hash every id into), strings and INT96 timestamps
    alike; the others keep Parquet's dictionary. Every named column is one the lake writes,
    so a rename cannot leave the setting on nothing."""
    import glob

    import pyarrow.parquet as pq
    from pyspark.sql import functions as F

    from include.events import contract
    from spark_apps.file_sinks import file_sink, plain_encoded
    from spark_apps.stream_events import batch_conf
    from spark_apps.transforms import events as tx

    assert set(tx.DISTINCT_VALUED_COLUMNS) <= {*contract.FIELD_NAMES, *tx.LINEAGE_COLUMNS}
    settings = plain_encoded(tx.DISTINCT_VALUED_COLUMNS)
    assert settings.items() <= batch_conf("1 second").items()
    lake = f"{tmp_path}/lake"
    rows = [row(f"e{i}", kafka_offset=i, session=f"s{i}", user=f"u{i}") for i in range(50)]
    batch = frame(spark, *rows).withColumn("ingestion_time", F.col("event_time"))
    for key, value in settings.items():
        spark.conf.set(key, value)
    try:
        file_sink(spark, f"file:{lake}", []).addBatch(0, batch._jdf)
    finally:
        for key in settings:
            spark.conf.unset(key)
    dictionary: dict[str, bool] = {}
    for path in glob.glob(f"{lake}/*.parquet"):
        meta = pq.ParquetFile(path).metadata.row_group(0)
        for i in range(meta.num_columns):
            column = meta.column(i)
            encoded = any("DICTIONARY" in e for e in column.encodings)
            dictionary[column.path_in_schema] = dictionary.get(column.path_in_schema) or encoded
    assert set(tx.DISTINCT_VALUED_COLUMNS) <= dictionary.keys()
    assert not any(dictionary[c] for c in tx.DISTINCT_VALUED_COLUMNS), dictionary
    assert dictionary["category"] and dictionary["event_type"], dictionary


def test_totals_count_rows_non_null_ids_and_relevant_purchase_revenue(spark):
    df = frame(
        spark,
        row("a"),
        row("a", "page_view", price=None),
        row("b", price=2.5, qty=4),
        row("bot", is_relevant=False),
        row(None, "click", price=None),
        row("neg", price=-1.0, qty=1),
    )
    # By hand: 6 rows; a, b, bot, neg (a null id is not an id); purchases of relevant
    # events: a 10 x 2, b 2.5 x 4, neg -1 x 1.
    assert W.totals(df) == {"rows": 6, "distinct_ids": 4, "revenue": 29.0}


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


def test_spark_engine_keeps_the_same_rows_and_breaks_the_same_rules_as_arrows(spark):
    """Spark's engine (a day larger than the driver's memory) against the Arrow path's, on
    rows that break every kind of rule and hold copies: the same first copies, the same
    totals, the same failures (each engine's own figures are worked out by hand in
    test_compaction_transforms.py)."""
    from spark_apps.transforms import compaction as C

    next_day = datetime(2026, 11, 21, 1, 0, tzinfo=UTC)
    rows = A.table(
        A.row("ok"),
        A.row("ok", kafka_offset=4, price=3.0),
        A.row("neg", price=-1.0),
        A.row("cur", currency="XXX"),
        A.row("late", t=next_day, event_date=DAY),
        A.row(None),
        A.row(None, price=7.0),
        A.row("noprice", price=None),
        A.row("kind", "teleport"),
        A.row("bot", is_relevant=False),
    )
    frame_ = spark.createDataFrame(rows)
    first_spark = sorted(
        (r["event_id"] or "", r["price"] or 0.0) for r in W.dedupe_day(frame_).collect()
    )
    first_arrow = sorted(
        (r["event_id"] or "", r["price"] or 0.0) for r in C.first_copies(rows).to_pylist()
    )
    assert first_spark == first_arrow
    deduped = C.first_copies(rows)
    spark_totals, spark_failures = W.checked(spark.createDataFrame(deduped), DAY)
    arrow_totals, arrow_failures = C.checked(deduped, DAY)
    assert spark_totals == arrow_totals
    assert sorted(map(str, spark_failures)) == sorted(map(str, arrow_failures))
    assert len(arrow_failures) >= 7  # the rules these rows break, so the comparison says much
