"""Pure transforms of the stream on tiny inline DataFrames (local SparkSession, no Kafka)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from include.events.generator import generate
from spark_apps.transforms import events as tx

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event(**overrides) -> dict:
    base = {
        "event_id": "e1",
        "event_type": "purchase",
        "schema_version": 1,
        "event_time": iso(NOW - timedelta(minutes=1)),
        "ingestion_time": iso(NOW),
        "user_id": "u1",
        "session_id": "s1",
        "product_id": "p1",
        "category": "books",
        "price": 10.5,
        "quantity": 2,
        "currency": "USD",
        "device": "web",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not None}


def kafka_rows(spark, values: list[bytes]):
    rows = [(b"k", v, "events", 0, i, None) for i, v in enumerate(values)]
    return spark.createDataFrame(rows, tx.KAFKA_SCHEMA)


def errors_of(spark, payloads: list) -> list[str | None]:
    values = [p if isinstance(p, bytes) else json.dumps(p).encode() for p in payloads]
    df = tx.with_validation(tx.parse(kafka_rows(spark, values)), now=F.lit(NOW))
    return [r.error for r in df.orderBy("kafka_offset").collect()]


@pytest.mark.parametrize(
    ("payload", "reason"),
    [
        (event(), None),
        (
            event(
                event_type="page_view",
                product_id=None,
                category=None,
                price=None,
                quantity=None,
                currency=None,
            ),
            None,
        ),
        (b'{"event_id": "x", "event_ty', "malformed_json"),
        (event(quantity="lots"), "wrong_type"),
        (event(user_id=None), "missing_field:user_id"),
        (event(price=None), "missing_field:price"),
        (event(event_type="teleport"), "unknown_event_type"),
        (event(price=-1.0), "out_of_range:price"),
        (event(quantity=0), "out_of_range:quantity"),
        (event(currency="XYZ"), "invalid_value:currency"),
        (event(schema_version=99), "unsupported_schema_version"),
        (event(event_time="2999-01-01T00:00:00.000Z"), "absurd_timestamp"),
        (event(event_time="1970-01-01T00:00:00.000Z"), "absurd_timestamp"),
        (event(padding="x" * 9000), "oversize"),
    ],
)
def test_validation_reason(spark, payload, reason):
    assert errors_of(spark, [payload]) == [reason]


def test_generated_kinds_map_to_reasons(spark):
    produced = generate(
        400, seed=5, bad_share=0.3, irrelevant_share=0.1, start=NOW - timedelta(minutes=5)
    )
    errors = errors_of(spark, [p.value for p in produced])
    for p, err in zip(produced, errors, strict=True):
        if p.kind in ("valid", "irrelevant", "duplicate"):
            assert err is None, (p.kind, err)
        else:
            assert err is not None, p.kind


def test_valid_events_flag_relevance_and_keep_lineage(spark):
    payloads = [
        event(),
        event(event_id="e2", traffic_type="bot"),
        event(
            event_id="e3",
            event_type="heartbeat",
            product_id=None,
            category=None,
            price=None,
            quantity=None,
            currency=None,
        ),
        event(event_id="e4", price=-5.0),
    ]
    df = tx.valid_events(
        tx.with_validation(
            tx.parse(kafka_rows(spark, [json.dumps(p).encode() for p in payloads])), now=F.lit(NOW)
        )
    )
    got = df.select("event_id", "is_relevant", "kafka_offset", "event_date").orderBy("event_id")
    expected = spark.createDataFrame(
        [("e1", True, 0, NOW.date()), ("e2", False, 1, NOW.date()), ("e3", False, 2, NOW.date())],
        "event_id string, is_relevant boolean, kafka_offset long, event_date date",
    )
    assertDataFrameEqual(got, expected)


def test_dead_letters_keep_reason_bytes_and_coordinates(spark):
    raw = b"not json"
    df = tx.dead_letters(tx.with_validation(tx.parse(kafka_rows(spark, [raw])), now=F.lit(NOW)))
    row = df.first()
    assert (row.reason, bytes(row.raw_value), row.kafka_topic, row.kafka_offset) == (
        "malformed_json",
        raw,
        "events",
        0,
    )


def test_category_sales_sums_relevant_purchases_per_minute(spark):
    t0 = NOW - timedelta(minutes=3)
    payloads = [
        event(event_id="a", event_time=iso(t0), price=10.0, quantity=1, user_id="u1"),
        event(
            event_id="b",
            event_time=iso(t0 + timedelta(seconds=30)),
            price=5.0,
            quantity=3,
            user_id="u2",
        ),
        event(
            event_id="c",
            event_time=iso(t0 + timedelta(minutes=1)),
            price=7.0,
            quantity=1,
            user_id="u1",
        ),
        event(event_id="d", event_time=iso(t0), price=99.0, quantity=1, traffic_type="internal"),
        event(event_id="e", event_time=iso(t0), event_type="add_to_cart", price=1.0, quantity=1),
        event(event_id="a", event_time=iso(t0), price=10.0, quantity=1, user_id="u1"),  # duplicate
    ]
    parsed = tx.with_validation(
        tx.parse(kafka_rows(spark, [json.dumps(p).encode() for p in payloads])), now=F.lit(NOW)
    )
    sales = tx.category_sales(tx.dedupe(tx.valid_events(parsed), "10 minutes"), "1 minute")
    expected = spark.createDataFrame(
        [
            (t0.replace(tzinfo=None), "books", 2, 4, 25.0, 2),
            ((t0 + timedelta(minutes=1)).replace(tzinfo=None), "books", 1, 1, 7.0, 1),
        ],
        "window_start timestamp, category string, purchases long, units long, revenue double, buyers long",
    )
    assertDataFrameEqual(sales.drop("window_end"), expected)


def test_funnel_counts_relevant_events_per_type_and_minute(spark):
    t0 = NOW - timedelta(minutes=3)
    view = {
        "event_type": "page_view",
        "product_id": None,
        "category": None,
        "price": None,
        "quantity": None,
        "currency": None,
    }
    payloads = [
        event(event_id="a", event_time=iso(t0), session_id="s1", **view),
        event(event_id="b", event_time=iso(t0 + timedelta(seconds=5)), session_id="s2", **view),
        event(event_id="c", event_time=iso(t0 + timedelta(seconds=9)), session_id="s1"),
        event(event_id="d", event_time=iso(t0), session_id="s3", traffic_type="bot", **view),
    ]
    parsed = tx.with_validation(
        tx.parse(kafka_rows(spark, [json.dumps(p).encode() for p in payloads])), now=F.lit(NOW)
    )
    funnel = tx.funnel_counts(tx.dedupe(tx.valid_events(parsed), "10 minutes"), "1 minute")
    expected = spark.createDataFrame(
        [(t0.replace(tzinfo=None), "page_view", 2, 2), (t0.replace(tzinfo=None), "purchase", 1, 1)],
        "window_start timestamp, event_type string, events long, sessions long",
    )
    assertDataFrameEqual(funnel.drop("window_end"), expected)


def test_enrich_adds_catalog_fields_by_product(spark):
    events = spark.createDataFrame(
        [("e1", "p1"), ("e2", None), ("e3", "p9")], "event_id string, product_id string"
    )
    catalog = spark.createDataFrame(
        [("p1", "books", Decimal("12.50"), "USD", 3)],
        "product_id string, category string, price decimal(12,2), currency string, popularity_rank int",
    )
    expected = spark.createDataFrame(
        [("e1", "p1", 12.5, 3), ("e2", None, None, None), ("e3", "p9", None, None)],
        "event_id string, product_id string, list_price double, popularity_rank int",
    )
    assertDataFrameEqual(tx.enrich(events, catalog), expected)
