"""The stream's part of ``make status``: is it running, how far behind, why it is not.

Read from the same facts supervision reads (``include/supervision``): the single-writer lease
(driver pid, host, uptime, heartbeat), the operator's control state, each query's checkpoint
(committed offsets) against the broker's log-end offsets, its last batch and idle report, and
the last health verdict. Each part that cannot be read says why instead of failing the command.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from devstack.services import Context
from include import pipeline
from include.analytics import store


def _age(now: datetime, then: datetime | None) -> str:
    if then is None:
        return "never"
    s = max(0, int((now - then).total_seconds()))
    if s < 120:
        return f"{s}s ago"
    if s < 7200:
        return f"{s // 60}m ago"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m ago"


def _uptime(now: datetime, since: datetime) -> str:
    return _age(now, since).removesuffix(" ago")


def _committed(ctx: Context, checkpoint_prefix: str, topic: str) -> dict[str, dict[int, int]]:
    import logging

    from include import connections
    from include.supervision import preflight

    logging.getLogger(preflight.__name__).setLevel(logging.WARNING)  # its per-query info lines
    s3 = ctx.s3(connections.S3).client()  # the stream's own user reads its checkpoints
    positions = preflight.checkpoint_positions(s3, ctx.settings.bucket, checkpoint_prefix, topic)
    return {p.query: p.offsets.get(topic, {}) for p in positions}


def _part(label: str, read: Callable[[], str]) -> str:
    try:
        return f"  {label:<12}{read()}"
    except Exception as exc:  # status must print what it can
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return f"  {label:<12}unavailable: {first[:160]}"


def stream_status(
    ctx: Context,
    checkpoint_prefix: str = pipeline.CHECKPOINT_PREFIX,
    topic: str = pipeline.EVENTS_TOPIC,
    pg_schema: str = "public",
) -> list[str]:
    """Lines describing the stream checkpointed under ``checkpoint_prefix``."""
    from include.supervision import control, health, lease

    root = pipeline.s3a(ctx.settings.bucket, checkpoint_prefix)
    name = lease.lease_name(root)
    lines = [f"stream {root}"]
    conn = store.connect(ctx.analytics_db, schema=pg_schema)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT now()")
            (now,) = cur.fetchone()
        conn.commit()

        def state() -> str:
            c = control.get(conn, name)
            by = f" (by {c.set_by}: {c.reason})" if c.set_by or c.reason else ""
            return c.state + by

        def driver() -> str:
            h = lease.holder(conn, name)
            if h is None:
                return "none holds the lease (the launcher starts one while stream_events is on)"
            gone = " — its process is gone" if h.process_gone() else ""
            return (
                f"pid {h.pid} on {h.host}, up {_uptime(now, h.acquired_at)}, heartbeat "
                f"{h.heartbeat_age_s:.0f}s ago{gone}"
            )

        lines += [_part("control", state), _part("driver", driver)]
        alive = store.last_signs_of_life(conn)
        with conn.cursor() as cur:
            cur.execute(
                "SELECT DISTINCT ON (query_name) query_name, batch_id, input_rows, "
                "ts + batch_duration_ms * interval '1 millisecond' FROM stream_progress "
                "ORDER BY query_name, ts DESC, batch_id DESC"
            )
            last = {q: (b, n, end) for q, b, n, end in cur.fetchall()}
        conn.commit()
        try:
            from confluent_kafka.admin import AdminClient

            from include.supervision.retention import log_end_offsets

            admin = AdminClient({"bootstrap.servers": ctx.settings.kafka_bootstrap})
            ends = log_end_offsets(admin, topic, timeout=10)
            committed = _committed(ctx, checkpoint_prefix, topic)
            lag_error = None
        except Exception as exc:
            ends, committed = {}, {}
            lag_error = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        for q in pipeline.STREAM_QUERIES:

            def describe(q: str = q) -> str:
                batch = last.get(q)
                text = (
                    f"last batch #{batch[0]} ({batch[1]:,} rows) ended {_age(now, batch[2])}"
                    if batch
                    else "no batch yet"
                )
                text += f"; last sign of life {_age(now, alive.get(q))}"
                if lag_error is not None:
                    return text + f"; lag unavailable: {lag_error}"
                lag = health.lag_per_partition(committed.get(q), ends)
                parts = ", ".join(f"p{p}:{n:,}" for p, n in lag.items())
                return text + f"; lag {sum(lag.values()):,} ({parts})"

            lines.append(_part(f"query {q}", describe))

        def verdict() -> str:
            last_check = control.last_health(conn, name)
            if last_check is None:
                return "no check yet (stream_health runs every 5 minutes while it is on)"
            ts, status, reasons = last_check
            return f"{status} {_age(now, ts)}" + (f": {'; '.join(reasons)}" if reasons else "")

        lines.append(_part("health", verdict))
    finally:
        conn.close()
    return lines
