"""What a producer run sent, as the producer records it (``ingest_runs``) and reconciliation
reads it back: counts by kind, offset ranges, purchase totals and an order-independent digest
of the event ids. Pure: no Kafka client, so the store and the Spark apps import it cheaply.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field

DIGEST_MOD = 1 << 128
LANDABLE_KINDS = ("valid", "irrelevant")  # satisfy the contract: the lake's share


def id_hash(event_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(event_id.encode(), digest_size=16).digest(), "big")


def id_digest(event_ids: Iterable[str | None]) -> str:
    """Order-independent digest of a set of ids: the sum of their 128-bit hashes mod 2^128.

    It can be computed incrementally (producer) and with a plain aggregation (reconciliation
    over the lake); repeated ids must be removed first.
    """
    total = sum(id_hash(e) for e in set(event_ids) if e) % DIGEST_MOD
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
    revenue: float = 0.0  # all currencies' amounts added: a checksum, not a sales figure
    revenue_by_currency: dict[str, float] = field(default_factory=dict)  # the sales figures
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
