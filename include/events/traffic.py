"""Send demo traffic: the generator, the producer and the run record, in one call.

Used by the CLI (``python -m include.events``), the ``demo_traffic`` DAG and the demo.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from include.analytics import store
from include.events.catalog import build_catalog
from include.events.generator import GeneratorConfig, iter_events
from include.events.producer import produce
from include.events.runs import RunRecord


def send_traffic(
    *,
    topic: str,
    kafka_config: dict[str, Any],
    generator: GeneratorConfig,
    count: int | None = None,
    duration: float | None = None,
    rate: float | None = None,
    pg_connect: Callable[[], Any] | None = None,
    progress: bool = False,
) -> RunRecord:
    """Produce ``count`` events (or for ``duration`` seconds) and record the run in Postgres
    when ``pg_connect`` is given (the catalog is published there first)."""
    if count is None and duration is None:
        raise ValueError("give a count or a duration")
    if pg_connect is not None:
        conn = pg_connect()
        try:
            store.publish_catalog(conn, build_catalog())
        finally:
            conn.close()
    record = produce(
        iter_events(generator),
        topic=topic,
        config=kafka_config,
        count=count,
        duration=duration,
        rate=rate,
        progress=progress,
    )
    if pg_connect is not None:
        conn = pg_connect()
        try:
            store.record_run(conn, record)
        finally:
            conn.close()
    return record
