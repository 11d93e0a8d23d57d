"""The stream's side outputs, computed in the lake's own pass (``rtap.spark.SideOutputs``):
checked against the generator's own record of what it sent and against Spark's ``groupBy`` with
``hll_sketch_agg``, two computations that share nothing with the observed aggregate."""

from __future__ import annotations

from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal

import pytest
from datasketches import hll_sketch, hll_union
from pyspark.sql import functions as F

from include.analytics import store
from include.events.generator import generate
from spark_apps.transforms import events as tx

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
WINDOW = "1 minute"


@pytest.fixture(scope="module")
def sent():
    return generate(
        4_000,
        seed=11,
        start=NOW - timedelta(minutes=20),
        span_seconds=600.0,
        bad_share=0.05,
        duplicate_share=0.03,
    )


@pytest.fixture(scope="module")
def checked(spark, sent):
    rows = [(p.key, p.value, "events", i % 3, i, None) for i, p in enumerate(sent)]
    kafka = spark.createDataFrame(rows, tx.KAFKA_SCHEMA)
    # Spread over several tasks, so that the partials of different tasks are merged.
    return tx.first_seen(tx.parse(kafka, now=F.lit(NOW)), "10 minutes").repartition(4).cache()


def observed_partials(events):
    observed = tx.observe_partials(events, tx.live_aggregates(), WINDOW)
    tx.compute(observed)
    return {t: tx.observed_partials(observed, t, WINDOW).collect() for t in store.AGGREGATES}


def test_purchases_add_up_to_what_the_generator_sent(checked, sent):
    partials = observed_partials(tx.valid_events(checked))["category_sales_minute"]
    expected: dict[tuple, list] = defaultdict(lambda: [0, 0, Decimal(0)])
    for p in sent:
        if p.kind == "valid" and p.event_type == "purchase":
            minute = datetime.fromtimestamp(p.event_time_ms // 60_000 * 60, UTC)
            e = expected[(minute.replace(tzinfo=None), p.category, p.currency)]
            e[0] += 1
            e[1] += p.units
            e[2] += Decimal(str(p.revenue)).quantize(Decimal("0.01"), ROUND_HALF_UP)
    got = {
        (r.window_start, r.category, r.currency): [r.purchases, r.units, r.revenue]
        for r in partials
    }
    assert len(expected) > 10
    assert got == expected
    assert all(r.window_end - r.window_start == timedelta(minutes=1) for r in partials)
    columns = store.AGGREGATES["category_sales_minute"].partial_columns
    assert tuple(partials[0].asDict()) == columns, "the rows the Postgres upsert takes"


def test_each_partial_is_spark_s_own_group_by(checked):
    events = tx.valid_events(checked)
    observed = observed_partials(events)
    for table, measures in tx.live_aggregates().items():
        agg = store.AGGREGATES[table]
        oracle = (
            events.where(measures.where)
            .groupBy(
                F.window("event_time", WINDOW).start.alias("window_start"),
                *(c.alias(n) for n, c in zip(agg.dimensions, measures.dimensions, strict=True)),
            )
            .agg(
                *(F.sum(c).alias(n) for n, c in zip(agg.sums, measures.sums, strict=True)),
                *(
                    F.hll_sketch_agg(c, store.SKETCH_LG_K).alias(f"{n}_sketch")
                    for n, c in zip(agg.distinct, measures.distinct, strict=True)
                ),
            )
            .collect()
        )
        key = ("window_start", *agg.dimensions)
        theirs = {tuple(r[k] for k in key): r for r in oracle}
        mine = {tuple(r[k] for k in key): r for r in observed[table]}
        assert set(mine) == set(theirs) and len(mine) > 5, table
        for k, r in mine.items():
            assert [r[s] for s in agg.sums] == [theirs[k][s] for s in agg.sums], (table, k)
            for sketch in agg.sketches:
                a = hll_sketch.deserialize(bytes(r[sketch]))
                b = hll_sketch.deserialize(bytes(theirs[k][sketch]))
                union = hll_union(store.SKETCH_LG_K)
                union.update(a)
                union.update(b)
                # The same values hashed the same way: the union counts nothing twice.
                assert a.get_estimate() == b.get_estimate() == union.get_estimate(), (table, k)


def test_dead_records_are_kept_with_their_bytes_up_to_the_bound(checked, monkeypatch):
    expected = tx.dead_letters(checked).collect()
    reasons = Counter(r.reason for r in expected)
    assert len(reasons) > 3 and sum(reasons.values()) > 50

    def held(bound: int):
        monkeypatch.setattr(tx, "DEAD_LETTER_BYTES_HELD", bound)
        observed = tx.observe_dead_letters(checked)
        tx.compute(observed)
        assert tx.observed_records(observed) == checked.count()
        return tx.dead_letters(tx.observed_dead_letters(observed))

    def coordinates(rows):
        return sorted((r.kafka_partition, r.kafka_offset, r.reason) for r in rows)

    everything = held(64 * 1024 * 1024).collect()
    assert coordinates(everything) == coordinates(expected)
    by_offset = {(r.kafka_partition, r.kafka_offset): r for r in expected}
    assert all(
        r.raw_value == by_offset[(r.kafka_partition, r.kafka_offset)].raw_value
        and r.detected_at == by_offset[(r.kafka_partition, r.kafka_offset)].detected_at
        for r in everything
    )

    bound = 2_000
    frame = held(bound)
    some = frame.collect()
    assert coordinates(some) == coordinates(expected), "every dead letter, bytes or not"
    kept = [r for r in some if r.raw_value is not None]
    assert 0 < len(kept) < len(some)
    assert sum(len(r.raw_value) + len(r.raw_key or b"") for r in kept) <= bound
    lost = {(r.kafka_partition, r.kafka_offset) for r in some if r.raw_value is None}
    without = frame.where(tx.without_bytes()).collect()
    assert {(r.kafka_partition, r.kafka_offset) for r in without} == lost, "read again"


def test_an_empty_batch_observes_nothing(spark, checked):
    empty = checked.where(F.lit(False))
    observed = tx.observe_partials(
        tx.valid_events(tx.observe_dead_letters(empty)), tx.live_aggregates(), WINDOW
    )
    tx.compute(observed)
    assert tx.observed_records(observed) == 0
    assert tx.observed_dead_letters(observed).count() == 0
    assert all(tx.observed_partials(observed, t, WINDOW).count() == 0 for t in store.AGGREGATES)
