"""The reconciliation's accounting and the producer's offset ranges."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from include.events import contract
from include.events.runs import OffsetRanges
from include.supervision.reconcile import (
    READ_MARGIN,
    Found,
    Produced,
    ReadDays,
    account,
    lost_in_gaps,
    read_days,
    summarize,
    window,
)

RUN = Produced(
    "r1",
    events=100,
    by_kind={"valid": 80, "irrelevant": 5, "duplicate": 3, "malformed_json": 7, "oversize": 5},
    id_digest="d",
)


def found(**kw) -> Found:
    base = dict(
        lake_rows=85,
        lake_ids=85,
        lake_digest="d",
        landed_elsewhere_too=0,
        dead_rows=12,
        dead_coordinates=12,
    )
    base.update(kw)
    return Found(**base)


def test_everything_accounted_for():
    a = account(RUN, found())
    assert a.ok, a.problems
    assert (a.landed, a.dead_lettered, a.dropped_copies, a.missing, a.duplicated) == (
        85,
        12,
        3,
        0,
        0,
    )


def test_missing_events_are_named():
    a = account(RUN, found(lake_rows=80, lake_ids=80, dead_rows=10, dead_coordinates=10))
    assert not a.ok and a.missing == 7
    assert "5 valid event(s) produced but not in the lake" in a.problems
    assert "2 invalid event(s) produced but not dead-lettered" in a.problems


def test_duplicates_within_and_across_coordinates():
    a = account(RUN, found(lake_rows=86, landed_elsewhere_too=2))
    assert not a.ok and a.duplicated == 3
    assert "3 event(s) landed more than once" in a.problems


def test_same_count_but_other_ids_is_caught_by_the_digest():
    a = account(RUN, found(lake_digest="other"))
    assert a.problems == ["the landed event ids differ from the produced ones (digest)"]


def test_quarantined_records_are_accounted_for_whatever_they_were():
    # 4 valid events and 1 copy quarantined: 4 fewer landed, 5 more dead-lettered, 1 less dropped.
    q = found(lake_rows=81, lake_ids=81, dead_rows=17, dead_coordinates=17, quarantined=5)
    a = account(RUN, q)
    assert a.ok, a.problems
    assert (a.quarantined, a.missing) == (5, 0)
    # 4 quarantined but 5 valid events absent from the lake: one is missing.
    short = found(lake_rows=80, lake_ids=80, dead_rows=16, dead_coordinates=16, quarantined=4)
    assert account(RUN, short).problems == [
        "1 event(s) produced but neither landed, dead-lettered, quarantined nor in an accepted "
        "retention gap"
    ]
    assert summarize([a])["quarantined"] == 5


def test_records_of_an_accepted_retention_gap_are_counted_apart_from_missing():
    # Retention deleted 6 of the run's records unread (4 valid, 1 copy, 1 invalid) and an
    # operator accepted the gap: 4 fewer landed, 1 fewer dead-lettered, 6 in neither place.
    lost = found(lake_rows=81, lake_ids=81, dead_rows=11, dead_coordinates=11, lost_accepted=6)
    a = account(RUN, lost)
    assert a.ok, a.problems
    assert (a.lost_accepted, a.missing, a.dropped_copies) == (6, 0, 2)
    assert summarize([a])["lost_accepted"] == 6
    # The same lake without the acceptance: the records are missing, named as such.
    unaccepted = account(RUN, found(lake_rows=81, lake_ids=81, dead_rows=11, dead_coordinates=11))
    assert unaccepted.problems[:2] == [
        "4 valid event(s) produced but not in the lake",
        "1 invalid event(s) produced but not dead-lettered",
    ]
    # More absent than the gap holds: the rest is missing.
    short = found(lake_rows=75, lake_ids=75, dead_rows=11, dead_coordinates=11, lost_accepted=6)
    assert account(RUN, short).problems == [
        "5 event(s) produced but neither landed, dead-lettered, quarantined nor in an accepted "
        "retention gap"
    ]


@pytest.mark.parametrize(
    ("ranges", "gaps", "lost"),
    [
        ({"0": [[0, 99]]}, {}, 0),
        ({"0": [[0, 99]]}, {0: [(90, 149)]}, 10),  # the gap runs past the run's end
        ({"0": [[100, 199]]}, {0: [(50, 109)]}, 10),  # and starts before its start
        ({"0": [[0, 9], [20, 29]]}, {0: [(5, 24)]}, 10),  # across two spans
        ({"0": [[0, 99]], "1": [[0, 99]]}, {1: [(0, 4)], 2: [(0, 99)]}, 5),  # per partition
        ({"0": [[0, 99]]}, {0: [(10, 19), (10, 29)]}, 20),  # a gap accepted twice: once
        ({"0": [[0, 99]]}, {0: [(10, 19), (20, 29)]}, 20),  # two adjacent gaps
    ],
)
def test_a_runs_offsets_in_accepted_gaps(ranges, gaps, lost):
    assert lost_in_gaps(ranges, gaps) == lost


def test_summary_totals():
    s = summarize([account(RUN, found()), account(RUN, found(lake_rows=84, lake_ids=84))])
    assert s["runs"] == 2 and s["produced"] == 200 and s["missing"] == 1 and not s["ok"]


def test_offset_ranges_merge():
    r = OffsetRanges()
    for p, o in [(0, 5), (0, 6), (0, 7), (1, 0), (0, 9), (0, 8), (1, 1)]:
        r.add(p, o)
    assert r.result() == {0: [[5, 9]], 1: [[0, 1]]}


def test_window_from_params_or_interval():
    start, end = datetime(2026, 11, 25, 10, tzinfo=UTC), datetime(2026, 11, 25, 11, tzinfo=UTC)
    w = window({"settle_minutes": 60}, start, end)
    assert w == {"since": "2026-11-25T09:00:00+00:00", "until": "2026-11-25T10:00:00+00:00"}
    assert window({"since": "2026-11-01T00:00Z", "until": "2026-11-02T00:00Z"}, start, end) == {
        "since": "2026-11-01T00:00Z",
        "until": "2026-11-02T00:00Z",
    }
    with pytest.raises(ValueError, match="param `since`"):
        window({"since": "yesterday", "until": "2026-11-02T00:00Z"}, start, end)


def test_read_days_cover_every_event_time_the_contract_lets_land():
    now = datetime(2026, 12, 5, 23, 50, tzinfo=UTC)
    # Two runs: the earlier one ran 2 hours and was recorded at 10:00 on the 4th.
    runs = [(datetime(2026, 12, 4, 10, 0, tzinfo=UTC), 7200.0), (now, 30.0)]
    days = read_days(runs, now)
    start = datetime(2026, 12, 4, 8, 0, tzinfo=UTC)
    # The extremes: the earliest event processed at the first run's start, 7 days old; the
    # newest processed now, 15 minutes ahead (the next day's date here).
    oldest = start - timedelta(days=contract.MAX_PAST_AGE_DAYS)
    newest = now + timedelta(seconds=contract.MAX_FUTURE_SKEW_SECONDS)
    first, last = days.lake
    assert first <= oldest.date() and newest.date() == date(2026, 12, 6) <= last
    # ... and a day of margin either side, no more.
    assert first == (oldest - READ_MARGIN).date() == date(2026, 11, 26)
    assert last == (newest + READ_MARGIN).date() == date(2026, 12, 7)
    # Dead letters are filed under the day the stream saw them: from the first start to now.
    assert days.dead_letters == (date(2026, 12, 3), date(2026, 12, 6))
    assert len(ReadDays.span(*days.lake)) == 12
    assert days.as_dict()["lake"] == ["2026-11-26", "2026-12-07"]


def test_read_days_are_utc_days():
    # 00:30 at +02:00 is 22:30 UTC the day before.
    recorded = datetime(2026, 12, 5, 0, 30, tzinfo=timezone(timedelta(hours=2)))
    days = read_days([(recorded, 0.0)], recorded)
    assert days.dead_letters[0] == date(2026, 12, 3)


def test_read_days_read_everything_without_a_run_duration():
    now = datetime(2026, 12, 5, tzinfo=UTC)
    assert read_days([(now, 10.0), (now, None)], now) is None  # recorded before 0007
    assert read_days([], now) is None
