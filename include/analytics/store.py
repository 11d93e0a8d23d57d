"""Tables of the analytics database and the few statements our code runs on them.

The DDL is idempotent (``CREATE ... IF NOT EXISTS``) and applied by whoever needs the tables
first: the stream at start, the producer when it records a run.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from include.events.contract import MONEY_SQL_TYPE
from include.events.producer import RunRecord

DDL = f"""
CREATE TABLE IF NOT EXISTS ingest_runs (
    run_id        text PRIMARY KEY,
    topic         text NOT NULL,
    produced_at   timestamptz NOT NULL DEFAULT now(),
    events        bigint NOT NULL,
    valid         bigint NOT NULL,
    by_kind       jsonb NOT NULL,
    by_partition  jsonb NOT NULL,
    purchases     bigint NOT NULL,
    units         bigint NOT NULL,
    revenue       {MONEY_SQL_TYPE} NOT NULL,
    late          bigint NOT NULL DEFAULT 0,
    id_digest     text NOT NULL
);
ALTER TABLE ingest_runs ADD COLUMN IF NOT EXISTS late bigint NOT NULL DEFAULT 0;
ALTER TABLE ingest_runs ADD COLUMN IF NOT EXISTS offset_ranges jsonb NOT NULL DEFAULT '{{}}';

-- Relevant events per minute and event type (the funnel), upserted by the stream.
CREATE TABLE IF NOT EXISTS funnel_minute (
    window_start  timestamptz NOT NULL,
    window_end    timestamptz NOT NULL,
    event_type    text NOT NULL,
    events        bigint NOT NULL,
    sessions      bigint NOT NULL,
    batch_id      bigint NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (window_start, event_type)
);

-- One row per micro-batch of every streaming query (spark_apps/progress.py).
CREATE TABLE IF NOT EXISTS stream_progress (
    query_id             uuid NOT NULL,
    run_id               uuid NOT NULL,
    query_name           text NOT NULL,
    batch_id             bigint NOT NULL,
    ts                   timestamptz NOT NULL,
    input_rows           bigint NOT NULL,
    input_rows_per_s     double precision NOT NULL,
    processed_rows_per_s double precision NOT NULL,
    batch_duration_ms    bigint NOT NULL,
    watermark            timestamptz,
    late_rows_dropped    bigint NOT NULL,
    state_rows           bigint NOT NULL,
    sources              jsonb NOT NULL,
    observed             jsonb NOT NULL,
    durations            jsonb NOT NULL,
    PRIMARY KEY (run_id, query_name, batch_id)
);
CREATE INDEX IF NOT EXISTS stream_progress_ts ON stream_progress (query_name, ts DESC);

-- The product catalog (include/events/catalog.py), for enrichment and the dashboard.
CREATE TABLE IF NOT EXISTS products (
    product_id    text PRIMARY KEY,
    category      text NOT NULL,
    price         numeric(12, 2) NOT NULL,
    currency      text NOT NULL,
    popularity_rank integer NOT NULL
);

