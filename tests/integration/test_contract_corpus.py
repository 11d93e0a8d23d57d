"""No record can stop or poison the pipeline, on the real stack.

The named bad-input corpus (tests/bad_inputs.py: every class of issue 16's table and more,
poison prices such as 1e16, Infinity and NaN among them) goes into a stream launched and
supervised by Airflow (`airflow dags test stream_events`, continuous) between valid traffic:
every record is accounted for by reason, the driver never restarts, the aggregates hold no
NaN/Infinity and equal the generator's own record plus the corpus' valid purchases, and the
valid events sent after the corpus land. On the same running stream an operator quarantines an
offset range through `stream_control`: the recorded run that fills it is dead-lettered there as
`quarantined`, and reconcile accounts for every event of the run.
"""

from __future__ import annotations

import json
import os
import signal
from collections import Counter
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from confluent_kafka import Producer
from pyspark.sql import functions as F

from include import pipeline
from include.analytics import store
from include.events.contract import CONFLICTING_DUPLICATE
from include.events.generator import generate
from include.events.producer import produce, producer_config
from spark_apps.file_sinks import read_sink
from spark_apps.transforms.events import REREAD_REASONS
from tests.bad_inputs import DROPPED, cases, duplicate_cases
from tests.integration.conftest import airflow_dags_run, airflow_dags_test, run_submit
from tests.integration.lake_checks import (
    lake_report,
    latest_ends,
    lease_holder,
    query,
    reader,
    reconcile_sandbox,
    wait_for,
)

QUERIES = pipeline.STREAM_QUERIES


def every_query_read(ctx, sandbox, total: int) -> bool:
    """True when the latest batch of each of the stream's queries ends at ``total`` offsets."""
    ends = {name: sum(e.values()) for name, e in latest_ends(ctx, sandbox).items()}
    return all(ends.get(q) == total for q in QUERIES)


def send_corpus(ctx, topic: str, corpus) -> None:
    producer = Producer(producer_config(ctx.settings.kafka_bootstrap))
    errors: list[str] = []
    for case in corpus:
        producer.produce(
            topic,
            key=b"u-corpus",
            value=case.value,
            on_delivery=lambda err, _m: errors.append(str(err)) if err else None,
        )
    assert producer.flush(60) == 0 and not errors, errors


