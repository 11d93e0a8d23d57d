"""Account for every produced event: landed in the lake, dead-lettered, a dropped duplicate
copy, or missing; and find events landed more than once.

The producer records, per run (``ingest_runs``), the offsets the broker gave its events (as
ranges per partition), the counts of what it meant to send (valid, irrelevant, each bad kind,
duplicate copies) and a digest of the landable event ids. The Spark side
(``spark_apps/reconcile.py``) finds the lake and dead-letter rows whose Kafka coordinates fall
in those ranges and measures them; :func:`account` compares the two and names every problem.

Records an operator quarantined (``stream_control`` action ``quarantine``) are dead-lettered
with reason ``quarantined`` whatever they were (valid, invalid or a copy): they count as
accounted for, in their own column, and the run's other checks make room for them. So are
records Kafka's retention deleted before the stream read them, in a gap an operator accepted
(``stream_accepted_gaps``, recorded by the launch's retention guard): they never reached the
stream, and count in their own column (``lost_accepted``) instead of as missing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from include.events import contract
from include.events.runs import LANDABLE_KINDS as LANDABLE


@dataclass(frozen=True)
class Produced:
    run_id: str
    events: int
    by_kind: dict[str, int]
    id_digest: str

    @property
    def landable(self) -> int:
        return sum(self.by_kind.get(k, 0) for k in LANDABLE)

    @property
    def copies(self) -> int:
        return self.by_kind.get("duplicate", 0)

    @property
    def invalid(self) -> int:
        return self.events - self.landable - self.copies


@dataclass(frozen=True)
class Found:
    """What the lake and the dead-letter path hold at the run's Kafka coordinates."""

    lake_rows: int
    lake_ids: int  # distinct event ids among them
    lake_digest: str  # digest of those distinct ids
    landed_elsewhere_too: int  # of those ids, how many also landed at other coordinates
    dead_rows: int
    dead_coordinates: int  # distinct (partition, offset) among them
    quarantined: int = 0  # of those coordinates, how many an operator quarantined
    lost_accepted: int = 0  # the run's offsets in a retention gap an operator accepted


@dataclass
class Account:
    run_id: str
    produced: int
    landed: int
    dead_lettered: int
    dropped_copies: int
    missing: int
    duplicated: int
    quarantined: int = 0
    lost_accepted: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ok": self.ok}


def account(p: Produced, f: Found) -> Account:
    q, g = f.quarantined, f.lost_accepted
    dead_other = f.dead_coordinates - q  # dead-lettered by the contract
    dropped = p.events - f.lake_rows - f.dead_rows  # coordinates in neither place
    missing_landed = max(0, p.landable - f.lake_ids)
    missing_dead = max(0, p.invalid - dead_other)
    # The quarantine and an accepted gap may each hold any kind of record.
    missing = max(0, missing_landed + missing_dead - q - g)
    duplicated = (
        (f.lake_rows - f.lake_ids) + f.landed_elsewhere_too + (f.dead_rows - f.dead_coordinates)
    )
    a = Account(
        run_id=p.run_id,
        produced=p.events,
        landed=f.lake_ids,
        dead_lettered=f.dead_coordinates,
        dropped_copies=max(0, dropped - g),
        missing=missing,
        duplicated=duplicated,
        quarantined=q,
        lost_accepted=g,
    )
    if q or g:
        if missing:
            a.problems.append(
                f"{missing} event(s) produced but neither landed, dead-lettered, quarantined "
                "nor in an accepted retention gap"
            )
    else:
        if missing_landed:
            a.problems.append(f"{missing_landed} valid event(s) produced but not in the lake")
        if missing_dead:
            a.problems.append(f"{missing_dead} invalid event(s) produced but not dead-lettered")
    if f.lake_ids > p.landable:
        a.problems.append(
            f"{f.lake_ids - p.landable} more event(s) landed than valid ones were produced"
        )
    if dead_other > p.invalid:
        a.problems.append(f"{dead_other - p.invalid} valid event(s) were dead-lettered")
    if (
        not (q or g)
        and not missing_landed
        and f.lake_ids == p.landable
        and f.lake_digest != p.id_digest
    ):
        a.problems.append("the landed event ids differ from the produced ones (digest)")
    if duplicated:
        a.problems.append(f"{duplicated} event(s) landed more than once")
    # Coordinates in neither place: the copies the deduplication dropped (less the quarantined
    # ones, dead-lettered) and the records of an accepted gap.
    if not (p.copies - q <= dropped <= p.copies + g) and not a.problems:
        a.problems.append(
            f"{dropped} record(s) are in neither the lake nor the dead letters, "
            f"but {p.copies} duplicate copies were produced"
            + (f" and {g} record(s) lie in an accepted retention gap" if g else "")
        )
    return a