-- Per-minute purchase aggregates by category, upserted by the stream. The key is the window
-- and the category, so a replayed micro-batch rewrites the same rows with the same values.
CREATE TABLE IF NOT EXISTS category_sales_minute (
    window_start  timestamptz NOT NULL,
    window_end    timestamptz NOT NULL,
    category      text NOT NULL,
    purchases     bigint NOT NULL,
    units         bigint NOT NULL,
    revenue       {MONEY_SQL_TYPE} NOT NULL,
    buyers        bigint NOT NULL,
    batch_id      bigint NOT NULL,
    updated_at    timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (window_start, category)
);
"""

CATEGORY_SALES_COLUMNS = (
    "window_start",
    "window_end",
    "category",
    "purchases",
    "units",
    "revenue",
    "buyers",
)
FUNNEL_COLUMNS = ("window_start", "window_end", "event_type", "events", "sessions")

# Aggregate tables the stream upserts: table -> (columns, key columns).
AGGREGATES: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "category_sales_minute": (CATEGORY_SALES_COLUMNS, ("window_start", "category")),
    "funnel_minute": (FUNNEL_COLUMNS, ("window_start", "event_type")),
}


def params_from_connection(conn: Any) -> dict[str, Any]:
    """psycopg2 keyword parameters from an Airflow connection (host, port, login, password,
    schema = database). We use psycopg2 directly: the Postgres hook may hand out psycopg 3."""
    return {
        "host": conn.host,
        "port": conn.port or 5432,
        "user": conn.login,
        "password": conn.password,
        "dbname": conn.schema or "postgres",
    }


def connect(params: Mapping[str, Any], schema: str = "public"):
    """A psycopg2 connection (params: host, port, user, password, dbname) whose tables live in
    ``schema``: tests use their own schema so they never touch the demo's tables."""
    import psycopg2
    from psycopg2 import sql

    if not schema.isidentifier():
        raise ValueError(f"Postgres schema {schema!r} is not a plain identifier")
    conn = psycopg2.connect(connect_timeout=10, options=f"-c search_path={schema}", **params)
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
    conn.commit()
    return conn


def ensure_schema(conn) -> None:
    with conn.cursor() as cur:
        cur.execute(DDL)
    conn.commit()


def record_run(conn, record: RunRecord) -> None:
    ensure_schema(conn)
    with conn.cursor() as cur:
        cur.execute(
            """INSERT INTO ingest_runs (run_id, topic, events, valid, by_kind, by_partition,
                                        purchases, units, revenue, late, id_digest,
                                        offset_ranges)
               VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s, %s)
               ON CONFLICT (run_id) DO NOTHING""",
            (
                record.run_id,
                record.topic,
                record.events,
                record.valid,
                json.dumps(record.by_kind),
                json.dumps(record.by_partition),
                record.purchases,
                record.units,
                record.revenue,
                record.late,
                record.id_digest,
                json.dumps(record.offset_ranges),
            ),
        )
    conn.commit()


def upsert_products(conn, catalog) -> int:
    """Write the catalog (idempotent: keyed by product id)."""
    from psycopg2.extras import execute_values

    ensure_schema(conn)
    rows = [
        (p.product_id, p.category, p.price, "USD", rank)
        for rank, p in enumerate(catalog.products, start=1)
    ]
    with conn.cursor() as cur:
        execute_values(
            cur,
            """INSERT INTO products (product_id, category, price, currency, popularity_rank)
               VALUES %s ON CONFLICT (product_id) DO UPDATE SET category = EXCLUDED.category,
               price = EXCLUDED.price, currency = EXCLUDED.currency,
               popularity_rank = EXCLUDED.popularity_rank""",
            rows,
        )
    conn.commit()
    return len(rows)


PROGRESS_COLUMNS = (
    "query_id",
    "run_id",
    "query_name",
    "batch_id",
    "ts",
    "input_rows",
    "input_rows_per_s",
    "processed_rows_per_s",
    "batch_duration_ms",
    "watermark",
    "late_rows_dropped",
    "state_rows",
    "sources",
    "observed",
    "durations",
)


def record_progress(conn, row: Mapping[str, Any]) -> None:
    """Insert one progress row (a re-reported batch overwrites its row)."""
    cols = ", ".join(PROGRESS_COLUMNS)
    marks = ", ".join(["%s"] * len(PROGRESS_COLUMNS))
    updates = ", ".join(f"{c} = EXCLUDED.{c}" for c in PROGRESS_COLUMNS[4:])
    with conn.cursor() as cur:
        cur.execute(
            f"INSERT INTO stream_progress ({cols}) VALUES ({marks}) "
            f"ON CONFLICT (run_id, query_name, batch_id) DO UPDATE SET {updates}",
            [row[c] for c in PROGRESS_COLUMNS],
        )
    conn.commit()


@dataclass
class UpsertResult:
    upserted: int = 0
    # Rows Postgres refused, each with the first line of its error (the safety net).
    rejected: list[tuple[tuple, str]] = field(default_factory=list)


