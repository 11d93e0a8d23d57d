"""The offset-retention guard: never let retention remove data the stream has not read.

Spark's Kafka source with ``failOnDataLoss=false`` skips such offsets silently; with ``true``
(ours) the app fails at the first batch with a message that names no range. The guard runs
before every launch, compares each query's checkpointed position with every partition's
earliest retained offset, and stops with the partitions and the lost ranges. An operator can
accept a gap explicitly (a logged trigger param); nothing is ever skipped without one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from include.supervision.checkpoint import QueryPosition


@dataclass(frozen=True, order=True)
class Gap:
    topic: str
    partition: int
    next_offset: int  # where the checkpoint resumes
    earliest: int  # the earliest offset the broker still holds
    queries: tuple[str, ...] = ()

    @property
    def lost(self) -> int:
        return self.earliest - self.next_offset

    def describe(self) -> str:
        return (
            f"{self.topic}[{self.partition}]: offsets {self.next_offset}..{self.earliest - 1} "
            f"({self.lost} records) were deleted by retention before the stream read them "
            f"(queries: {', '.join(self.queries)})"
        )


class RetentionGapError(RuntimeError):
    def __init__(self, gaps: list[Gap]) -> None:
        self.gaps = gaps
        lines = "\n  ".join(g.describe() for g in gaps)
        super().__init__(
            f"offset-retention guard: {len(gaps)} partition(s) lost unread data:\n  {lines}\n"
            "Nothing was skipped. Find the records elsewhere (a replay, the producers' "
            "records), or accept the gap to continue past it (logged): trigger stream_control "
            "with action=accept_retention_gap (or a stream_events run with "
            "accept_retention_gap=true)."
        )


def find_gaps(
    positions: Iterable[QueryPosition], earliest: Mapping[tuple[str, int], int]
) -> list[Gap]:
    """Partitions whose earliest retained offset is beyond a query's resume position.

    ``earliest``: (topic, partition) -> the log start offset. A partition the checkpoint does
    not know (added later) is read from its start by Spark: no gap.
    """
    found: dict[tuple[str, int], Gap] = {}
    for pos in positions:
        for topic, parts in pos.offsets.items():
            for partition, offset in parts.items():
                start = earliest.get((topic, partition))
                if start is None or offset < 0 or offset >= start:
                    continue
                key = (topic, partition)
                prev = found.get(key)
                low = offset if prev is None else min(prev.next_offset, offset)
                queries = (prev.queries if prev else ()) + (pos.query,)
                found[key] = Gap(topic, partition, low, start, queries)
    return sorted(found.values())


def _offsets(admin, topic: str, latest: bool, timeout: float) -> dict[int, int]:
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import OffsetSpec

    meta = admin.list_topics(topic, timeout=timeout).topics.get(topic)
    if meta is None or meta.error is not None:
        raise RuntimeError(f"topic {topic!r} not found on the broker")
    spec = OffsetSpec.latest() if latest else OffsetSpec.earliest()
    futures = admin.list_offsets(
        {TopicPartition(topic, p): spec for p in meta.partitions}, request_timeout=timeout
    )
    return {tp.partition: f.result().offset for tp, f in futures.items()}


def earliest_offsets(admin, topic: str, timeout: float = 15.0) -> dict[tuple[str, int], int]:
    """The log start offset of every partition of ``topic`` (confluent-kafka AdminClient)."""
    return {(topic, p): o for p, o in _offsets(admin, topic, False, timeout).items()}


def log_end_offsets(admin, topic: str, timeout: float = 15.0) -> dict[int, int]:
    """The log-end offset (the next offset to be written) of every partition of ``topic``."""
    return _offsets(admin, topic, True, timeout)
