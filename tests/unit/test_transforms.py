"""Pure transforms of the stream on tiny inline DataFrames (local SparkSession, no Kafka)."""

from __future__ import annotations

import json
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from pyspark.sql import functions as F
from pyspark.testing import assertDataFrameEqual

from include.events import contract
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
    df = tx.parse(kafka_rows(spark, values), now=F.lit(NOW))
    return [r.error for r in df.orderBy("kafka_offset").collect()]


def test_parse_runs_the_contracts_validator_with_the_batch_time(spark):
    # Every rule is unit-tested in test_validation.py (and the JVM's agreement with it in
    # test_jvm_contract.py); here: the Spark plumbing (typed columns, the processing time
    # reaching the validator).
    page_view = event(
        event_id="e2",
        event_type="page_view",
        product_id=None,
        category=None,
        price=None,
        quantity=None,
        currency=None,
    )
    payloads = [
        event(),
        page_view,
        b'{"event_id": "x", "event_ty',
        event(event_id="e3", quantity="lots"),
        event(event_id="e4", event_time="2999-01-01T00:00:00.000Z"),
        event(event_id="e5", price=float("nan")),
    ]
    assert errors_of(spark, payloads) == [
        None,
        None,
        "malformed_json",
        "wrong_type:quantity",
        "absurd_timestamp",
        "out_of_range:price",
    ]


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
        tx.parse(kafka_rows(spark, [json.dumps(p).encode() for p in payloads]), now=F.lit(NOW))
    )
    got = df.select("event_id", "is_relevant", "kafka_offset", "event_date").orderBy("event_id")
    expected = spark.createDataFrame(
        [("e1", True, 0, NOW.date()), ("e2", False, 1, NOW.date()), ("e3", False, 2, NOW.date())],
        "event_id string, is_relevant boolean, kafka_offset long, event_date date",
    )
    assertDataFrameEqual(got, expected)


def test_dead_letters_keep_reason_bytes_and_coordinates(spark):
    raw = b"not json"
    df = tx.dead_letters(tx.parse(kafka_rows(spark, [raw]), now=F.lit(NOW)))
    row = df.first()
    assert (row.reason, bytes(row.raw_value), row.kafka_topic, row.kafka_offset) == (
        "malformed_json",
        raw,
        "events",
        0,
    )


def test_dead_letters_keep_their_original_bytes_through_a_batch(spark):
    # The stream's order: the valid records' bytes are dropped before the deduplication, and
    # the records it dead-letters get theirs again from the topic (here: the same Kafka rows).
    first, copy = event(), event(price=99.0)  # the copy conflicts: dead-lettered
    ancient = event(event_id="old", event_time="1970-01-01T00:00:00Z")
    values = [json.dumps(p).encode() for p in (first, copy, ancient)]
    values.insert(1, b"not json")
    kafka = kafka_rows(spark, values)
    checked = tx.first_seen(
        tx.without_raw_bytes_of_valid_events(tx.parse(kafka, now=F.lit(NOW))), "10 minutes"
    )
    rows = checked.orderBy("kafka_offset").collect()
    assert [(r.error, r.raw_value and bytes(r.raw_value)) for r in rows] == [
        (None, None),
        ("malformed_json", values[1]),  # the contract's own dead letter keeps its bytes
        (tx.CONFLICTING_DUPLICATE, None),
        (contract.ABSURD_TIMESTAMP, values[3]),  # on a batch the contract judges the time
    ]
    dead = tx.dead_letters(checked)
    assert [r.kafka_offset for r in dead.where(tx.without_bytes()).collect()] == [2]
    # Other bytes at the contract's own dead letter's offset: they are not taken.
    other = kafka_rows(spark, [b"x", b"other", values[2], b"y"])
    filled = tx.with_original_bytes(dead, other).orderBy("kafka_offset").collect()
    assert [(r.reason, bytes(r.raw_value), bytes(r.raw_key)) for r in filled] == [
        ("malformed_json", values[1], b"k"),
        (tx.CONFLICTING_DUPLICATE, values[2], b"k"),
        (contract.ABSURD_TIMESTAMP, values[3], b"k"),
    ]
    assert tx.with_original_bytes(dead, other).columns == dead.columns


