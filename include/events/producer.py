"""Send generated events to Kafka and keep a record of what was sent.

The producer is idempotent (``enable.idempotence``, ``acks=all``), batches and compresses.
Every run returns a :class:`RunRecord` — counts by intended kind, per partition, the expected
purchase totals and a digest of the event ids — that :mod:`include.analytics.store` keeps in
Postgres, so the lake and the aggregates can be reconciled against it later.
"""

from __future__ import annotations

import hashlib
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from confluent_kafka import KafkaException, Producer

from include.events.generator import Produced


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
    id_digest: str = ""
    seconds: float = 0.0

    @property
    def valid(self) -> int:
        """Distinct events that satisfy the contract (irrelevant ones included): the lake's share."""
        return self.by_kind.get("valid", 0) + self.by_kind.get("irrelevant", 0)

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def id_digest(event_ids: Sequence[str | None]) -> str:
    """Order-independent digest of the distinct valid ids: sha256 of the sorted ids."""
    h = hashlib.sha256()
    for eid in sorted({e for e in event_ids if e}):
        h.update(eid.encode())
        h.update(b"\n")
    return h.hexdigest()


def producer_config(bootstrap_servers: str, **overrides: str | int) -> dict[str, str | int]:
    config: dict[str, str | int] = {
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


def produce(
    events: Sequence[Produced],
    *,
    topic: str,
    bootstrap_servers: str,
    run_id: str | None = None,
    progress: bool = False,
) -> RunRecord:
    """Send ``events`` to ``topic``; raise if any delivery fails."""
    record = RunRecord(run_id=run_id or uuid.uuid4().hex, topic=topic)
    producer = Producer(producer_config(bootstrap_servers))
    partitions: Counter[int] = Counter()
    errors: list[str] = []

    def on_delivery(err, msg) -> None:
        if err is not None:
            errors.append(str(err))
        else:
            partitions[msg.partition()] += 1

    started = time.monotonic()
    for i, ev in enumerate(events):
        while True:
            try:
                producer.produce(topic, key=ev.key, value=ev.value, on_delivery=on_delivery)
                break
            except BufferError:
                producer.poll(0.05)
        if i % 10_000 == 0:
            producer.poll(0)
            if progress and i:
                print(f"  produced {i:,}/{len(events):,}", flush=True)
    remaining = producer.flush(60)
    record.seconds = time.monotonic() - started
    if remaining or errors:
        raise KafkaException(
            f"{remaining} message(s) undelivered, {len(errors)} delivery error(s) "
            f"(first: {errors[0] if errors else 'timeout'}) producing to {topic}"
        )
    kinds = Counter(ev.kind for ev in events)
    valid_purchases = [ev for ev in events if ev.kind == "valid" and ev.event_type == "purchase"]
    record.events = len(events)
    record.by_kind = dict(kinds)
    record.by_partition = dict(sorted(partitions.items()))
    record.purchases = len(valid_purchases)
    record.units = sum(ev.units for ev in valid_purchases)
    record.revenue = round(sum(ev.revenue for ev in valid_purchases), 2)
    record.id_digest = id_digest(
        [ev.event_id for ev in events if ev.kind in ("valid", "irrelevant")]
    )
    return record
