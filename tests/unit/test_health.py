"""Classification of the stream's health from its lease, its queries' checkpoints and signs of
life, progress and the broker's offsets."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from include.supervision import health
from include.supervision.health import Batch, Driver, Policy, Query

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
LIVE = Driver(pid=42, host="h", heartbeat_age_s=5, expired=False, alive=True)
STARTED = NOW - timedelta(hours=5)


def batch(query="lake", age_s=10, ends=None, n=100, rate_in=50.0, rate_out=100.0, ms=1000, dl=0):
    return Batch(
        query, NOW - timedelta(seconds=age_s), n, rate_in, rate_out, ms, ends or {0: 100}, dl
    )


def q(name="lake", committed=None, in_flight_s=None, alive_s=10):
    alive = None if alive_s is None else NOW - timedelta(seconds=alive_s)
    return Query(name, {0: 100} if committed is None else committed, in_flight_s, alive)


def assess(queries, batches, log_end, failures=0, **kw):
    kw.setdefault("driver_started", STARTED)
    return health.assess(NOW, kw.pop("driver", LIVE), queries, batches, log_end, failures, **kw)


def test_healthy_when_caught_up_and_recent():
    h = assess([q()], [batch()], {0: 100})
    assert h.status == health.HEALTHY and h.metrics["total_lag"] == 0


def test_an_idle_stream_is_healthy_however_long_ago_its_last_batch_ran():
    # Hours without traffic: no progress row in any window, no recent idle report either;
    # the checkpoint committed the log end, so nothing waits: healthy (idle), never stalled.
    h = assess([q(alive_s=None)], [], {0: 100})
    assert h.status == health.HEALTHY and h.metrics["idle"] is True
    assert h.reasons == ["idle: nothing waits to be read"]


def test_sparse_traffic_is_not_a_stall():
    # The last batch ran 10 minutes ago, one record arrived since; the query reported itself
    # idle 5 s ago (it checks every trigger): the record is picked up by its next trigger.
    h = assess([q(committed={0: 99}, alive_s=5)], [batch(age_s=600)], {0: 100})
    assert h.status == health.HEALTHY and h.metrics["total_lag"] == 1


def test_a_long_catch_up_batch_is_not_a_stall_until_its_limit():
    # Typical batches take 60 s: the limit is 3x that (180 s) rather than stall_after_s.
    batches = [batch(age_s=900 - 60 * i, ms=60_000) for i in range(5)]
    running = q(committed={0: 0}, in_flight_s=170, alive_s=600)
    assert assess([running], batches, {0: 500_000}).status != health.STALLED
    wedged = q(committed={0: 0}, in_flight_s=200, alive_s=600)
    h = assess([wedged], batches, {0: 500_000})
    assert h.status == health.STALLED
    assert "query lake: a batch has run 200s without committing (limit 180s)" in h.reasons[0]


def test_a_relaunched_driver_re_running_a_planned_batch_is_not_wedged():
    # The batch was planned 10 minutes ago by a driver that was killed; the new driver took
    # the lease 20 s ago and re-runs it: it has run for 20 s, not 600.
    replay = q(committed={0: 0}, in_flight_s=600, alive_s=600)
    relaunched = NOW - timedelta(seconds=20)
    assert assess([replay], [], {0: 500}, driver_started=relaunched).status == health.HEALTHY


def test_a_relaunched_drivers_first_batch_gets_the_time_to_replay_its_state():
    # Killed 5 minutes after its last snapshot at ~10,000 events/s: 631 MiB of changelogs to
    # replay (~2 min on 2 cores) before the re-run batch can commit. At 2 MiB/s the first
    # batch may run 120 s + 316 s; a batch of that driver that runs later gets 120 s again.
    relaunched = NOW - timedelta(seconds=200)
    policy = Policy(replay_bytes_per_s=2 * 2**20)
    replaying = Query("lake", {0: 0}, 600, NOW - timedelta(seconds=600), 631 * 2**20)
    h = assess([replaying], [], {0: 500}, driver_started=relaunched, policy=policy)
    assert h.status == health.HEALTHY and h.metrics["queries"]["lake"]["replay_bytes"] > 0
    late = NOW - timedelta(seconds=440)
    h = assess([replaying], [], {0: 500}, driver_started=late, policy=policy)
    assert h.status == health.STALLED and h.reasons == [
        "query lake: a batch has run 440s without committing (limit 436s, 316s of it for the "
        "first batch's replay of 631 MiB of state changelogs): wedged"
    ]
    # The driver already finished a batch: no replay left, its batches get the usual limit.
    later = Query("lake", {0: 0}, 130, NOW - timedelta(seconds=130), 631 * 2**20)
    h = assess([later], [batch(age_s=130)], {0: 500}, driver_started=relaunched, policy=policy)
    assert h.status == health.STALLED and "(limit 120s): wedged" in h.reasons[0]
    # Without state to replay, a relaunched driver's first batch gets the usual limit too.
    bare = Query("lake", {0: 0}, 600, NOW - timedelta(seconds=600), 0)
    h = assess([bare], [], {0: 500}, driver_started=relaunched, policy=policy)
    assert h.status == health.STALLED and "(limit 120s): wedged" in h.reasons[0]


def test_each_query_is_judged_on_its_own():
    other = q("other", in_flight_s=900, alive_s=900)  # wedged in its sink
    h = assess([q(), other], [batch(), batch("other", age_s=900)], {0: 100})
    assert h.status == health.STALLED and h.reasons == [
        "query other: a batch has run 900s without committing (limit 120s): wedged"
    ]


def test_frozen_driver_is_stalled():
    frozen = Driver(42, "h", heartbeat_age_s=300, expired=True, alive=True)
    h = assess([q()], [batch()], {0: 100}, driver=frozen)
    assert h.status == health.STALLED and "driver pid 42" in h.reasons[0]


def test_data_waiting_and_no_sign_of_life_is_stalled():
    h = assess([q(committed={0: 100}, alive_s=600)], [batch(age_s=600)], {0: 500})
    assert h.status == health.STALLED
    assert "query lake: 400 records waiting" in h.reasons[0] and "for 600s" in h.reasons[0]
    assert h.metrics["lag"] == {"0": 400}


def test_a_driver_that_just_started_gets_its_grace():
    # No sign of life yet, but the driver took the lease 30 s ago (< stall_after_s).
    fresh = q(committed={}, alive_s=None)
    just = NOW - timedelta(seconds=30)
    assert assess([fresh], [], {0: 500}, driver_started=just).status == health.HEALTHY
    h = assess([fresh], [], {0: 500}, driver_started=None)
    assert h.status == health.STALLED and "for ever" in h.reasons[0]


def test_no_driver_is_down_unless_an_operator_stopped_or_supervision_halted_it():
    assert assess([q()], [], {0: 5}, driver=None).status == health.DOWN
    gone = Driver(42, "h", 1, False, alive=False)
    assert assess([q()], [], {0: 5}, driver=gone).status == health.DOWN
    why = "halted by stream_health: crash loop (stream_control)"
    stopped = assess([q()], [], {0: 5}, driver=None, stopped=why)
    assert (stopped.status, stopped.reasons) == (health.STOPPED, [why])


def test_degraded_reasons():
    slow = [batch(age_s=100 - i, ms=1000) for i in range(5)] + [
        batch(age_s=10 - i, ms=9000) for i in range(3)
    ]
    h = assess([q()], slow, {0: 100})
    assert h.status == health.DEGRADED and "batches take 9000 ms" in h.reasons[0]

    behind = [batch(age_s=30 - i, rate_in=500.0, rate_out=100.0) for i in range(3)]
    h = assess([q(alive_s=5)], behind, {0: 900})
    assert h.status == health.DEGRADED and "slower than input" in h.reasons[0]

    dead = [batch(n=100), batch(n=100, dl=40)]
    h = assess([q()], dead, {0: 100})
    assert h.status == health.DEGRADED and "dead-letter rate 20.0%" in h.reasons[0]

    h = assess([q()], [batch()], {0: 100}, failures=2)
    assert h.status == health.DEGRADED and "2 failed driver run(s)" in h.reasons[0]


def test_lag_is_the_log_end_minus_the_committed_offsets():
    assert health.lag_per_partition({0: 40, 1: 5}, {0: 50, 1: 5, 2: 7}) == {0: 10, 1: 0, 2: 7}
    assert health.lag_per_partition(None, {0: 3}) == {0: 3}
    # Several queries: per partition, the one furthest behind.
    h = assess([q(committed={0: 90, 1: 9}), q("b", committed={0: 95, 1: 2})], [], {0: 100, 1: 9})
    assert h.metrics["lag"] == {"0": 10, "1": 7}
    assert h.metrics["queries"]["b"]["lag"] == 12


def test_crash_loop_rule():
    p = Policy(max_restarts=3)
    assert not health.crash_loop(2, p) and health.crash_loop(3, p)
