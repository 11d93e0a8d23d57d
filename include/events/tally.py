"""What the generator sent, tallied as it is sent: the independent oracle of the live
aggregates and of the lake (no transform of the pipeline is involved).

Per minute of event time, category and currency, the valid purchases with their units and
revenue as the generator computed them (amounts of different currencies are never added); per kind, how many events of each; the landable event ids' 128-bit
hashes (``include/events/runs.id_hash``: the digest's terms), to find each one in a table.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

from include.events.generator import Produced
from include.events.runs import LANDABLE_KINDS, id_hash


def minute_of(event_time_ms: int) -> str:
    """The start of the event's one-minute window, as naive UTC ISO text."""
    start = datetime.fromtimestamp(event_time_ms // 60_000 * 60, UTC)
    return start.replace(tzinfo=None).isoformat()


class Tally:
    def __init__(self, keep_ids: bool = True) -> None:
        self.sales: dict[tuple[str, str, str], dict[str, float]] = {}
        self.kinds: Counter[str] = Counter()
        self.ids: set[int] = set()
        self.days: set[str] = set()  # event days (UTC) of the landable events
        self.keep_ids = keep_ids

    def add(self, p: Produced) -> None:
        self.kinds[p.kind] += 1
        if p.kind in LANDABLE_KINDS and p.event_id and self.keep_ids:
            self.ids.add(id_hash(p.event_id))
            self.days.add(minute_of(p.event_time_ms)[:10])
        if p.kind == "valid" and p.event_type == "purchase" and p.category:
            row = self.sales.setdefault(
                (minute_of(p.event_time_ms), p.category, p.currency or ""),
                {"purchases": 0, "units": 0, "revenue": 0.0},
            )
            row["purchases"] += 1
            row["units"] += p.units
            row["revenue"] += p.revenue

    def counted(self, events: Iterable[Produced]) -> Iterator[Produced]:
        """``events``, each tallied as it is taken (wrap exactly what is sent)."""
        for p in events:
            self.add(p)
            yield p

    @property
    def events(self) -> int:
        return sum(self.kinds.values())

    @property
    def landable(self) -> int:
        return len(self.ids)
