"""What the warehouse DAGs' tasks do, with Airflow connections in (see ``dags/compact_*``)."""

from __future__ import annotations

import logging
from datetime import date, datetime
from typing import Any

from include import connections
from include.warehouse import runs

log = logging.getLogger(__name__)


def pick_day(params: dict, data_interval_start: datetime | None) -> str:
    """The event day a run compacts: the ``day`` param if given, else the day the run's data
    interval starts (the nightly schedule's interval starts on the day it compacts)."""
    if params.get("day"):
        try:
            return date.fromisoformat(params["day"]).isoformat()
        except ValueError as exc:
            raise ValueError(f"param day={params['day']!r} is not a YYYY-MM-DD date") from exc
    if data_interval_start is None:
        raise ValueError("no data interval and no day param: nothing says which day to compact")
    return data_interval_start.date().isoformat()


def day_prefix(lake_prefix: str, day: date) -> str:
    """The raw lake's objects of one event day (the stream partitions by ``event_date``)."""
    return f"{lake_prefix.strip('/')}/event_date={day.isoformat()}/"


def s3_key(path: str, bucket: str) -> str:
    """The object key of a raw file as the sink's log names it (``s3a://bucket/key``)."""
    scheme, _, rest = path.partition("://")
    owner, _, key = rest.partition("/")
    if scheme not in ("s3a", "s3") or owner != bucket or not key:
        raise ValueError(f"{path!r} is not an object of bucket {bucket!r}")
    return key


def expire_raw(params: dict, today: date | None = None) -> dict[str, int]:
    """Delete the raw files that compaction read in runs verified at least
    ``raw_retention_days`` ago; day -> files deleted. Off when the param is null or 0. A
    file no verified run read (it arrived after the day's run) is kept: the next compaction
    takes it in, the next expiry deletes it."""
    keep = params.get("raw_retention_days")
    if not keep:
        log.info("raw retention is off (raw_retention_days not set): nothing expired")
        return {}
    today = today or datetime.now().astimezone().date()
    conn = connections.postgres(params["pg_schema"])
    client = connections.s3_client()
    bucket = params["bucket"]
    expired: dict[str, int] = {}
    try:
        for day, paths in runs.expirable_files(conn, int(keep), today).items():
            _delete_keys(client, bucket, [s3_key(p, bucket) for p in paths])
            runs.mark_files_expired(conn, day, paths)
            log.info("expired raw day %s: %s file(s) compaction read", day, len(paths))
            expired[day.isoformat()] = len(paths)
    finally:
        conn.close()
    return expired


def _delete_keys(client: Any, bucket: str, keys: list[str]) -> None:
    for i in range(0, len(keys), 1000):  # DeleteObjects takes 1,000 keys at most
        batch = [{"Key": k} for k in keys[i : i + 1000]]
        out = client.delete_objects(Bucket=bucket, Delete={"Objects": batch, "Quiet": True})
        if out.get("Errors"):
            raise RuntimeError(f"deleting raw files failed: {out['Errors'][:3]}")
