"""A StreamingQueryListener that writes every micro-batch's progress to Postgres.

One row per (query run, batch): batch id, input rows, input and processing rates, durations,
source offsets per partition (start/end/latest: what was read and what the log holds), the
watermark and rows dropped by it (the stream's deduplication runs on processing time, so
nothing is ever late for it: 0), the state's row count (0 too: the stream turns RocksDB's
row count off, ``BATCH_CONF`` in spark_apps/stream_events.py) and the query's observed
metrics. Supervision (stall detection, trends) and the dashboard read this table. Idle
reports (``onQueryIdle``) update the query's row in ``stream_idle``: supervision's sign of
life when nothing arrives.

A listener failure is logged and never stops the stream: progress is telemetry, the data path
does not depend on it.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from typing import Any

from pyspark.sql.streaming import StreamingQueryListener

from include.analytics import store
from include.endpoints import PostgresEndpoint

log = logging.getLogger("stream_events.progress")


def progress_row(p: dict[str, Any]) -> dict[str, Any]:
    """The table's columns from a progress JSON document (``StreamingQueryProgress.json``)."""
    state = p.get("stateOperators") or []
    return {
        "query_id": p["id"],
        "run_id": p["runId"],
        "query_name": p.get("name") or "",
        "batch_id": int(p["batchId"]),
        "ts": p["timestamp"],
        "input_rows": int(p.get("numInputRows") or 0),
        "input_rows_per_s": float(p.get("inputRowsPerSecond") or 0.0),
        "processed_rows_per_s": float(p.get("processedRowsPerSecond") or 0.0),
        "batch_duration_ms": int((p.get("durationMs") or {}).get("triggerExecution") or 0),
        "watermark": (p.get("eventTime") or {}).get("watermark"),
        "late_rows_dropped": sum(int(s.get("numRowsDroppedByWatermark") or 0) for s in state),
        "state_rows": sum(int(s.get("numRowsTotal") or 0) for s in state),
        "sources": json.dumps(
            [
                {
                    k: s.get(k)
                    for k in (
                        "description",
                        "startOffset",
                        "endOffset",
                        "latestOffset",
                        "numInputRows",
                    )
                }
                for s in p.get("sources") or []
            ]
        ),
        "observed": json.dumps(p.get("observedMetrics") or {}),
        "durations": json.dumps(p.get("durationMs") or {}),
    }


# A batch's own figures that override the progress document's (the columnar engine's counts
# and state size, which Spark's progress cannot see): batch id -> columns, or None.
Overrides = Callable[[int], Mapping[str, Any] | None]


def with_overrides(row: dict[str, Any], overrides: Overrides | None) -> dict[str, Any]:
    extra = overrides(row["batch_id"]) if overrides is not None else None
    return {**row, **extra} if extra else row


class PostgresProgressListener(StreamingQueryListener):
    def __init__(self, pg_schema: str, overrides: Overrides | None = None) -> None:
        self.pg_schema = pg_schema
        self.overrides = overrides
        self._conn = None
        self._names: dict[str, str] = {}  # query id -> name (idle events carry no name)

    def _connection(self):
        if self._conn is None or self._conn.closed:
            self._conn = store.connect(PostgresEndpoint.from_libpq_env(), schema=self.pg_schema)
        return self._conn

    def onQueryStarted(self, event) -> None:
        self._names[str(event.id)] = event.name or ""
        log.info("query %s started (run %s)", event.name, event.runId)

    def _record(self, what: str, write) -> None:
        try:
            write(self._connection())
        except Exception as exc:
            log.warning("could not record %s: %s", what, exc)
            if self._conn is not None:
                try:
                    self._conn.close()
                finally:
                    self._conn = None

    def onQueryProgress(self, event) -> None:
        def write(conn) -> None:
            row = progress_row(json.loads(event.progress.json))
            store.record_progress(conn, with_overrides(row, self.overrides))

        self._record("progress", write)

    def onQueryIdle(self, event) -> None:
        """The query checked its source and found nothing new (Spark reports this at most
        every ``spark.sql.streaming.noDataProgressEventInterval``, 10 s): its sign of life
        while there is no traffic."""
        name = self._names.get(str(event.id))
        if name is not None:
            run = str(event.runId)
            self._record("an idle report", lambda conn: store.record_idle(conn, name, run))

    def onQueryTerminated(self, event) -> None:
        if event.exception:
            log.error("query %s failed: %s", event.id, event.exception)


def record_recent_progress(queries, pg_schema: str, overrides: Overrides | None = None) -> int:
    """Write the progress the queries still hold (``recentProgress``). Called when a bounded run
    ends, so the last batches are recorded even if the asynchronous listener bus had not
    delivered them yet; rows are keyed, so nothing is written twice."""
    conn = store.connect(PostgresEndpoint.from_libpq_env(), schema=pg_schema)
    n = 0
    try:
        for q in queries:
            for p in q.recentProgress:
                row = with_overrides(progress_row(json.loads(p.json)), overrides)
                store.record_progress(conn, row)
                n += 1
    finally:
        conn.close()
    return n
