"""The analytics schema's migrations on the real Postgres: applied once, in order, checked by
the apps, safe when two start at once."""

from __future__ import annotations

import subprocess
import sys
import threading
import uuid

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
