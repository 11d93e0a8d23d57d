"""Send generated events to Kafka and keep a record of what was sent.

The producer is idempotent (``enable.idempotence``, ``acks=all``), batches and compresses.
Every run returns a :class:`RunRecord` — counts by intended kind, per partition, the offset
ranges the broker assigned, the expected purchase totals and a digest of the event ids — that :mod:`include.analytics.store` keeps in
Postgres, so the lake and the aggregates can be reconciled against it later. The record is
built as events stream by: a run of any length needs constant memory.
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from collections.abc import Iterable
from typing import Any

from confluent_kafka import KafkaException, Producer

from include.events.generator import Produced
from include.events.runs import DIGEST_MOD, LANDABLE_KINDS, OffsetRanges, RunRecord, id_hash


def producer_config(bootstrap_servers: str, **overrides: Any) -> dict[str, Any]:
    config: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        "enable.idempotence": True,
        "acks": "all",
        "compression.type": "lz4",
        "linger.ms": 20,
        "batch.size": 512 * 1024,
        "queue.buffering.max.messages": 500_000,
        "message.max.bytes": 1_000_000,
        "log_level": 3,  # errors only: transient warnings (e.g. coordinator loading) are retried
    }
    config.update(overrides)
    return config


class _Pacer:
    """Keeps the send rate at ``rate`` events/s (None: as fast as possible)."""

    def __init__(self, rate: float | None, started: float) -> None:
        if rate is not None and rate <= 0:
            raise ValueError(f"rate={rate} must be positive events/s")
        self.rate = rate
        self.started = started

    def wait(self, sent: int) -> None:
        if self.rate is None:
            return
        ahead = sent / self.rate - (time.monotonic() - self.started)
        if ahead > 0:
            time.sleep(ahead)


def produce(
    events: Iterable[Produced],
    *,
    topic: str,
    bootstrap_servers: str | None = None,
    config: dict[str, Any] | None = None,
    count: int | None = None,
    duration: float | None = None,
    rate: float | None = None,
    run_id: str | None = None,
    progress: bool = False,
    flush_timeout: float = 60,
) -> RunRecord:
    """Send ``events`` to ``topic`` until ``count`` events or ``duration`` seconds (or the
    iterable ends), at ``rate`` events/s if given; raise if any delivery fails. The last
    deliveries are awaited for ``flush_timeout`` seconds (longer than a broker outage the
    caller means to ride out, and no longer than the config's ``message.timeout.ms``)."""
    if bootstrap_servers is None and not (config and "bootstrap.servers" in config):
        raise ValueError("produce() needs bootstrap_servers or config['bootstrap.servers']")
    conf = producer_config(bootstrap_servers or config["bootstrap.servers"], **(config or {}))
    producer = Producer(conf)
    record = RunRecord(run_id=run_id or uuid.uuid4().hex, topic=topic)
    partitions: Counter[int] = Counter()
    kinds: Counter[str] = Counter()
    by_currency: dict[str, float] = {}
    errors: list[str] = []
    digest = 0
    offsets = OffsetRanges()

    def on_delivery(err, msg) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            partitions[msg.partition()] += 1
            offsets.add(msg.partition(), msg.offset())

    bar = _progress_bar(count, duration) if progress else None
    started = time.monotonic()
    pacer = _Pacer(rate, started)
    sent = 0
    for ev in events:
        if count is not None and sent >= count:
            break
        if duration is not None and time.monotonic() - started >= duration:
            break
        while True:
            try:
                producer.produce(topic, key=ev.key, value=ev.value, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        sent += 1
        kinds[ev.kind] += 1
        if ev.kind in LANDABLE_KINDS:
            digest += id_hash(ev.event_id)
            record.late += ev.late
            if ev.kind == "valid" and ev.event_type == "purchase":
                record.purchases += 1
                record.units += ev.units
                record.revenue += ev.revenue
                by_currency[ev.currency] = by_currency.get(ev.currency, 0.0) + ev.revenue
        if sent % 2_000 == 0:
            producer.poll(0)
            pacer.wait(sent)
            if bar is not None:
                bar.update(sent, time.monotonic() - started)
    remaining = producer.flush(flush_timeout)
    record.seconds = time.monotonic() - started
    if bar is not None:
        bar.update(sent, record.seconds)
        bar.close()
    if remaining or errors:
        raise KafkaException(
            f"{remaining} message(s) undelivered, {len(errors)} delivery error(s) "
            f"(first: {errors[0] if errors else 'timeout'}) producing to {topic}"
        )
    record.events = sent
    record.by_kind = dict(kinds)
    record.by_partition = dict(sorted(partitions.items()))
    record.offset_ranges = offsets.result()
    record.revenue = round(record.revenue, 2)
    record.revenue_by_currency = {c: round(v, 2) for c, v in sorted(by_currency.items())}
    record.id_digest = f"{digest % DIGEST_MOD:032x}"
    return record


class _progress_bar:
    """A rich progress bar with the achieved rate (rich is already an Airflow dependency)."""

    def __init__(self, count: int | None, duration: float | None) -> None:
        from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

        self.by_time = count is None and duration is not None
        self.progress = Progress(
            TextColumn("producing"),
            BarColumn(),
            TextColumn("{task.fields[sent]:>12,} events  {task.fields[rate]:>9,.0f} ev/s"),
            TimeElapsedColumn(),
            transient=False,
        )
        total = duration if self.by_time else count
        self.task = self.progress.add_task("produce", total=total, sent=0, rate=0.0)
        self.progress.start()

    def update(self, sent: int, elapsed: float) -> None:
        rate = sent / elapsed if elapsed else 0.0
        done = elapsed if self.by_time else sent
        self.progress.update(self.task, completed=done, sent=sent, rate=rate)

    def close(self) -> None:
        self.progress.stop()
