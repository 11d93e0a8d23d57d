"""Is a dependency of the stream down? One probe per dependency, the same in the launch gate,
the health check and the driver itself.

A failure while Kafka, S3 or Postgres does not answer is the outage's, not the app's: the
driver waits for them and resumes its queries in the same JVM (``spark_apps/stream_events.py``),
and the gate does not count such failures as a crash loop (``tasks.gate``). The probes are
cheap reads with short timeouts: the topic's metadata, the bucket's head, ``SELECT 1``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

log = logging.getLogger(__name__)

Probe = Callable[[], object]


def kafka(admin_factory: Callable[[], Any], topic: str, timeout: float = 10) -> Probe:
    return lambda: admin_factory().list_topics(topic, timeout=timeout)


def s3(client_factory: Callable[[], Any], bucket: str) -> Probe:
    return lambda: client_factory().head_bucket(Bucket=bucket)


def postgres(connect: Callable[[], Any]) -> Probe:
    def probe() -> None:
        conn = connect()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT 1")
        finally:
            conn.close()

    return probe


def down(probes: Mapping[str, Probe]) -> list[str]:
    """The dependencies that do not answer now, each as ``name: first line of its error``."""
    out = []
    for name, probe in probes.items():
        try:
            probe()
        except Exception as exc:
            first = str(exc).splitlines()[0][:200] if str(exc) else type(exc).__name__
            out.append(f"{name}: {first}")
    return out


def wait_until_up(
    probes: Mapping[str, Probe],
    *,
    give_up_after_s: float,
    interval_s: float = 5.0,
    cancelled: Callable[[], bool] = lambda: False,
    on_down: Callable[[list[str]], None] = lambda down: None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> tuple[list[str], bool]:
    """Probe until every dependency answers (``on_down`` is told once, when the wait begins).
    Returns (what was down at first, whether all answer now): ``([], True)`` when none was down
    (the failure was not an outage), ``(down, False)`` when ``cancelled()`` or
    ``give_up_after_s`` passed first."""
    first = down(probes)
    if not first:
        return [], True
    log.warning("waiting for the stream's dependencies: %s", "; ".join(first))
    on_down(first)
    started = clock()
    while not cancelled() and clock() - started < give_up_after_s:
        sleep(interval_s)
        still = down(probes)
        if not still:
            log.warning("every dependency answers again after %.0fs", clock() - started)
            return first, True
    return first, False