def test_bad_inputs_never_stop_the_supervised_stream(ctx, sandbox):
    bucket, boot = ctx.settings.bucket, ctx.settings.kafka_bootstrap
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=3)
    conn = store.connect(ctx.analytics_db, schema=sandbox.pg_schema)
    warm = produce(generate(500, seed=61, start=start), topic=sandbox.topic, bootstrap_servers=boot)
    launcher = sandbox.launch_supervised(ctx, f"launcher-corpus-{sandbox.id}.log")
    try:
        driver = wait_for(lambda: lease_holder(ctx, sandbox), 300, "the driver", launcher)
        wait_for(lambda: every_query_read(ctx, sandbox, warm.events), 300, "warm-up", launcher)

        corpus = cases(datetime.now(UTC), prefix=sandbox.id)
        versions, later_versions = duplicate_cases(datetime.now(UTC), prefix=sandbox.id)
        send_corpus(ctx, sandbox.topic, corpus + versions)
        after = produce(
            generate(500, seed=62, start=start + timedelta(minutes=1)),
            topic=sandbox.topic,
            bootstrap_servers=boot,
        )
        total = warm.events + len(corpus) + len(versions) + after.events
        wait_for(lambda: every_query_read(ctx, sandbox, total), 300, "the corpus", launcher)
        # Other versions of a corpus event, in a later batch (the stream's state decides).
        send_corpus(ctx, sandbox.topic, later_versions)
        total += len(later_versions)
        wait_for(lambda: every_query_read(ctx, sandbox, total), 300, "the versions", launcher)
        corpus += versions + later_versions
        sales = query(
            ctx,
            sandbox.pg_schema,
            "SELECT sum(purchases), sum(units), sum(revenue)::float8, count(*) FILTER "
            "(WHERE revenue::text IN ('NaN', 'Infinity', '-Infinity')) FROM category_sales_minute",
        )[0]

        # The operator's way out, on the running stream: a range of partition 0 that has not
        # arrived yet is quarantined; a recorded run then fills it.
        end0 = partition_end(ctx, sandbox.topic, 0)
        first, last = end0 + 10, end0 + 39
        quarantine = sandbox.supervision_conf(
            bucket,
            action="quarantine",
            topic=sandbox.topic,
            partition=0,
            from_offset=first,
            to_offset=last,
            reason="poison record found in partition 0",
        )
        assert airflow_dags_test(ctx, "stream_control", quarantine) == "success"
        overlapping = {**quarantine, "from_offset": last, "to_offset": last + 5}
        state, output = airflow_dags_run(ctx, "stream_control", overlapping)
        assert state == "failed" and "overlap quarantine" in output
        run = produce(
            generate(600, seed=63, start=start, duplicate_share=0.02),
            topic=sandbox.topic,
            bootstrap_servers=boot,
        )
        store.record_run(conn, run)
        assert run.offset_ranges[0][0][0] == end0 and run.offset_ranges[0][0][1] > last
        total += run.events
        wait_for(lambda: every_query_read(ctx, sandbox, total), 300, "the recorded run", launcher)
        assert lease_holder(ctx, sandbox).pid == driver.pid, "the driver was never replaced"

        stop = sandbox.supervision_conf(bucket, action="stop", reason="corpus done")
        assert airflow_dags_test(ctx, "stream_control", stop) == "success"
        assert launcher.wait(180) == 0
    finally:
        conn.close()
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait(30)

    runs = query(ctx, sandbox.pg_schema, "SELECT pid, exit_code FROM stream_runs")
    assert runs == [(driver.pid, 0)], "one driver, never restarted, ended cleanly"
    conflicts = query(
        ctx,
        sandbox.pg_schema,
        "SELECT sum((observed -> 'dead_letter' ->> 'conflicting_duplicates')::int) "
        "FROM stream_progress",
    )[0][0]
    assert conflicts == sum(c.reason == CONFLICTING_DUPLICATE for c in corpus), "the metric"
    assert query(
        ctx,
        sandbox.pg_schema,
        "SELECT partition, from_offset, to_offset, set_by <> '' FROM stream_quarantine",
    ) == [(0, first, last, True)]

    # The aggregates after the corpus: no NaN or Infinity, and the generator's purchases plus
    # the corpus' valid ones (priced as the cases say), computed without the stream's code.
    valid_cases = [c for c in corpus if c.reason is None]
    lines = [json.loads(c.value) for c in valid_cases]
    purchases, units, revenue, not_finite = sales
    assert not_finite == 0
    assert purchases == warm.purchases + after.purchases + len(lines)
    assert units == warm.units + after.units + sum(int(e["quantity"]) for e in lines)
    expected = warm.revenue + after.revenue + sum(e["price"] * e["quantity"] for e in lines)
    assert abs(revenue - expected) < 1.0, (revenue, expected)

    # Every record accounted for: each bad one dead-lettered by its reason, the quarantined
    # range as `quarantined`, and reconcile accounts for every event of the recorded run.
    report = lake_report(
        ctx,
        pipeline.s3a(bucket, sandbox.lake_prefix),
        pipeline.s3a(bucket, sandbox.dead_letter_prefix),
    )
    expected_reasons = Counter(c.reason for c in corpus if c.reason not in (None, DROPPED))
    expected_reasons["quarantined"] = last - first + 1
    assert Counter(report["dead_letter_reasons"]) == expected_reasons
    # The deduplication's dead letters keep the bytes that were sent, though the stream drops
    # a valid record's bytes before the deduplication (they are read again from the topic).
    judged = read_sink(reader(ctx), pipeline.s3a(bucket, sandbox.dead_letter_prefix)).where(
        F.col("reason").isin(*REREAD_REASONS)
    )
    assert Counter(
        (r.reason, bytes(r.raw_value)) for r in judged.select("reason", "raw_value").collect()
    ) == Counter((c.reason, c.value) for c in corpus if c.reason in REREAD_REASONS)
    accounted = reconcile_sandbox(ctx, sandbox, start)
    assert accounted["ok"], accounted["problems"]
    assert accounted["produced"] == run.events
    assert accounted["quarantined"] == last - first + 1
    assert accounted["missing"] == accounted["duplicated"] == 0
    assert report["rows"] == report["distinct_ids"]
    assert report["rows"] == warm.valid + len(valid_cases) + after.valid + accounted["landed"]


