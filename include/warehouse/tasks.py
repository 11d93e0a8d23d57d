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


def expire_raw(params: dict, today: date | None = None) -> list[str]:
    """Delete the raw files of days verified by compaction at least ``raw_retention_days``
    ago. Off when the param is null or 0. Never touches a day that is not verified."""
    keep = params.get("raw_retention_days")
    if not keep:
        log.info("raw retention is off (raw_retention_days not set): nothing expired")
        return []
    today = today or datetime.now().astimezone().date()
    conn = connections.postgres(params["pg_schema"])
    client = connections.s3_client()
    expired = []
    try:
        for day in runs.expirable_days(conn, int(keep), today):
            prefix = day_prefix(params["lake_prefix"], day)
            deleted = _delete_prefix(client, params["bucket"], prefix)
            runs.mark_expired(conn, day)
            log.info("expired raw day %s: %s object(s) under %s", day, deleted, prefix)
            expired.append(day.isoformat())
    finally:
        conn.close()
    return expired


def _delete_prefix(client: Any, bucket: str, prefix: str) -> int:
    n = 0
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=bucket, Delete={"Objects": keys, "Quiet": True})
            n += len(keys)
    return n
