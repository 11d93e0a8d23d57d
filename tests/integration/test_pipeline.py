"""The whole slice on the real stack: Kafka -> Spark (launched by Airflow's SparkSubmitOperator
through `airflow dags test`) -> Parquet in S3 + aggregates in Postgres.

The lake is read back by Spark *through the file sink's metadata*; the Postgres aggregates are
compared with both the generator's record and a recomputation from the lake.
"""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

from devstack.demo import pg_params
from include import pipeline
from include.analytics import store
from include.events.catalog import build_catalog
from include.events.generator import generate
from include.events.producer import produce
from tests.integration.conftest import airflow_dags_test
from tests.integration.lake_checks import (
    lake_funnel,
    lake_report,
    lake_sales,
    late_rows_dropped,
    postgres_funnel,
    postgres_sales,
    stream_progress,
)

EXPECTED_REASON_PREFIX = {
    "malformed_json": "malformed_json",
    "wrong_type": "wrong_type",
    "missing_field": "missing_field:",
    "unknown_type": "unknown_event_type",
    "negative_price": "out_of_range:price",
    "absurd_timestamp": "absurd_timestamp",
    "oversize": "oversize",
}


def run_stream(ctx, sandbox) -> dict:
    state = airflow_dags_test(ctx, "stream_events", sandbox.stream_conf(ctx.settings.bucket))
    assert state == "success"
    b = ctx.settings.bucket
    return lake_report(
        ctx,
        pipeline.s3a(b, sandbox.lake_prefix),
        pipeline.s3a(b, sandbox.dead_letter_prefix),
        window=pipeline.STREAM_WINDOW,
    )


def test_stream_lands_exactly_the_valid_events_and_aggregates_them(ctx, sandbox):
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    batch1 = generate(
        3_000, seed=101, start=start, bad_share=0.05, irrelevant_share=0.05, duplicate_share=0.03
    )
    r1 = produce(batch1, topic=sandbox.topic, bootstrap_servers=ctx.settings.kafka_bootstrap)
    kinds = Counter(p.kind for p in batch1)
    assert all(kinds[k] > 0 for k in [*EXPECTED_REASON_PREFIX, "irrelevant", "duplicate"])

    conn = store.connect(pg_params(ctx), schema=sandbox.pg_schema)
    store.upsert_products(conn, build_catalog())  # the catalog the stream enriches from
    conn.close()

    report = run_stream(ctx, sandbox)

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
    assert sales == lake_sales(report), "Postgres aggregates equal a recomputation from the lake"
    assert sum(r["purchases"] for r in sales) == r1.purchases
    funnel = postgres_funnel(ctx, sandbox.pg_schema)
    assert funnel == lake_funnel(report), "the funnel equals a recomputation from the lake"
    assert sum(r["events"] for r in funnel) == kinds["valid"]

    # Progress of every batch is in Postgres: offsets read, observed counts, durations.
    progress = stream_progress(ctx, sandbox.pg_schema)
    assert {"lake", "dead_letter", "category_sales", "funnel"} <= set(progress)
    for name in ("lake", "dead_letter", "category_sales", "funnel"):
        assert sum(r["input_rows"] for r in progress[name]) == len(batch1), name
        ends = progress[name][-1]["sources"][0]["endOffset"][sandbox.topic]
        assert {int(k): v for k, v in ends.items()} == r1.by_partition, name
    landed = sum(r["observed"].get("lake", {}).get("landed", 0) for r in progress["lake"])
    irrelevant = sum(r["observed"].get("lake", {}).get("irrelevant", 0) for r in progress["lake"])
    dead = sum(
        r["observed"].get("dead_letter", {}).get("dead_lettered", 0)
        for r in progress["dead_letter"]
    )
    assert (landed, irrelevant, dead) == (report["rows"], kinds["irrelevant"], len(bad))

    # A second run with nothing new changes nothing (idempotent, resumes from checkpoints).
    again = run_stream(ctx, sandbox)
    assert again["rows"] == report["rows"] and postgres_sales(ctx, sandbox.pg_schema) == sales

    # Events two hours late in event time (the watermark is 10 minutes): they land in the
    # lake; the aggregates count them as late instead of reopening closed windows.
    late = generate(400, seed=303, start=start - timedelta(hours=2))
    r_late = produce(late, topic=sandbox.topic, bootstrap_servers=ctx.settings.kafka_bootstrap)
    after_late = run_stream(ctx, sandbox)
    assert after_late["rows"] == r1.valid + r_late.valid
    assert after_late["purchases"] == r1.purchases + r_late.purchases
    assert postgres_sales(ctx, sandbox.pg_schema) == sales, "closed windows are not reopened"
    dropped = late_rows_dropped(ctx, sandbox.pg_schema)
    assert dropped["category_sales"] == dropped["funnel"] == r_late.valid
    assert dropped["lake"] == 0, "nothing late is dropped from the lake"

    def on_time(rows: list[dict]) -> list[dict]:
        return [
            r
            for r in rows
            if r["window_start"] >= (start - timedelta(hours=1)).replace(tzinfo=None).isoformat()
        ]

    # More events later: the lake and the aggregates grow by exactly those.
    batch2 = generate(1_000, seed=202, start=start + timedelta(minutes=1))
    r2 = produce(batch2, topic=sandbox.topic, bootstrap_servers=ctx.settings.kafka_bootstrap)
    final = run_stream(ctx, sandbox)
    assert final["rows"] == r1.valid + r_late.valid + r2.valid
    assert final["purchases"] == r1.purchases + r_late.purchases + r2.purchases
    assert postgres_sales(ctx, sandbox.pg_schema) == on_time(lake_sales(final))
    assert postgres_funnel(ctx, sandbox.pg_schema) == on_time(lake_funnel(final))
