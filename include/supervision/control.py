"""The stream's control and history tables in Postgres, and what the driver and DAGs do with them.

* ``stream_control`` — per lease name: ``running``, ``stopped`` (an operator stopped it) or
  ``halted`` (supervision gave up: crash loop), who set it and why, and a pending restart
  request. The launch DAG's gate waits while it is not ``running``; the driver polls it and
  stops gracefully (between batches) when asked.
* ``stream_runs`` — one row per driver start: host, pid, start, end, exit; restarts are counted
  from here.
* ``stream_health`` — every health check's status, reasons and figures.
* ``stream_restarts`` — every restart supervision did (or refused, in a crash loop), every
  launch the preflight refused (``launch_refused``: a retention gap, a held lease, ...), and
  every retention gap an operator accepted (``gap_accepted``: who, why, which records).
* ``stream_accepted_gaps`` — the same accepted gaps as offset ranges, which reconcile reads to
  count a run's records deleted there in their own column instead of as missing.
* ``stream_quarantine`` — offset ranges an operator quarantined: the stream dead-letters their
  records with reason ``quarantined`` instead of processing them (re-read every micro-batch,
  so a batch that failed on a poison record succeeds on its retry), and reconcile counts them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

RUNNING, STOPPED, HALTED = "running", "stopped", "halted"

# stream_restarts action of a retention gap accepted at a launch (the records it skips).
GAP_ACCEPTED = "gap_accepted"

QUARANTINE_TABLE = "stream_quarantine"
ACCEPTED_GAPS_TABLE = "stream_accepted_gaps"


class QuarantineRefused(ValueError):
    """A quarantine request that names no valid range, or overlaps one already recorded."""


@dataclass(frozen=True)
class Control:
    state: str
    reason: str
    set_by: str
    restart_requested_at: datetime | None
    updated_at: datetime | None


def get(conn, name: str) -> Control:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT state, reason, set_by, restart_requested_at, updated_at "
            "FROM stream_control WHERE name = %s",
            (name,),
        )
        row = cur.fetchone()
    conn.commit()
    return Control(*row) if row else Control(RUNNING, "", "", None, None)


def set_state(conn, name: str, state: str, reason: str, set_by: str, restart: bool = False) -> None:
    if state not in (RUNNING, STOPPED, HALTED):
        raise ValueError(f"unknown stream state {state!r}")
    with conn.cursor() as cur:
        cur.execute(
            """
            INSERT INTO stream_control AS c (name, state, reason, set_by, restart_requested_at)
            VALUES (%(name)s, %(state)s, %(reason)s, %(by)s, CASE WHEN %(restart)s THEN now() END)
            ON CONFLICT (name) DO UPDATE SET state = EXCLUDED.state, reason = EXCLUDED.reason,
                set_by = EXCLUDED.set_by, updated_at = now(),
                restart_requested_at = COALESCE(EXCLUDED.restart_requested_at,
                                                c.restart_requested_at)
            """,
            {"name": name, "state": state, "reason": reason, "by": set_by, "restart": restart},
        )
    conn.commit()


def stop_reason(conn, name: str, started_at: datetime) -> str | None:
    """Why a driver that started at ``started_at`` should stop now, or None."""
    c = get(conn, name)
    if c.state != RUNNING:
        return f"stream {c.state} by {c.set_by or 'supervision'}: {c.reason}"
    if c.restart_requested_at is not None and c.restart_requested_at > started_at:
        return f"restart requested by {c.set_by or 'supervision'}: {c.reason}"
    return None


def record_start(conn, name: str, owner: str, host: str, pid: int) -> datetime:
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO stream_runs (owner, name, host, pid) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (owner) DO NOTHING RETURNING started_at",
            (owner, name, host, pid),
        )
        row = cur.fetchone()
        if row is None:
            cur.execute("SELECT started_at FROM stream_runs WHERE owner = %s", (owner,))
            row = cur.fetchone()
    conn.commit()
    return row[0]


def record_end(conn, owner: str, exit_code: int, reason: str) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE stream_runs SET ended_at = now(), exit_code = %s, exit_reason = %s "
            "WHERE owner = %s",
            (exit_code, reason[:2000], owner),
        )
    conn.commit()


def failures_within(
    conn,
    name: str,
    minutes: float,
    exclude_owner: str | None = None,
    after: datetime | None = None,
) -> int:
    """Driver runs started within the window (and after ``after``: an operator's last
    decision) that crashed or failed: no clean end recorded (killed) or a non-zero exit.
    ``exclude_owner``: the driver running now."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM stream_runs WHERE name = %s "
            "AND started_at > greatest(now() - make_interval(secs => %s), "
            "coalesce(%s, '-infinity'::timestamptz)) "
            "AND (exit_code IS NULL OR exit_code <> 0) AND owner IS DISTINCT FROM %s",
            (name, minutes * 60, after, exclude_owner),
        )
        n = cur.fetchone()[0]
    conn.commit()
    return int(n)


