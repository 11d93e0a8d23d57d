"""Reconciliation on the real stack: every produced event is found (lake, dead letters, dropped
duplicate copy), and events the stream has not processed are reported missing, with a failure
of the DAG task and a non-zero result of the command. It reads only the days its runs' events
can be in: a day of the lake outside them is never opened."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from include import pipeline
from include.analytics import store
from include.events.generator import generate
from include.events.producer import produce
from include.supervision.reconcile import read_days
from tests.integration import seed_lake
from tests.integration.conftest import airflow_dags_run, airflow_dags_test
from tests.integration.lake_checks import reader, reconcile


def test_every_event_is_accounted_for(ctx, sandbox):
    bucket, boot = ctx.settings.bucket, ctx.settings.kafka_bootstrap
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    since = (start - timedelta(hours=1)).isoformat()
    batch = generate(
        3_000, seed=41, start=start, bad_share=0.05, irrelevant_share=0.05, duplicate_share=0.03
    )
    r1 = produce(batch, topic=sandbox.topic, bootstrap_servers=boot)
    conn = store.connect(ctx.analytics_db, schema=sandbox.pg_schema)
    store.record_run(conn, r1)
    assert airflow_dags_test(ctx, "stream_events", sandbox.stream_conf(bucket)) == "success"

    def run() -> dict:
        until = (datetime.now(UTC) + timedelta(minutes=1)).isoformat()
        report, table = reconcile(
            ctx,
            since,
            until,
            sandbox.topic,
            pipeline.s3a(bucket, sandbox.lake_prefix),
            pipeline.s3a(bucket, sandbox.dead_letter_prefix),
            sandbox.pg_schema,
        )
        assert r1.run_id in table
        return report

    kinds = Counter(p.kind for p in batch)
    report = run()
    assert report["ok"], report["problems"]
    # The run's duration was recorded, so only the days its events can be in were read.
    today = datetime.now(UTC).date().isoformat()
    lake_days, dead_days = report["read_days"]["lake"], report["read_days"]["dead_letters"]
    assert lake_days[0] < today <= lake_days[1] and dead_days[0] < today <= dead_days[1]
    assert report["produced"] == r1.events
    assert report["landed"] == r1.valid
    assert report["dropped_copies"] == kinds["duplicate"] > 0
    assert report["dead_lettered"] == r1.events - r1.valid - kinds["duplicate"] > 0
    assert report["missing"] == report["duplicated"] == 0

    dag_conf = {
        "topic": sandbox.topic,
        "bucket": bucket,
        "lake_prefix": sandbox.lake_prefix,
        "dead_letter_prefix": sandbox.dead_letter_prefix,
        "pg_schema": sandbox.pg_schema,
        "since": since,
        "until": (datetime.now(UTC) + timedelta(hours=1)).isoformat(),
    }

    # A run the stream has not processed yet: every one of its events is missing.
    r2 = produce(generate(200, seed=42, start=start), topic=sandbox.topic, bootstrap_servers=boot)
    store.record_run(conn, r2)
    conn.close()
    report = run()
    assert not report["ok"] and report["missing"] == r2.events
    assert report["problems"] == {
        r2.run_id: [f"{r2.events} valid event(s) produced but not in the lake"]
    }
    # Through Airflow (the nightly DAG): the run fails, naming what is missing.
    state, output = airflow_dags_run(ctx, "reconcile", dag_conf)
    assert state == "failed" and "not in the lake" in output

    # Once the stream has run, it all adds up again.
    assert airflow_dags_test(ctx, "stream_events", sandbox.stream_conf(bucket)) == "success"
    report = run()
    assert report["ok"] and report["landed"] == r1.valid + r2.valid


def test_only_the_days_a_run_can_reach_are_read(ctx, sandbox):
    """A lake with a recent day and one 40 days old whose files are gone from S3 (their sink
    log still lists them): the reconciliation of a run recorded an hour ago counts the recent
    day's rows at its coordinates and never opens the old day's files; read without bounds
    (a run recorded before runs kept their duration), the same lake fails on them."""
    from spark_apps import reconcile as app

    b = ctx.settings.bucket
    today = datetime.now(UTC).date()
    recent, old = today - timedelta(days=2), today - timedelta(days=40)
    lake = pipeline.s3a(b, sandbox.lake_prefix)
    # The seeder gives each day's events the same coordinates (partition i % 3, offset i).
    seeded = seed_lake.seed(reader(ctx), lake, {recent: 600, old: 600}, 1)
    fs = ctx.s3_root.pyarrow_filesystem()
    fs.delete_dir(f"{b}/{sandbox.lake_prefix}/{pipeline.DAY_PARTITION}={old.isoformat()}")
    now = datetime.now(UTC)
    runs = [{"run_id": "r", "ranges": {str(p): [[0, 599]] for p in range(3)}}]
    days = read_days([(now - timedelta(hours=1), 60.0)], now)
    assert days.lake[0] <= recent and old < days.lake[0]
    dead = pipeline.s3a(b, sandbox.dead_letter_prefix)  # none written

    found = app.measure(reader(ctx), runs, lake, dead, days=days)["r"]
    want = seeded[recent.isoformat()]
    assert (found["lake_rows"], found["lake_ids"]) == (want["rows"], want["distinct_ids"])
    assert found["landed_elsewhere_too"] == found["dead_rows"] == 0
    with pytest.raises(Exception, match=r"(?i)(FileNotFound|No such file|does not exist)"):
        app.measure(reader(ctx), runs, lake, dead, days=None)
