"""Read-back helpers of the integration tests: what Postgres holds, what the lake holds."""

from __future__ import annotations

from datetime import UTC

from devstack.demo import pg_params
from include.analytics import store


def query(ctx, schema: str, sql: str, args: tuple = ()) -> list[tuple]:
    """Rows of one statement in a test's Postgres schema (its tables created if missing)."""
    conn = store.connect(pg_params(ctx), schema=schema)
    try:
        store.ensure_schema(conn)
        with conn.cursor() as cur:
            cur.execute(sql, args)
            return cur.fetchall()
    finally:
        conn.close()


def postgres_sales(ctx, schema: str) -> list[dict]:
    rows = query(
        ctx,
        schema,
        "SELECT window_start, category, purchases, units, revenue::float8, buyers "
        "FROM category_sales_minute ORDER BY window_start, category",
    )
    return [
        {
            "window_start": r[0].astimezone(UTC).replace(tzinfo=None).isoformat(),
            "category": r[1],
            "purchases": r[2],
            "units": r[3],
            "revenue": round(r[4], 2),
            "buyers": r[5],
        }
        for r in rows
    ]


def stream_progress(ctx, schema: str) -> dict[str, list[dict]]:
    rows = query(
        ctx,
        schema,
        "SELECT query_name, batch_id, input_rows, sources, observed FROM stream_progress "
        "ORDER BY query_name, ts, batch_id",
    )
    out: dict[str, list[dict]] = {}
    for name, batch, n, sources, observed in rows:
        out.setdefault(name, []).append(
            {"batch_id": batch, "input_rows": n, "sources": sources, "observed": observed}
        )
    return out


def late_rows_dropped(ctx, schema: str) -> dict[str, int]:
    """Rows each query dropped as later than its watermark, over all its batches."""
    return dict(
        query(
            ctx,
            schema,
            "SELECT query_name, sum(late_rows_dropped)::bigint FROM stream_progress "
            "GROUP BY query_name",
        )
    )


def lake_sales(report: dict) -> list[dict]:
    return [
        {
            "window_start": r["window_start"],
            "category": r["category"],
            "purchases": r["purchases"],
            "units": r["units"],
            "revenue": round(r["revenue"], 2),
            "buyers": r["buyers"],
        }
        for r in report["category_sales"]
    ]


def postgres_funnel(ctx, schema: str) -> list[dict]:
    rows = query(
        ctx,
        schema,
        "SELECT window_start, event_type, events, sessions FROM funnel_minute "
        "ORDER BY window_start, window_end, event_type",
    )
    return [
        {
            "window_start": r[0].astimezone(UTC).replace(tzinfo=None).isoformat(),
            "event_type": r[1],
            "events": r[2],
            "sessions": r[3],
        }
        for r in rows
    ]


def lake_funnel(report: dict) -> list[dict]:
    return [
        {k: r[k] for k in ("window_start", "event_type", "events", "sessions")}
        for r in report["funnel"]
    ]
