"""What compaction did, per event day, in the analytics database (``compaction_runs``).

A day is *verified* when its last run wrote the table and every check passed; raw retention
only ever expires verified days, and the report of each run stays queryable.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any


def record(conn, day: date, status: str, report: dict[str, Any]) -> None:
    """Upsert the day's run; ``verified_at`` keeps the last successful verification."""
    with conn.cursor() as cur:
        cur.execute(
            """
            INSERT INTO compaction_runs (day, status, run_at, verified_at, rows, snapshot_id,
                                         report)
            VALUES (%(day)s, %(status)s, now(),
                    CASE WHEN %(status)s = 'verified' THEN now() END,
                    %(rows)s, %(snapshot)s, %(report)s)
            ON CONFLICT (day) DO UPDATE SET
                -- an empty run (no raw rows: e.g. expired) never hides an earlier result
                status = CASE WHEN EXCLUDED.status = 'empty' THEN compaction_runs.status
                              ELSE EXCLUDED.status END,
                run_at = EXCLUDED.run_at,
                verified_at = COALESCE(EXCLUDED.verified_at, compaction_runs.verified_at),
                rows = COALESCE(EXCLUDED.rows, compaction_runs.rows),
                snapshot_id = COALESCE(EXCLUDED.snapshot_id, compaction_runs.snapshot_id),
                report = CASE WHEN EXCLUDED.status = 'empty' THEN compaction_runs.report
                              ELSE EXCLUDED.report END
            """,
            {
                "day": day,
                "status": status,
                "rows": report.get("target", {}).get("rows"),
                "snapshot": report.get("snapshot_id"),
                "report": json.dumps(report, default=str),
            },
        )
    conn.commit()


def expirable_days(conn, older_than_days: int, today: date) -> list[date]:
    """Verified days whose raw files are still there and whose day ended at least
    ``older_than_days`` days before ``today``, and whose last run is verified."""
    with conn.cursor() as cur:
        cur.execute(
            """
            SELECT day FROM compaction_runs
            WHERE status = 'verified' AND verified_at IS NOT NULL AND raw_expired_at IS NULL
              AND day <= %s::date - %s
            ORDER BY day
            """,
            (today, older_than_days),
        )
        return [r[0] for r in cur.fetchall()]


def mark_expired(conn, day: date) -> None:
    with conn.cursor() as cur:
        cur.execute("UPDATE compaction_runs SET raw_expired_at = now() WHERE day = %s", (day,))
    conn.commit()


def last_run(conn, day: date) -> dict[str, Any] | None:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT status, verified_at, rows, snapshot_id, report, raw_expired_at "
            "FROM compaction_runs WHERE day = %s",
            (day,),
        )
        row = cur.fetchone()
    if row is None:
        return None
    keys = ("status", "verified_at", "rows", "snapshot_id", "report", "raw_expired_at")
    return dict(zip(keys, row, strict=True))


def expired_days(conn) -> list[date]:
    """Event days whose raw files were expired (readers of the raw lake skip them)."""
    with conn.cursor() as cur:
        cur.execute("SELECT day FROM compaction_runs WHERE raw_expired_at IS NOT NULL ORDER BY day")
        return [r[0] for r in cur.fetchall()]