def lost_in_gaps(
    ranges: Mapping[str, Sequence[Sequence[int]]],
    gaps: Mapping[int, Sequence[tuple[int, int]]],
) -> int:
    """How many of a run's offsets (``ranges``: partition -> [first, last] spans, as
    ``ingest_runs.offset_ranges`` holds them) lie in accepted retention gaps (``gaps``:
    partition -> (first, last) offsets, :func:`include.supervision.control.accepted_gaps`).
    Every bound is inclusive; a run's spans do not overlap. A gap accepted again (a launch
    that failed before the stream moved past it finds it again) overlaps the first and is
    counted once."""
    lost = 0
    for partition, spans in ranges.items():
        merged: list[list[int]] = []
        for g_lo, g_hi in sorted(gaps.get(int(partition), ())):
            if merged and g_lo <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], g_hi)
            else:
                merged.append([g_lo, g_hi])
        for lo, hi in spans:
            for g_lo, g_hi in merged:
                lost += max(0, min(int(hi), g_hi) - max(int(lo), g_lo) + 1)
    return lost


# The figures of an account, in the order reports show them.
COLUMNS = (
    "produced",
    "landed",
    "dead_lettered",
    "quarantined",
    "lost_accepted",
    "dropped_copies",
    "missing",
    "duplicated",
)


def summarize(accounts: list[Account]) -> dict[str, Any]:
    totals = {k: sum(getattr(a, k) for a in accounts) for k in COLUMNS}
    return {
        "runs": len(accounts),
        **totals,
        "ok": all(a.ok for a in accounts),
        "problems": {a.run_id: a.problems for a in accounts if a.problems},
    }


# Beyond the contract's bounds, how far from a run the day partitions holding its events may
# be: the clocks of the producer's host, of Postgres (which stamps a run when it is recorded)
# and of the stream's driver may differ, and a run may be recorded after it ended.
READ_MARGIN = timedelta(days=1)


@dataclass(frozen=True)
class ReadDays:
    """The day partitions a reconciliation reads, first and last (inclusive): the lake's
    event days and the dead letters' detection days."""

    lake: tuple[date, date]
    dead_letters: tuple[date, date]

    @staticmethod
    def span(first: date, last: date) -> list[date]:
        return [first + timedelta(days=n) for n in range((last - first).days + 1)]

    def as_dict(self) -> dict[str, list[str]]:
        return {
            "lake": [d.isoformat() for d in self.lake],
            "dead_letters": [d.isoformat() for d in self.dead_letters],
        }


def read_days(runs: Iterable[tuple[datetime, float | None]], now: datetime) -> ReadDays | None:
    """The day partitions that can hold the events of ``runs`` (each: when it was recorded,
    and how many seconds it ran), read at ``now``; ``None`` (read every day) when a run's
    duration was not recorded (before migration 0007) or there is no run.

    A run's events are processed from its start on, and no later than ``now``. The stream
    lands an event only if its event time lies within the contract's bounds around the batch's
    processing time (``MAX_PAST_AGE_DAYS`` before, ``MAX_FUTURE_SKEW_SECONDS`` after), and
    the lake's day partition is the event time's date: so the lake's days run from the first
    start less the maximum age to ``now`` plus the skew. A dead letter's day is its processing
    time's: from the first start to ``now``. Each side is widened by :data:`READ_MARGIN`.
    Copies of an event share its event time, hence its day: an event landed twice is found.
    Without the bounds, an hourly reconciliation opened every file the lake ever held."""
    starts = []
    for recorded, seconds in runs:
        if seconds is None:
            return None
        starts.append(recorded.astimezone(UTC) - timedelta(seconds=seconds))
    if not starts:
        return None
    now = now.astimezone(UTC)  # the partitions are UTC days
    first = min(starts) - READ_MARGIN
    oldest = first - timedelta(days=contract.MAX_PAST_AGE_DAYS)
    newest = now + timedelta(seconds=contract.MAX_FUTURE_SKEW_SECONDS) + READ_MARGIN
    return ReadDays(
        lake=(oldest.date(), newest.date()),
        dead_letters=(first.date(), (now + READ_MARGIN).date()),
    )


def window(params: dict, interval_start: Any = None, interval_end: Any = None) -> dict[str, str]:
    """The reconciliation window: ``since``/``until`` params if given, else the run's data
    interval shifted back by ``settle_minutes`` (a manual run without an interval: the last
    24 hours before now - settle)."""
    settle = timedelta(minutes=int(params.get("settle_minutes") or 0))
    if interval_end is None:
        interval_end = datetime.now(UTC)
        interval_start = interval_end - timedelta(hours=24)
    since = params.get("since") or (interval_start - settle).isoformat()
    until = params.get("until") or (interval_end - settle).isoformat()
    for name, value in (("since", since), ("until", until)):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError as exc:
            raise ValueError(f"param `{name}`={value!r} is not an ISO time") from exc
        if parsed.tzinfo is None:
            raise ValueError(f"param `{name}`={value!r} needs a time zone (e.g. Z)")
    return {"since": since, "until": until}