def partition_end(ctx, topic: str, partition: int) -> int:
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient, OffsetSpec

    admin = AdminClient({"bootstrap.servers": ctx.settings.kafka_bootstrap})
    tp = TopicPartition(topic, partition)
    return admin.list_offsets({tp: OffsetSpec.latest()})[tp].result(30).offset


def test_postgres_refusals_are_set_aside_and_the_batch_completes(ctx, sandbox):
    """The aggregate sinks' safety net on the real Postgres: a row the table cannot hold (an
    overflowing revenue, a NUL in a text key) is returned as rejected with its error, and
    every other row of the batch is upserted."""
    conn = store.connect(ctx.analytics_db, schema=sandbox.pg_schema)
    t = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    good = (t, t + timedelta(minutes=1), "books", "USD", 2, 3, 30.0, 2)
    rows = [
        good,
        (t, t + timedelta(minutes=1), "toys", "USD", 1, 1, 1e17, 1),  # beyond numeric(18, 2)
        (t, t + timedelta(minutes=1), "bad\x00", "EUR", 1, 1, 1.0, 1),  # NUL: text refuses
        (t, t + timedelta(minutes=1), "games", "GBP", 1, 2, 5.0, 1),
    ]
    result = store.upsert_aggregates(conn, "category_sales_minute", rows, batch_id=7)
    assert result.upserted == 2
    assert [r[2] for r, _ in result.rejected] == ["toys", "bad\x00"]
    assert "numeric field overflow" in result.rejected[0][1]
    with conn.cursor() as cur:
        cur.execute(
            "SELECT category, revenue::float8, batch_id FROM category_sales_minute ORDER BY 1"
        )
        assert cur.fetchall() == [("books", 30.0, 7), ("games", 5.0, 7)]
    conn.close()


def test_a_batch_is_added_once_per_stream(ctx, sandbox):
    """The live aggregates add each batch's partials: a replayed batch (the same id, the same
    stream) is skipped, the next one adds up, another stream's batch ids are its own, and a
    writer that lost the stream's lease is fenced out."""
    from datasketches import hll_sketch, tgt_hll_type

    def partial(category: str, users: list[str], naive: bool = False) -> dict:
        sketch = hll_sketch(store.SKETCH_LG_K, tgt_hll_type.HLL_4)
        for u in users:
            sketch.update(u)
        # Spark's collect() gives naive local datetimes: the same instant, matched all the same.
        start = t.astimezone().replace(tzinfo=None) if naive else t
        return {
            "window_start": start,
            "window_end": start + timedelta(minutes=1),
            "category": category,
            "currency": "EUR",
            "purchases": len(users),
            "units": len(users),
            "revenue": Decimal("2.50") * len(users),
            "buyers_sketch": sketch.serialize_compact(),
        }

    conn = store.connect(ctx.analytics_db, schema=sandbox.pg_schema)
    t = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
    table = "category_sales_minute"
    first = [partial("books", ["u1", "u2"]), partial("toys", ["u3"])]
    assert store.add_batch(conn, table, first, 0, "stream A").upserted == 2
    assert store.add_batch(conn, table, first, 0, "stream A") is None, "a replay is skipped"
    assert store.add_batch(conn, table, [partial("books", ["u2", "u4"], naive=True)], 1, "stream A")
    assert store.add_batch(conn, table, [partial("books", ["u5"])], 0, "stream B")
    with conn.cursor() as cur:
        cur.execute(f"SELECT category, purchases, revenue, buyers FROM {table} ORDER BY 1")
        assert cur.fetchall() == [
            ("books", 5, Decimal("12.50"), 4),
            ("toys", 1, Decimal("2.50"), 1),
        ]
    conn.close()


