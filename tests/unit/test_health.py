"""Classification of the stream's health from its lease, progress and the broker's offsets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from include.supervision import health
from include.supervision.health import Batch, Driver, Policy

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
LIVE = Driver(pid=42, host="h", heartbeat_age_s=5, expired=False, alive=True)


def batch(query="lake", age_s=10, ends=None, n=100, rate_in=50.0, rate_out=100.0, ms=1000, dl=0):
    return Batch(
        query, NOW - timedelta(seconds=age_s), n, rate_in, rate_out, ms, ends or {0: 100}, dl
    )


def test_healthy_when_caught_up_and_recent():
    h = health.assess(NOW, LIVE, [batch()], {0: 100}, 0)
    assert h.status == health.HEALTHY and h.metrics["total_lag"] == 0


def test_idle_stream_without_new_batches_is_not_stalled():
    # No new data: Spark reports no batches, but the driver heart-beats: healthy.
    h = health.assess(NOW, LIVE, [batch(age_s=3600)], {0: 100}, 0)
    assert h.status == health.HEALTHY


def test_frozen_driver_is_stalled():
    frozen = Driver(42, "h", heartbeat_age_s=300, expired=True, alive=True)
    h = health.assess(NOW, frozen, [batch()], {0: 100}, 0)
    assert h.status == health.STALLED and "driver pid 42" in h.reasons[0]


def test_data_waiting_without_batches_is_stalled():
    h = health.assess(NOW, LIVE, [batch(age_s=600)], {0: 500}, 0)
    assert h.status == health.STALLED and "400 records waiting" in h.reasons[0]
    assert h.metrics["lag"] == {"0": 400}


def test_no_driver_is_down_unless_an_operator_stopped_it():
    assert health.assess(NOW, None, [], {0: 5}, 0).status == health.DOWN
    gone = Driver(42, "h", 1, False, alive=False)
    assert health.assess(NOW, gone, [], {0: 5}, 0).status == health.DOWN
    assert health.assess(NOW, None, [], {0: 5}, 0, operator_stopped=True).status == health.STOPPED


def test_degraded_reasons():
    slow = [batch(age_s=100 - i, ms=1000) for i in range(5)] + [
        batch(age_s=10 - i, ms=9000) for i in range(3)
    ]
    h = health.assess(NOW, LIVE, slow, {0: 100}, 0)
    assert h.status == health.DEGRADED and "batches take 9000 ms" in h.reasons[0]

    behind = [batch(age_s=30 - i, rate_in=500.0, rate_out=100.0) for i in range(3)]
    h = health.assess(NOW, LIVE, behind, {0: 900}, 0)
    assert h.status == health.DEGRADED and "slower than input" in h.reasons[0]

    dead = [batch(n=100), batch(n=100, dl=40)]
    h = health.assess(NOW, LIVE, dead, {0: 100}, 0)
    assert h.status == health.DEGRADED and "dead-letter rate 20.0%" in h.reasons[0]

    h = health.assess(NOW, LIVE, [batch()], {0: 100}, failures_in_window=2)
    assert h.status == health.DEGRADED and "2 failed driver run(s)" in h.reasons[0]


def test_lag_is_read_from_the_latest_lake_batch():
    batches = [batch(age_s=20, ends={0: 10, 1: 5}), batch(age_s=5, ends={0: 40, 1: 5})]
    assert health.lag_per_partition(batches, {0: 50, 1: 5, 2: 7}) == {0: 10, 1: 0, 2: 7}


def test_crash_loop_rule():
    p = Policy(max_restarts=3)
    assert not health.crash_loop(2, p) and health.crash_loop(3, p)
