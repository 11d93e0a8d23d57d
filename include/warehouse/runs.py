"""What compaction did, per event day, in the analytics database (``compaction_runs``), and
which raw files each verified run read (``compaction_inputs``).

A day is *verified* when its last run wrote the table and every check passed. The files its
verified runs read are recorded; a file the sink's log lists for a day and the record lacks
arrived late (:func:`stale_days`: its events are added to the day), and raw retention deletes
only recorded files (:func:`expirable_files`), so it never deletes an event the warehouse
lacks.
The report of each run stays queryable.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
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


def wholly_expired_days(conn) -> list[date]:
    """Days expired before retention recorded files (all of their raw files are gone):
    readers prune their partitions."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT r.day FROM compaction_runs r WHERE r.raw_expired_at IS NOT NULL "
            "AND NOT EXISTS (SELECT 1 FROM compaction_inputs i WHERE i.day = r.day) ORDER BY r.day"
        )
        return [r[0] for r in cur.fetchall()]


def record_inputs(conn, day: date, paths: Iterable[str]) -> int:
    """Record the raw files a verified run of ``day`` read (already recorded ones stay)."""
    rows = [(day, p) for p in sorted(set(paths))]
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO compaction_inputs (day, path) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            rows,
        )
    conn.commit()
    return len(rows)


def recorded_inputs(conn, days: Iterable[date] | None = None) -> dict[date, set[str]]:
    """Per day, every raw file a verified run read (expired or not); ``days`` narrows it."""
    query = "SELECT day, path FROM compaction_inputs"
    args: tuple = ()
    if days is not None:
        query += " WHERE day = ANY(%s)"
        args = (sorted(set(days)),)
    out: dict[date, set[str]] = {}
    with conn.cursor() as cur:
        cur.execute(query, args)
        for day, path in cur.fetchall():
            out.setdefault(day, set()).add(path)
    return out


def verified_days(conn) -> set[date]:
    with conn.cursor() as cur:
        cur.execute("SELECT day FROM compaction_runs WHERE verified_at IS NOT NULL")
        return {r[0] for r in cur.fetchall()}


def stale_days(
    logged: Mapping[date, set[str]], recorded: Mapping[date, set[str]], verified: Iterable[date]
) -> dict[date, set[str]]:
    """Verified days whose raw partition holds committed files (``logged``: from the sink's
    log, per event day) that no verified run read: late arrivals. Day -> those files."""
    out = {}
    for day in sorted(set(verified)):
        late = logged.get(day, set()) - recorded.get(day, set())
        if late:
            out[day] = late
    return out


def expired_files(conn) -> list[str]:
    """Raw files retention deleted (the sink's log still lists them: readers skip them)."""
    with conn.cursor() as cur:
        cur.execute("SELECT path FROM compaction_inputs WHERE expired_at IS NOT NULL")
        return [r[0] for r in cur.fetchall()]


def expirable_files(conn, older_than_days: int, today: date) -> dict[date, list[str]]:
    """Per day verified at least ``older_than_days`` days before ``today`` and whose last run
    is verified, the raw files its verified runs read that are still there. A file no
    verified run read (it arrived after the run) is never among them."""
    with conn.cursor() as cur:
        cur.execute(
            """
            SELECT i.day, i.path FROM compaction_inputs i
            JOIN compaction_runs r ON r.day = i.day
            WHERE r.status = 'verified' AND r.verified_at IS NOT NULL
              AND i.expired_at IS NULL AND i.day <= %s::date - %s
            ORDER BY i.day, i.path
            """,
            (today, older_than_days),
        )
        out: dict[date, list[str]] = {}
        for day, path in cur.fetchall():
            out.setdefault(day, []).append(path)
        return out


def mark_files_expired(conn, day: date, paths: Iterable[str]) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE compaction_inputs SET expired_at = now() WHERE day = %s AND path = ANY(%s)",
            (day, list(paths)),
        )
        cur.execute("UPDATE compaction_runs SET raw_expired_at = now() WHERE day = %s", (day,))
    conn.commit()