def request_gap_acceptance(conn, name: str, reason: str, set_by: str) -> None:
    """An operator accepts the next retention gap the launch guard finds (one-shot) and resumes
    a stream that supervision halted."""
    set_state(conn, name, RUNNING, reason, set_by)
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE stream_control SET accept_gap_requested_at = now() WHERE name = %s", (name,)
        )
    conn.commit()


def take_gap_acceptance(conn, name: str) -> str | None:
    """Consume a pending acceptance; returns who accepted and why, or None."""
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE stream_control SET accept_gap_requested_at = NULL "
            "WHERE name = %s AND accept_gap_requested_at IS NOT NULL RETURNING set_by, reason",
            (name,),
        )
        row = cur.fetchone()
    conn.commit()
    return f"{row[0]} ({row[1]})" if row else None


# stream_restarts actions of supervision's dependency probe: a dependency (Kafka, S3) did not
# answer when the crash-loop rule would have halted the stream; it answered again.
WAITING_DEPENDENCY, DEPENDENCIES_BACK = "waiting_dependency", "dependencies_back"


def last_dependency_event(conn, name: str) -> tuple[str, datetime] | None:
    """The newest ``waiting_dependency`` / ``dependencies_back`` row: (action, ts)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT action, ts FROM stream_restarts WHERE name = %s AND action IN (%s, %s) "
            "ORDER BY ts DESC, id DESC LIMIT 1",
            (name, WAITING_DEPENDENCY, DEPENDENCIES_BACK),
        )
        row = cur.fetchone()
    conn.commit()
    return (row[0], row[1]) if row else None


def refusals_within(conn, name: str, minutes: float, after: datetime | None = None) -> int:
    """Launches the preflight refused within the window and after ``after``
    (``stream_restarts``)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT count(*) FROM stream_restarts WHERE name = %s AND action = 'launch_refused' "
            "AND ts > greatest(now() - make_interval(secs => %s), "
            "coalesce(%s, '-infinity'::timestamptz))",
            (name, minutes * 60, after),
        )
        n = cur.fetchone()[0]
    conn.commit()
    return int(n)


