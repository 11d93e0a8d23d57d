"""Send generated events to Kafka and keep a record of what was sent.

The producer is idempotent (``enable.idempotence``, ``acks=all``), batches and compresses.
Every run returns a :class:`RunRecord` — counts by intended kind, per partition, the offset
ranges the broker assigned, the expected purchase totals and a digest of the event ids — that :mod:`include.analytics.store` keeps in
Postgres, so the lake and the aggregates can be reconciled against it later. The record is
built as events stream by: a run of any length needs constant memory.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaException, Producer

from include.events.generator import Produced

_DIGEST_MOD = 1 << 128
LANDABLE_KINDS = ("valid", "irrelevant")  # satisfy the contract: the lake's share


def id_hash(event_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=16).digest(), "big")


def id_digest(event_ids: Iterable[str | None]) -> str:
    """Order-independent digest of a set of ids: the sum of their 128-bit hashes mod 2^128.

    It can be computed incrementally (producer) and with a plain aggregation (reconciliation
    over the lake); repeated ids must be removed first.
    """
    total = sum(id_hash(e) for e in set(event_ids) if e) % _DIGEST_MOD
    return f"{total:032x}"


@dataclass
class RunRecord:
    run_id: str
    topic: str
    events: int = 0
    by_kind: dict[str, int] = field(default_factory=dict)
    by_partition: dict[int, int] = field(default_factory=dict)
    purchases: int = 0
    units: int = 0
    revenue: float = 0.0
    late: int = 0
    id_digest: str = ""
    seconds: float = 0.0
    # Offsets the broker assigned, per partition, as [first, last] ranges: where every event
    # of the run sits, so a reconciliation can find each one in the lake or the dead letters.
    offset_ranges: dict[int, list[list[int]]] = field(default_factory=dict)

    @property
    def valid(self) -> int:
        """Distinct events that satisfy the contract (irrelevant ones included)."""
        return sum(self.by_kind.get(k, 0) for k in LANDABLE_KINDS)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


class OffsetRanges:
    """Delivered offsets per partition, kept as merged ``[first, last]`` ranges: a run alone
    on its partitions needs one range each (constant memory); other producers writing at the
    same time split them."""

    def __init__(self) -> None:
        self._ranges: dict[int, list[list[int]]] = {}

    def add(self, partition: int, offset: int) -> None:
        ranges = self._ranges.setdefault(partition, [])
        if ranges and ranges[-1][1] + 1 == offset:
            ranges[-1][1] = offset
        else:
            ranges.append([offset, offset])

    def result(self) -> dict[int, list[list[int]]]:
        out: dict[int, list[list[int]]] = {}
        for partition, ranges in sorted(self._ranges.items()):
            merged: list[list[int]] = []
            for lo, hi in sorted(ranges):
                if merged and lo <= merged[-1][1] + 1:
                    merged[-1][1] = max(merged[-1][1], hi)
                else:
                    merged.append([lo, hi])
            out[partition] = merged
        return out


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
) -> RunRecord:
    """Send ``events`` to ``topic`` until ``count`` events or ``duration`` seconds (or the
    iterable ends), at ``rate`` events/s if given; raise if any delivery fails."""
    if bootstrap_servers is None and not (config and "bootstrap.servers" in config):
        raise ValueError("produce() needs bootstrap_servers or config['bootstrap.servers']")
    conf = producer_config(bootstrap_servers or config["bootstrap.servers"], **(config or {}))
    producer = Producer(conf)
    record = RunRecord(run_id=run_id or uuid.uuid4().hex, topic=topic)
    partitions: Counter[int] = Counter()
    kinds: Counter[str] = Counter()
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
        if sent % 2_000 == 0:
            producer.poll(0)
            pacer.wait(sent)
            if bar is not None:
                bar.update(sent, time.monotonic() - started)
    remaining = producer.flush(60)
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
    record.id_digest = f"{digest % _DIGEST_MOD:032x}"
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