def test_records_the_deduplication_may_judge_out_of_bounds_keep_their_bytes(spark):
    # Event times against each record's Kafka timestamp (NOW): half the allowed skew ahead or
    # older than the allowed age less a day keeps the bytes (a hint: the contract passed all).
    offsets = {
        "on_time": timedelta(0),
        "late_an_hour": -timedelta(hours=1),
        "ten_minutes_ahead": timedelta(minutes=10),
        "six_and_a_half_days_old": -timedelta(days=6, hours=12),
    }
    values = [
        json.dumps(event(event_id=name, event_time=iso(NOW + lead))).encode()
        for name, lead in offsets.items()
    ]
    rows = [(b"k", v, "events", 0, i, NOW) for i, v in enumerate(values)]
    checked = tx.parse(spark.createDataFrame(rows, tx.KAFKA_SCHEMA), now=F.lit(NOW))
    kept = tx.without_raw_bytes_of_valid_events(checked).orderBy("kafka_offset").collect()
    assert [(r.event_id, r.error, r.raw_value is not None) for r in kept] == [
        ("on_time", None, False),
        ("late_an_hour", None, False),
        ("ten_minutes_ahead", None, True),
        ("six_and_a_half_days_old", None, True),
    ]


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
        # Another currency in the same minute and category: kept apart, never added.
        event(event_id="f", event_time=iso(t0), price=4.0, quantity=2, currency="EUR"),
    ]
    parsed = tx.parse(kafka_rows(spark, [json.dumps(p).encode() for p in payloads]), now=F.lit(NOW))
    sales = tx.category_sales(tx.valid_events(parsed).dropDuplicates(["event_id"]), "1 minute")
    t1 = (t0 + timedelta(minutes=1)).replace(tzinfo=None)
    expected = spark.createDataFrame(
        [
            (t0.replace(tzinfo=None), "books", "EUR", 1, 2, Decimal("8.00"), 1),
            (t0.replace(tzinfo=None), "books", "USD", 2, 4, Decimal("25.00"), 2),
            (t1, "books", "USD", 1, 1, Decimal("7.00"), 1),
        ],
        "window_start timestamp, category string, currency string, purchases long, units long, "
        "revenue decimal(28,2), buyers long",
    )
    estimated = with_estimates(sales, ("buyers",)).drop("window_end", "buyers_sketch")
    assertDataFrameEqual(estimated, expected)


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
    parsed = tx.parse(kafka_rows(spark, [json.dumps(p).encode() for p in payloads]), now=F.lit(NOW))
    funnel = tx.funnel_counts(tx.valid_events(parsed).dropDuplicates(["event_id"]), "1 minute")
    expected = spark.createDataFrame(
        [(t0.replace(tzinfo=None), "page_view", 2, 2), (t0.replace(tzinfo=None), "purchase", 1, 1)],
        "window_start timestamp, event_type string, events long, sessions long",
    )
    estimated = with_estimates(funnel, ("sessions",)).drop("window_end", "sessions_sketch")
    assertDataFrameEqual(estimated, expected)


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


def test_sink_rejections_keep_the_row_and_the_error(spark):
    from include.analytics.store import UpsertResult
    from spark_apps.stream_events import sink_rejected_path, sink_rejections

    t = datetime(2026, 12, 1, 12, 0)
    result = UpsertResult(1, [((t, "toys", 1e17), "numeric field overflow")])
    (row,) = sink_rejections(
        spark, "category_sales_minute", 7, ("window_start", "category", "revenue"), result
    ).collect()
    assert (row.reason, row.sink, row.batch_id, row.error) == (
        "sink_rejected:category_sales_minute",
        "category_sales_minute",
        7,
        "numeric field overflow",
    )
    assert json.loads(row.row) == {
        "window_start": "2026-12-01 12:00:00",
        "category": "toys",
        "revenue": 1e17,
    }
    assert sink_rejected_path("s3a://lake/dead_letter/events/", "funnel_minute", 3) == (
        "s3a://lake/dead_letter/events/_sink_rejected/funnel_minute/batch_id=3"
    )


def test_quarantined_offsets_are_dead_lettered_without_parsing(spark):
    values = [json.dumps(event(event_id=f"e{i}")).encode() for i in range(4)]
    live = tx.live_quarantine(spark)
    live.set(json.dumps([{"topic": "events", "partition": 0, "from_offset": 1, "to_offset": 2}]))
    df = tx.parse(kafka_rows(spark, values), now=F.lit(NOW), live=live)
    got = [(r.kafka_offset, r.error, r.event_id) for r in df.orderBy("kafka_offset").collect()]
    assert got == [
        (0, None, "e0"),
        (1, "quarantined", None),
        (2, "quarantined", None),
        (3, None, "e3"),
    ]


def test_the_live_quarantine_reaches_every_job_submitted_after_it_is_set(spark):
    """The stream sets its ranges once per micro-batch, before the batch's jobs: the same plan
    run again after a new ``set`` sees the new ranges (Spark serializes the contract's function
    with each job), and a range holds only its own partition's offsets, bounds included."""
    values = [json.dumps(event(event_id=f"e{i}")).encode() for i in range(6)]
    live = tx.live_quarantine(spark)
    df = tx.parse(kafka_rows(spark, values), now=F.lit(NOW), live=live)

    def quarantined() -> list[int]:
        return sorted(r.kafka_offset for r in df.where("error = 'quarantined'").collect())

    assert quarantined() == [] and live.isEmpty()
    ranges = [
        {"topic": "events", "partition": 0, "from_offset": 4, "to_offset": 4},
        {"topic": "events", "partition": 0, "from_offset": 0, "to_offset": 1},
        {"topic": "events", "partition": 1, "from_offset": 2, "to_offset": 3},
        {"topic": "other", "partition": 0, "from_offset": 2, "to_offset": 3},
    ]
    live.set(json.dumps(ranges))
    assert live.size() == 4
    assert quarantined() == [0, 1, 4]
    live.set(json.dumps(ranges[2:]))
    assert quarantined() == []
    live.set("[]")
    assert live.isEmpty() and quarantined() == []