def last_health(conn, name: str) -> tuple[datetime, str, list[str]] | None:
    """The newest health verdict of the stream: (ts, status, reasons), or None."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT ts, status, reasons FROM stream_health WHERE name = %s "
            "ORDER BY ts DESC LIMIT 1",
            (name,),
        )
        row = cur.fetchone()
    conn.commit()
    return None if row is None else (row[0], row[1], list(row[2] or []))


def record_health(conn, name: str, report: dict[str, Any]) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "INSERT INTO stream_health (name, status, reasons, metrics) VALUES (%s, %s, %s, %s)",
            (name, report["status"], json.dumps(report["reasons"]), json.dumps(report["metrics"])),
        )
    conn.commit()


def record_restart(
    conn, name: str, pid: int | None, host: str | None, action: str, reason: str
) -> None:
    with conn.cursor() as cur:
        _insert_restart(cur, name, pid, host, action, reason)
    conn.commit()


def _insert_restart(
    cur, name: str, pid: int | None, host: str | None, action: str, reason: str
) -> None:
    cur.execute(
        "INSERT INTO stream_restarts (name, pid, host, action, reason) VALUES (%s, %s, %s, %s, %s)",
        (name, pid, host, action, reason[:2000]),
    )


def record_accepted_gap(
    conn,
    name: str,
    lake_path: str,
    topic: str,
    partition: int,
    from_offset: int,
    to_offset: int,
    accepted_by: str,
    audit: str,
) -> None:
    """Record a retention gap an operator accepted: the offsets ``from_offset`` to
    ``to_offset`` (inclusive) of ``topic``/``partition``, which the stream writing
    ``lake_path`` skips, in ``stream_accepted_gaps`` (what reconcile reads) and ``audit`` in
    ``stream_restarts`` (action ``gap_accepted``), in one transaction."""
    with conn.cursor() as cur:
        cur.execute(
            f"INSERT INTO {ACCEPTED_GAPS_TABLE} "
            "(name, topic, lake_path, partition, from_offset, to_offset, accepted_by) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s)",
            (name, topic, lake_path.rstrip("/"), partition, from_offset, to_offset, accepted_by),
        )
        _insert_restart(cur, name, None, None, GAP_ACCEPTED, audit)
    conn.commit()


def accepted_gaps(conn, topic: str, lake_path: str) -> dict[int, list[tuple[int, int]]]:
    """The accepted retention gaps of the stream that reads ``topic`` into ``lake_path``:
    per partition, the (first, last) offsets deleted unread. A lake path matches with or
    without a trailing ``/`` (the DAGs' templates and ``pipeline.s3a`` may differ in it)."""
    with conn.cursor() as cur:
        cur.execute(
            f"SELECT partition, from_offset, to_offset FROM {ACCEPTED_GAPS_TABLE} "
            "WHERE topic = %s AND lake_path = %s ORDER BY partition, from_offset",
            (topic, lake_path.rstrip("/")),
        )
        rows = cur.fetchall()
    gaps: dict[int, list[tuple[int, int]]] = {}
    for partition, lo, hi in rows:
        gaps.setdefault(int(partition), []).append((int(lo), int(hi)))
    return gaps


def quarantined_ranges(conn) -> list[dict[str, Any]]:
    """Every quarantined offset range (``topic``, ``partition``, ``from_offset``, ``to_offset``,
    inclusive): the stream reads them at the start of each micro-batch and hands them to its
    contract operator (``rtap.spark.Quarantine``). Ends its read-only transaction."""
    with conn.cursor() as cur:
        cur.execute(f"SELECT topic, partition, from_offset, to_offset FROM {QUARANTINE_TABLE}")
        rows = cur.fetchall()
    conn.rollback()
    return [
        {"topic": t, "partition": int(p), "from_offset": int(lo), "to_offset": int(hi)}
        for t, p, lo, hi in rows
    ]


def quarantine(
    conn, topic: str, partition: int, from_offset: int, to_offset: int, reason: str, set_by: str
) -> int:
    """Record an operator's quarantine of ``topic``/``partition`` offsets ``from_offset`` to
    ``to_offset`` (inclusive); returns its id. Ranges of one partition never overlap (the
    stream's lookup relies on it): an overlapping request is refused, naming the range it
    hits."""
    if partition < 0 or from_offset < 0 or to_offset < from_offset:
        raise QuarantineRefused(
            f"quarantine of {topic}/{partition} offsets {from_offset}..{to_offset}: params "
            "`partition` and `from_offset` must be >= 0 and `to_offset` >= `from_offset`"
        )
    if not reason.strip():
        raise QuarantineRefused("quarantine needs a `reason` (it is recorded and audited)")
    with conn.cursor() as cur:
        cur.execute(f"LOCK TABLE {QUARANTINE_TABLE} IN SHARE ROW EXCLUSIVE MODE")
        cur.execute(
            f"SELECT id, from_offset, to_offset FROM {QUARANTINE_TABLE} WHERE topic = %s "
            "AND partition = %s AND from_offset <= %s AND to_offset >= %s",
            (topic, partition, to_offset, from_offset),
        )
        hit = cur.fetchone()
        if hit is not None:
            conn.rollback()
            raise QuarantineRefused(
                f"{topic}/{partition} offsets {from_offset}..{to_offset} overlap quarantine "
                f"#{hit[0]} ({hit[1]}..{hit[2]}); quarantine only the offsets outside it"
            )
        cur.execute(
            f"INSERT INTO {QUARANTINE_TABLE} (topic, partition, from_offset, to_offset, reason, "
            "set_by) VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
            (topic, partition, from_offset, to_offset, reason, set_by),
        )
        qid = cur.fetchone()[0]
    conn.commit()
    return int(qid)