def test_fuzzed_valid_events_fit_postgres(ctx, sandbox):
    """Every event the validator passes (Hypothesis-generated) is stored by Postgres in the
    contract's column types, with its worst-case money sum in the aggregates' money type."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from include.events import contract, validation
    from tests.bad_inputs import purchase

    pg_types = {
        "string": "text",
        "long": "bigint",
        "double": "double precision",
        "timestamp": "timestamptz",
    }
    conn = store.connect(ctx.analytics_db, schema=sandbox.pg_schema)
    columns = ", ".join(f"{f.name} {pg_types[f.type]}" for f in contract.FIELDS)
    with conn.cursor() as cur:
        cur.execute(f"CREATE TABLE fuzz_events ({columns}, worst {contract.MONEY_SQL_TYPE})")
    conn.commit()
    now = datetime.now(UTC)
    now_us = int(now.timestamp() * 1_000_000)
    text = st.text(min_size=1, max_size=contract.MAX_ID_LENGTH)
    stored = []

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        user=text,
        category=text,
        price=st.floats(allow_nan=True, allow_infinity=True),
        quantity=st.integers(min_value=-5, max_value=2 * contract.MAX_QUANTITY),
    )
    def check(user, category, price, quantity):
        e = purchase(now, user_id=user, category=category, price=price, quantity=quantity)
        event, reason = validation.check(json.dumps(e, allow_nan=True).encode(), now_us)
        if reason is not None:
            return
        row = [event[f.name] for f in contract.FIELDS]
        for i, f in enumerate(contract.FIELDS):
            if f.type == "timestamp":
                row[i] = datetime.fromtimestamp(row[i] / 1_000_000, UTC)
        worst = round(event["price"] * event["quantity"], 2) * contract.MONEY_HEADROOM_LINES
        with conn.cursor() as cur:
            cur.execute(
                f"INSERT INTO fuzz_events VALUES ({', '.join(['%s'] * (len(row) + 1))})",
                [*row, worst],
            )
        conn.commit()
        stored.append(event["event_id"])

    check()
    conn.close()
    assert stored, "some generated events were valid and stored"


def test_a_failed_query_is_recorded_in_stream_runs(ctx, sandbox):
    """A query that fails mid-run (here: reading the product catalog fails in a batch) ends the
    driver with exit code 1, and stream_runs holds the end time, the code and the exception's
    first informative line."""
    produce(
        generate(50, seed=64), topic=sandbox.topic, bootstrap_servers=ctx.settings.kafka_bootstrap
    )
    conn = store.connect(ctx.analytics_db, schema=sandbox.pg_schema)
    with conn.cursor() as cur:
        cur.execute("DROP TABLE products")  # the migrations' catalog, replaced by a failing view
        cur.execute(
            "CREATE VIEW products AS SELECT 'p'::text AS product_id, 'c'::text AS category, "
            # random() is volatile: the error comes when a batch reads rows, not at planning.
            "(1 / (random() * 0)::int)::numeric AS price, 'USD'::text AS currency, "
            "1 AS popularity_rank"
        )
    conn.commit()
    conn.close()
    job = sandbox.stream_job(ctx, mode="bounded")
    done = run_submit(ctx, job)
    assert done.returncode == 1, done.stdout[-2000:] + done.stderr[-2000:]
    ((code, ended, reason),) = query(
        ctx, sandbox.pg_schema, "SELECT exit_code, ended_at, exit_reason FROM stream_runs"
    )
    assert code == 1 and ended is not None
    assert reason.startswith("query ") and "failed" in reason, reason
    assert "division by zero" in reason, reason
    assert "\n" not in reason and len(reason) < 2000