def with_estimates(partials, distinct: tuple[str, ...]):
    """Partials with each sketch's estimate (``<name>`` from ``<name>_sketch``)."""
    for name in distinct:
        partials = partials.withColumn(name, F.hll_sketch_estimate(f"{name}_sketch"))
    return partials


def test_first_line_of_a_driver_error_names_the_cause():
    from spark_apps.stream_events import first_line

    py4j = "An error occurred while calling o212.load.\n: org.postgresql.util.PSQLException: ERROR: division by zero\n\tat x"
    assert (
        first_line(RuntimeError(py4j))
        == "org.postgresql.util.PSQLException: ERROR: division by zero"
    )
    assert first_line(RuntimeError("")) == "RuntimeError"
    proxy = (
        "An exception was raised by the Python Proxy. Return Message: Traceback (most recent "
        'call last):\n  File "x.py", line 1, in write\n'
        "spark_apps.stream_events.BatchFailed: batch 3: org.postgresql.util.PSQLException: "
        "ERROR: division by zero\n\tat org.apache.spark.Foo"
    )
    assert first_line(RuntimeError(proxy)) == (
        "batch 3: org.postgresql.util.PSQLException: ERROR: division by zero"
    )


def test_a_batch_s_outputs_run_side_by_side_and_a_failure_waits_for_the_others(spark):
    from spark_apps.stream_events import side_by_side

    pool = ThreadPoolExecutor(max_workers=3)
    both_running = threading.Barrier(2, timeout=60)  # fails unless the jobs overlap

    def job(n: int):
        def run():
            both_running.wait()
            return spark.range(n).count()

        return run

    phases: dict[str, float] = {}
    assert side_by_side(pool, {"a": job(3), "b": job(5)}, phases) == {"a": 3, "b": 5}
    assert set(phases) == {"a", "b"}

    failing, finished = threading.Event(), threading.Event()

    def slow():  # starts its Spark job only once the other job is failing
        assert failing.wait(60)
        spark.range(1000).selectExpr("sum(id)").collect()
        finished.set()

    def broken():
        failing.set()
        raise RuntimeError("no such table")

    with pytest.raises(RuntimeError, match="no such table"):
        side_by_side(pool, {"slow": slow, "broken": broken}, {})
    assert finished.is_set(), "the failure was raised while another job still ran"
    pool.shutdown()


def test_the_catalog_snapshot_is_read_again_only_once_it_is_max_age_old(spark):
    """The product catalog a batch enriches from: a local relation (its broadcast needs no
    Spark job) taken from the source, kept until it is ``max_age_s`` old."""
    from spark_apps.stream_events import Snapshot

    source = {"price": 10.0}
    reads: list[float] = []
    now = [100.0]

    def read(session):
        reads.append(now[0])
        # an RDD-backed DataFrame, like a JDBC read: not already a local relation
        return session.createDataFrame(
            spark.sparkContext.parallelize([("p1", source["price"])]),
            "product_id string, price double",
        )

    snapshot = Snapshot(read, max_age_s=60.0, clock=lambda: now[0])
    first = snapshot.get(spark)
    plan = first._jdf.queryExecution().analyzed().getClass().getSimpleName()
    assert plan == "LocalRelation", plan
    assert [tuple(r) for r in first.collect()] == [("p1", 10.0)]

    source["price"] = 12.0  # the source changes: the snapshot keeps its rows for a minute
    now[0] = 159.9
    assert [tuple(r) for r in snapshot.get(spark).collect()] == [("p1", 10.0)]
    assert reads == [100.0]
    now[0] = 160.0
    assert [tuple(r) for r in snapshot.get(spark).collect()] == [("p1", 12.0)]
    assert reads == [100.0, 160.0]


@pytest.mark.parametrize(
    ("trigger", "batches"),
    [("1 second", 300), ("10 seconds", 30), ("7 seconds", 43), ("2 minutes", 10), ("1 hour", 10)],
)
def test_the_state_is_snapshotted_every_five_minutes_of_batches_at_least_every_ten(
    trigger, batches
):
    """A snapshot uploads the whole deduplication state: every STREAM_STATE_SNAPSHOT_INTERVAL_S of
    batches, never more often than Spark's default (10 batches); the rest of the batch
    settings unchanged."""
    from spark_apps.stream_events import BATCH_CONF, batch_conf

    conf = batch_conf(trigger)
    assert conf.pop("spark.sql.streaming.stateStore.minDeltasForSnapshot") == str(batches)
    assert conf == BATCH_CONF