def _refusal(exc: Exception) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:500]


def upsert_aggregates(conn, table: str, rows: Iterable[tuple], batch_id: int) -> UpsertResult:
    """Upsert rows shaped like ``AGGREGATES[table]`` in one transaction (one micro-batch).

    Keyed by window and dimension: a replayed micro-batch rewrites the same rows with the
    same values (update mode carries each changed key's full aggregate).

    When Postgres refuses the batch for its data (a value the column cannot hold, a NUL in a
    string, a NOT NULL breach), the rows are written one by one, each in a savepoint, and the
    ones it refuses are returned in ``rejected`` instead of failing the batch: no single row can
    stop the stream. Connection and other errors still raise (the batch is retried)."""
    import psycopg2
    from psycopg2 import sql
    from psycopg2.extras import execute_values

    columns, key = AGGREGATES[table]
    values = [(*row, batch_id) for row in rows]
    if not values:
        return UpsertResult()
    names = [*columns, "batch_id"]
    statement = sql.SQL(
        "INSERT INTO {table} ({cols}, updated_at) VALUES %s ON CONFLICT ({key}) DO UPDATE SET "
        "{updates}, updated_at = now()"
    ).format(
        table=sql.Identifier(table),
        cols=sql.SQL(", ").join(map(sql.Identifier, names)),
        key=sql.SQL(", ").join(map(sql.Identifier, key)),
        updates=sql.SQL(", ").join(
            sql.SQL("{c} = EXCLUDED.{c}").format(c=sql.Identifier(c)) for c in names if c not in key
        ),
    )
    template = "(" + ", ".join(["%s"] * len(names)) + ", now())"
    refused = (psycopg2.DataError, psycopg2.IntegrityError, ValueError)
    try:
        with conn.cursor() as cur:
            execute_values(cur, statement.as_string(cur), values, template=template)
        conn.commit()
        return UpsertResult(len(values))
    except refused:
        conn.rollback()
    result = UpsertResult()
    with conn.cursor() as cur:
        text = statement.as_string(cur)
        for value in values:
            cur.execute("SAVEPOINT row")
            try:
                execute_values(cur, text, [value], template=template)
            except refused as exc:
                cur.execute("ROLLBACK TO SAVEPOINT row")
                result.rejected.append((value[:-1], _refusal(exc)))
            else:
                cur.execute("RELEASE SAVEPOINT row")
                result.upserted += 1
    conn.commit()
    return result


def produced_totals(conn, topic: str) -> dict[str, Any]:
    """What was produced to ``topic`` over all recorded runs."""
    ensure_schema(conn)
    with conn.cursor() as cur:
        cur.execute(
            """SELECT count(*), coalesce(sum(events), 0), coalesce(sum(valid), 0),
                      coalesce(sum(purchases), 0), coalesce(sum(units), 0),
                      coalesce(sum(revenue), 0),
                      coalesce(sum(events - valid - coalesce((by_kind->>'duplicate')::bigint, 0)), 0)
               FROM ingest_runs WHERE topic = %s""",
            (topic,),
        )
        runs, events, valid, purchases, units, revenue, invalid = cur.fetchone()
    return {
        "runs": runs,
        "events": int(events),
        "valid": int(valid),
        "invalid": int(invalid),
        "purchases": int(purchases),
        "units": int(units),
        "revenue": float(revenue),
    }


def aggregate_totals(conn) -> dict[str, Any]:
    ensure_schema(conn)
    with conn.cursor() as cur:
        cur.execute(
            """SELECT count(*), coalesce(sum(purchases), 0), coalesce(sum(units), 0),
                      coalesce(sum(revenue), 0), count(DISTINCT category)
               FROM category_sales_minute"""
        )
        rows, purchases, units, revenue, categories = cur.fetchone()
    return {
        "rows": rows,
        "purchases": int(purchases),
        "units": int(units),
        "revenue": float(revenue),
        "categories": categories,
    }
