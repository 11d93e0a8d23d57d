"""The analytics schema's migrations on the real Postgres: applied once, in order, checked by
the apps, safe when two start at once."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from devstack.spark import submit_env
from include.analytics import migrations, store
from include.spark.jobs import StreamJob
from tests.conftest import ROOT
from tests.integration.conftest import drop_sandbox

FILES = [m.file for m in migrations.migrations()]


@pytest.fixture
def schema(ctx):
    name = f"it_m_{uuid.uuid4().hex[:10]}"
    yield name
    drop_sandbox(ctx, f"it/m-{name}", name)


def tables(ctx, schema: str) -> set[str]:
    conn = store.connect(ctx.analytics_db, schema=schema)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = %s", (schema,))
            return {r[0] for r in cur.fetchall()}
    finally:
        conn.close()


def test_migrations_apply_once_in_order_and_a_changed_file_is_refused(ctx, schema):
    conn = store.connect(ctx.analytics_db, schema=schema)
    try:
        with pytest.raises(
            migrations.SchemaNotReady,
            match=r"at migration 0 of \d+, no table category_sales_minute.*; apply the",
        ):
            migrations.check(conn, schema)
        assert migrations.migrate(conn, schema) == FILES
        assert migrations.migrate(conn, schema) == [], "a second run applies nothing"
        migrations.check(conn, schema)
        made = tables(ctx, schema)
        for table in ("ingest_runs", "stream_control", "stream_leases", "compaction_runs",
                      "iceberg_tables", "dlq_replays", *store.AGGREGATES):  # fmt: skip
            assert table in made, table

        # A live aggregate declared later (a module of aggregate_modules): checked, then made.
        extra = store.Aggregate(
            f"extra_{schema}", dimension="d", sums=("n",), transform="m:f", comment="test"
        )
        with pytest.raises(migrations.SchemaNotReady, match=f"no table {extra.table}"):
            migrations.check(conn, schema, [*store.AGGREGATES.values(), extra])
        migrations.migrate(conn, schema, [extra])
        assert extra.table in tables(ctx, schema)

        with conn.cursor() as cur:  # as if 0002 had been edited after it was applied
            cur.execute("UPDATE schema_migrations SET checksum = 'edited' WHERE version = 2")
        conn.commit()
        with pytest.raises(migrations.MigrationError, match=f"{FILES[1]} changed after it was"):
            migrations.migrate(conn, schema)
    finally:
        conn.close()


def test_two_migrations_at_once_apply_each_file_once(ctx, schema):
    results, errors = [], []

    def run() -> None:
        conn = store.connect(ctx.analytics_db, schema=schema)
        try:
            results.append(migrations.migrate(conn, schema))
        except Exception as exc:  # reported below
            errors.append(exc)
        finally:
            conn.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert sorted(results, key=len) == [[], FILES], "one applied everything, the other nothing"


def test_the_stream_refuses_a_schema_the_migrations_have_not_made(ctx, schema):
    """Before Spark starts or any data moves: exit 2, the schema and the remedy named."""
    b = ctx.settings.bucket
    job = StreamJob(
        bootstrap_servers=ctx.settings.kafka_bootstrap,
        topic="it.never-read",
        lake_path=f"s3a://{b}/it/m/raw",
        dead_letter_path=f"s3a://{b}/it/m/dead_letter",
        checkpoint_root=f"s3a://{b}/it/m/_checkpoints",
        pg_schema=schema,
        mode="bounded",
    )
    env = {**submit_env(ctx, job), "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, job.application(), *job.to_argv()],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    out = done.stdout + done.stderr
    assert done.returncode == 2, out[-2000:]
    assert f"Postgres schema {schema!r}: at migration 0 of" in out
    assert "make up" in out and "migrate task" in out
    assert tables(ctx, schema) == set(), "it created nothing"


def test_a_sales_table_made_before_currencies_is_adopted_and_keeps_its_rows(ctx, schema):
    """A deployment whose live sales were summed across currencies: its rows are kept under
    ``XXX`` (no currency: readers leave them unconverted and say so) and new rows are keyed by
    currency."""
    sales = store.AGGREGATES["category_sales_minute"]
    conn = store.connect(ctx.analytics_db, schema=schema)
    try:
        with conn.cursor() as cur:
            cur.execute(f"CREATE SCHEMA {schema}")
            cur.execute(f"SET search_path TO {schema}")
            cur.execute(  # the table as the stream made it before
                """CREATE TABLE category_sales_minute (
                       window_start timestamptz NOT NULL, window_end timestamptz NOT NULL,
                       category text NOT NULL, purchases bigint NOT NULL, units bigint NOT NULL,
                       revenue numeric(18, 2) NOT NULL, buyers bigint NOT NULL,
                       buyers_sketch bytea, batch_id bigint NOT NULL,
                       updated_at timestamptz NOT NULL DEFAULT now(),
                       PRIMARY KEY (window_start, category))"""
            )
            cur.execute(
                "INSERT INTO category_sales_minute VALUES ('2026-11-20 10:00Z', "
                "'2026-11-20 10:01Z', 'books', 2, 3, 30.50, 2, NULL, 7)"
            )
        conn.commit()
        migrations.migrate(conn, schema)
        migrations.migrate(conn, schema)  # a second start changes nothing
        migrations.check(conn, schema)
        with conn.cursor() as cur:
            cur.execute(
                "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
                "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'category_sales_minute'::regclass "
                "AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)"
            )
            assert tuple(r[0] for r in cur.fetchall()) == sales.key
            cur.execute("SELECT category, currency, revenue FROM category_sales_minute")
            assert cur.fetchall() == [("books", store.MIXED_CURRENCY, Decimal("30.50"))]
        conn.commit()
        # The same window and category in two currencies: two rows, never one sum.
        partials = [
            {
                "window_start": datetime(2026, 11, 20, 10, 0, tzinfo=UTC),
                "window_end": datetime(2026, 11, 20, 10, 1, tzinfo=UTC),
                "category": "books",
                "currency": currency,
                "purchases": 1,
                "units": 1,
                "revenue": Decimal(amount),
                "buyers_sketch": None,
            }
            for currency, amount in (("EUR", "4.00"), ("USD", "5.00"))
        ]
        store.add_batch(conn, "category_sales_minute", partials, batch_id=8, sink="s")
        with conn.cursor() as cur:
            cur.execute(
                "SELECT currency, revenue FROM category_sales_minute WHERE category = 'books' "
                "ORDER BY currency"
            )
            assert cur.fetchall() == [
                ("EUR", Decimal("4.00")),
                ("USD", Decimal("5.00")),
                (store.MIXED_CURRENCY, Decimal("30.50")),
            ]
    finally:
        conn.close()


def test_a_deployments_rates_file_is_loaded_and_the_demo_never_overwrites_it(ctx, schema, tmp_path):
    """``python -m include.analytics.rates`` loads a CSV into ``fx_rates`` (a bad file writes
    nothing and names its line); a producer run's catalog afterwards fills only the days
    without a rate."""
    from include.events.catalog import build_catalog, usd_value

    conn = store.connect(ctx.analytics_db, schema=schema)
    migrations.migrate(conn, schema)
    conn.close()
    day = datetime.now(UTC).date()
    good, bad = tmp_path / "rates.csv", tmp_path / "bad.csv"
    good.write_text(f"day,currency,quote,rate\n{day},EUR,USD,1.5\n{day},GBP,USD,2.25\n")
    bad.write_text(f"day,currency,quote,rate\n{day},EUR,USD,1.6\n{day},XBT,USD,9\n")
    env = {**ctx.analytics_db.libpq_env(), "PATH": os.environ["PATH"]}

    def load(path) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "include.analytics.rates", str(path), "--schema", schema],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=60,
        )

    done = load(good)
    assert done.returncode == 0 and "2 rate(s) loaded" in done.stdout, done.stderr
    refused = load(bad)
    assert refused.returncode == 2 and "bad.csv:3: currency 'XBT'" in refused.stderr

    conn = store.connect(ctx.analytics_db, schema=schema)
    try:
        store.publish_catalog(conn, build_catalog())
        with conn.cursor() as cur:
            cur.execute(
                "SELECT currency, rate::float8 FROM fx_rates WHERE quote = 'USD' "
                "AND rate_date = %s ORDER BY 1",
                (day,),
            )
            assert cur.fetchall() == [("EUR", 1.5), ("GBP", 2.25)], "the loaded rates stay"
            cur.execute(
                "SELECT rate::float8 FROM fx_rates WHERE quote = 'USD' AND currency = 'EUR' "
                "AND rate_date = %s",
                (day - timedelta(days=1),),
            )
            assert cur.fetchone()[0] == pytest.approx(usd_value("EUR", day - timedelta(days=1)))
    finally:
        conn.close()
