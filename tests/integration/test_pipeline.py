"""The whole slice on the real stack: Kafka -> Spark (launched by Airflow's SparkSubmitOperator
through `airflow dags test`) -> Parquet in S3 + aggregates in Postgres.

The lake is read back by Spark *through the file sink's metadata*; the Postgres aggregates are
compared with the generator's own record of what it sent (an oracle no transform of ours
touches). Clocks cannot make a valid event disappear: events hours late or minutes early in
event time, records whose Kafka timestamp a fast producer clock put an hour ahead, and a
backlog with one partition 30 minutes ahead of the others all land in the lake and in the
aggregates. One more live aggregate, added through the registry alone
(tests/integration/device_aggregate.py, named by the runs' ``aggregate_modules``), holds the
generator's record too.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta

import pytest
from confluent_kafka import Producer

from include import pipeline
from include.analytics import store
from include.events.catalog import build_catalog
from include.events.generator import EXPECTED_REASON_PREFIX, Produced, generate
from include.events.producer import produce
from tests.integration.conftest import airflow_dags_test
from tests.integration.lake_checks import (
    assert_aggregate_match,
    assert_funnel_match,
    assert_sales_match,
    iso_minute,
    lake_report,
    minute_of,
    postgres_funnel,
    postgres_sales,
    query,
    stream_progress,
)

# A live aggregate added through the registry alone (the module is the whole change).
EXTRA_AGGREGATES = "tests.integration.device_aggregate"


def run_stream(ctx, sandbox, engine: str = "rows") -> dict:
    conf = {
        **sandbox.stream_conf(ctx.settings.bucket),
        "aggregate_modules": EXTRA_AGGREGATES,
        "engine": engine,
    }
    state = airflow_dags_test(ctx, "stream_events", conf)
    assert state == "success"
    b = ctx.settings.bucket
    return lake_report(
        ctx, pipeline.s3a(b, sandbox.lake_prefix), pipeline.s3a(b, sandbox.dead_letter_prefix)
    )


def produce_stamped(
    ctx, topic: str, events: list[Produced], kafka_ts: datetime, partitions: tuple[int, ...] = ()
) -> None:
    """Send ``events`` with a Kafka timestamp (CreateTime) of the producer's choosing, round
    robin over ``partitions`` when given (else by key)."""
    producer = Producer({"bootstrap.servers": ctx.settings.kafka_bootstrap})
    ms = int(kafka_ts.timestamp() * 1000)
    for i, ev in enumerate(events):
        where = {"partition": partitions[i % len(partitions)]} if partitions else {}
        producer.produce(topic, key=ev.key, value=ev.value, timestamp=ms, **where)
    assert producer.flush(60) == 0


@pytest.mark.parametrize("engine", ["rows", "columnar"])
def test_stream_lands_exactly_the_valid_events_and_aggregates_them(ctx, sandbox, engine):
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    batch1 = generate(
        3_000, seed=101, start=start, bad_share=0.05, irrelevant_share=0.05, duplicate_share=0.03
    )
    r1 = produce(batch1, topic=sandbox.topic, bootstrap_servers=ctx.settings.kafka_bootstrap)
    kinds = Counter(p.kind for p in batch1)
    assert all(kinds[k] > 0 for k in [*EXPECTED_REASON_PREFIX, "irrelevant", "duplicate"])

    conn = store.connect(ctx.analytics_db, schema=sandbox.pg_schema)
    store.publish_catalog(conn, build_catalog())  # the catalog the stream enriches from
    conn.close()

    report = run_stream(ctx, sandbox, engine)

    landable = {p.event_id for p in batch1 if p.kind in ("valid", "irrelevant")}
    bad = [p for p in batch1 if p.kind in EXPECTED_REASON_PREFIX]
    assert report["rows"] == len(landable) == r1.valid
    assert report["distinct_ids"] == report["rows"], "no duplicate event_id in the lake"
    with_product = {p.event_id for p in batch1 if p.kind in ("valid", "irrelevant") and p.category}
    assert report["enriched"] == len(with_product), "events with a product carry catalog fields"
    assert report["relevant"] == kinds["valid"], "bots, internal users and heartbeats are flagged"
    assert report["dead_letter_rows"] == len(bad)
    for kind, prefix in EXPECTED_REASON_PREFIX.items():
        got = sum(
            n for reason, n in report["dead_letter_reasons"].items() if reason.startswith(prefix)
        )
        assert got >= kinds[kind], (kind, report["dead_letter_reasons"])
    assert report["purchases"] == r1.purchases and report["units"] == r1.units
    assert abs(report["revenue"] - r1.revenue) < 0.01

    sales = postgres_sales(ctx, sandbox.pg_schema)
    assert_sales_match(sales, batch1)
    assert sum(r["purchases"] for r in sales.values()) == r1.purchases
    funnel = postgres_funnel(ctx, sandbox.pg_schema)
    assert_funnel_match(funnel, batch1)
    assert sum(r["events"] for r in funnel.values()) == kinds["valid"]
    assert_device_sales_match(ctx, sandbox, batch1)

    # Progress of every batch is in Postgres: offsets read, observed counts, durations.
    progress = stream_progress(ctx, sandbox.pg_schema)
    assert set(progress) == {pipeline.STREAM_QUERY}, "one query reads each record once"
    lake = progress[pipeline.STREAM_QUERY]
    assert sum(r["input_rows"] for r in lake) == len(batch1)
    assert store.source_end_offsets(lake[-1]["sources"], sandbox.topic) == r1.by_partition

    def observed(metric: str, key: str) -> int:
        return sum(r["observed"].get(metric, {}).get(key, 0) for r in lake)

    landed, irrelevant = observed("lake", "landed"), observed("lake", "irrelevant")
    dead = observed("dead_letter", "dead_lettered")
    assert (landed, irrelevant, dead) == (report["rows"], kinds["irrelevant"], len(bad))

    # The deduplication's state commits are changelogs of the batch's keys (BATCH_CONF), not a
    # RocksDB snapshot per batch: a .changelog object per state partition and batch. The
    # columnar engine's state (its first_seen log): the whole state after its first batch.
    folder, first = ("state", ".changelog") if engine == "rows" else ("first_seen", "/0.snapshot")
    state = f"{sandbox.checkpoint_prefix}/{pipeline.STREAM_QUERY}/{folder}/"
    listed = ctx.s3_root.client().list_objects_v2(Bucket=ctx.settings.bucket, Prefix=state)
    keys = [o["Key"] for o in listed.get("Contents", [])]
    assert any(k.endswith(first) for k in keys), keys

    # A second run with nothing new changes nothing (idempotent, resumes from checkpoints).
    again = run_stream(ctx, sandbox, engine)
    assert again["rows"] == report["rows"] and postgres_sales(ctx, sandbox.pg_schema) == sales

    # No clock can hide a valid event. Events two hours late and 14 minutes early in event
    # time; records a producer whose clock runs an hour fast stamped (Kafka CreateTime) an
    # hour ahead; a backlog in which partition 0 runs 30 minutes ahead of partitions 1 and 2
    # (Kafka timestamps and event times); then on-time events: every valid one lands in the
    # lake and the aggregates.
    now = datetime.now(UTC).replace(microsecond=0)
    late = generate(400, seed=303, start=start - timedelta(hours=2))
    early = generate(300, seed=304, start=now + timedelta(minutes=13), span_seconds=20)
    fast_clock = generate(300, seed=305, start=start)
    ahead = generate(300, seed=306, start=now - timedelta(minutes=1), span_seconds=30)
    behind = generate(600, seed=307, start=now - timedelta(minutes=31), span_seconds=30)
    on_time = generate(1_000, seed=202, start=start + timedelta(minutes=1))
    broker = ctx.settings.kafka_bootstrap
    rs = [produce(batch, topic=sandbox.topic, bootstrap_servers=broker) for batch in (late, early)]
    produce_stamped(ctx, sandbox.topic, fast_clock, now + timedelta(hours=1))
    produce_stamped(ctx, sandbox.topic, ahead, now, partitions=(0,))
    produce_stamped(ctx, sandbox.topic, behind, now - timedelta(minutes=30), partitions=(1, 2))
    rs.append(produce(on_time, topic=sandbox.topic, bootstrap_servers=broker))
    stamped = [*fast_clock, *ahead, *behind]
    assert {p.kind for p in stamped} == {"valid"}
    sent = [*batch1, *late, *early, *stamped, *on_time]
    valid = {p.event_id for p in sent if p.kind in ("valid", "irrelevant")}
    final = run_stream(ctx, sandbox, engine)
    assert final["rows"] == final["distinct_ids"] == len(valid)
    assert final["purchases"] == sum(
        1 for p in sent if p.kind == "valid" and p.event_type == "purchase"
    )
    assert final["dead_letter_rows"] == len(bad), "nothing valid was dead-lettered"
    assert_sales_match(postgres_sales(ctx, sandbox.pg_schema), sent)
    assert_funnel_match(postgres_funnel(ctx, sandbox.pg_schema), sent)
    assert_device_sales_match(ctx, sandbox, sent)
    assert r1.valid + sum(r.valid for r in rs) + len(stamped) == len(valid)


def assert_device_sales_match(ctx, sandbox, sent: list[Produced]) -> None:
    """The aggregate registered by tests/integration/device_aggregate.py holds, per minute,
    device and currency, what the generator sent as valid purchases (its own revenue; devices
    and buyers read from the bytes it sent)."""
    expected: dict[tuple[str, str, str], dict] = {}
    buyers: dict[tuple[str, str, str], set] = defaultdict(set)
    for p in sent:
        if p.kind == "valid" and p.event_type == "purchase":
            event = json.loads(p.value)
            key = (minute_of(p.event_time_ms), event["device"], p.currency)
            row = expected.setdefault(key, {"orders": 0, "revenue": 0.0})
            row["orders"] += 1
            row["revenue"] += p.revenue
            buyers[key].add(event["user_id"])
    for key, row in expected.items():
        row["buyers"] = len(buyers[key])
    rows = query(
        ctx,
        sandbox.pg_schema,
        "SELECT window_start, device, currency, orders, revenue::float8, buyers "
        "FROM device_sales_minute",
    )
    got = {
        (iso_minute(r[0]), r[1], r[2]): {"orders": r[3], "revenue": r[4], "buyers": r[5]}
        for r in rows
    }
    assert expected and len(got) >= 2, "purchases on several devices and minutes"
    assert_aggregate_match(got, expected, ("orders", "revenue"), "buyers")
