"""The chaos harness's pure parts: the tally (the oracle), the fault plan, the dependency wait,
the report's Markdown. The soak itself runs on the real stack (tests/integration/test_chaos.py)."""

from __future__ import annotations

import time

import pytest

from devstack import chaos
from include.events.generator import EXPECTED_REASON_PREFIX, generate
from include.events.runs import LANDABLE_KINDS, id_digest
from include.events.tally import Tally, minute_of
from include.events.validation import check
from include.supervision import dependencies


def test_tally_counts_what_passes_through_and_nothing_else():
    events = generate(3_000, seed=3, bad_share=0.1, duplicate_share=0.05, late_share=0.05)
    tally = Tally()
    taken = list(zip(range(1_000), tally.counted(iter(events)), strict=False))
    assert tally.events == len(taken) == 1_000
    first = [p for _, p in taken]
    landable = {p.event_id for p in first if p.kind in LANDABLE_KINDS}
    assert tally.landable == len(landable)
    purchases = [p for p in first if p.kind == "valid" and p.event_type == "purchase"]
    assert sum(r["purchases"] for r in tally.sales.values()) == len(purchases)
    assert round(sum(r["revenue"] for r in tally.sales.values()), 2) == round(
        sum(p.revenue for p in purchases), 2
    )
    assert tally.days == {
        minute_of(p.event_time_ms)[:10] for p in first if p.kind in LANDABLE_KINDS
    }
    # The id hashes are the digest's terms: the same set gives the producer's digest.
    assert f"{sum(tally.ids) % (1 << 128):032x}" == id_digest(landable)


def test_each_bad_kind_is_refused_for_the_reason_the_generator_expects():
    events = generate(20_000, seed=5, bad_share=0.2)
    seen = set()
    for p in events:
        if p.kind in EXPECTED_REASON_PREFIX:
            _, reason = check(p.value, now_micros=int(time.time() * 1e6))
            assert reason is not None and reason.startswith(EXPECTED_REASON_PREFIX[p.kind]), (
                p.kind,
                reason,
            )
            seen.add(p.kind)
    assert seen == set(EXPECTED_REASON_PREFIX)


def test_the_fault_plan_is_seeded_and_names_unknown_faults():
    assert chaos.plan(chaos.DEFAULT, 1) == chaos.plan(chaos.DEFAULT, 1)
    assert sorted(chaos.plan(chaos.DEFAULT, 1)) == sorted(chaos.DEFAULT.faults)
    assert len(chaos.DEFAULT.faults) >= 20 and chaos.DEFAULT.events >= 1_000_000
    bad = chaos.Profile("x", 10, ("driver_kill", "meteor"), 1.0)
    with pytest.raises(chaos.ChaosError, match="meteor"):
        chaos.plan(bad, 1)


def test_waiting_for_dependencies():
    clock = [0.0]

    def sleep(s: float) -> None:
        clock[0] += s

    up = {"kafka": lambda: None}
    assert dependencies.wait_until_up(up, give_up_after_s=60) == ([], True)

    answers = iter([False, False, True])

    def flaky():
        if not next(answers):
            raise ConnectionError("connection refused\nmore")

    told = []
    down, back = dependencies.wait_until_up(
        {"s3": flaky}, give_up_after_s=60, on_down=told.append, sleep=sleep, clock=lambda: clock[0]
    )
    assert (down, back) == (["s3: connection refused"], True)
    assert told == [["s3: connection refused"]]  # once, when the wait began

    def never():
        raise TimeoutError()

    clock[0] = 0.0
    down, back = dependencies.wait_until_up(
        {"postgres": never}, give_up_after_s=30, sleep=sleep, clock=lambda: clock[0]
    )
    assert (down, back) == (["postgres: TimeoutError"], False)
    assert clock[0] >= 30


def test_the_default_plan_holds_the_issues_faults_and_a_compaction_killed_mid_commit():
    planned = chaos.DEFAULT.faults
    assert planned.count("driver_kill") >= 5
    for kind in (
        "driver_freeze",
        "broker_kill",
        "broker_pause",
        "s3_down",
        "postgres_restart",
        "scheduler_kill",
        "dag_processor_kill",
        "compaction_kill_writing",
        "compaction_kill_committed",
        "s3_partition",
        "disk_full",
    ):
        assert kind in planned, kind
    # A compaction fault recovers when Airflow's retry verified the day, not at the stream's
    # next batch; it is no longer listed as not injected.
    assert chaos.RECOVERY["compaction_kill_committed"] is chaos.await_compaction
    assert len(planned) >= 20 and set(planned) <= set(chaos.FAULTS)


def test_a_fault_this_machine_cannot_inject_is_named_with_its_reason(monkeypatch):
    from devstack import scratchfs, settings
    from devstack.services import Context

    ctx = Context(settings.load({}), None, {})  # type: ignore[arg-type]
    plan = chaos.plan(chaos.DEFAULT, seed=7)
    monkeypatch.setattr(scratchfs, "unavailable", lambda scratch: "mounting needs root")
    assert chaos.machine_limits(ctx, plan) == {"disk_full": "mounting needs root"}
    monkeypatch.setattr(scratchfs, "unavailable", lambda scratch: "")
    assert chaos.machine_limits(ctx, plan) == {}
    assert chaos.machine_limits(ctx, list(chaos.QUICK.faults)) == {}


def _report(**fault) -> dict:
    f = {"kind": "driver_kill", "detail": "SIGKILL", "recovery_s": 12.0, "needed_operator": ""}
    return {
        "traffic_error": "",
        "oracles": {"lake": {"ok": True}},
        "faults": [f | fault],
        "operator_restart": {"recovery_s": 30.0},
    }


def test_the_verdict_fails_on_a_fault_not_injected_not_recovered_or_needing_a_human():
    assert chaos.verdict(_report())
    assert not chaos.verdict(_report(detail=f"{chaos.NOT_INJECTED_MARK} no driver"))
    assert not chaos.verdict(_report(recovery_s=None))
    assert not chaos.verdict(_report(needed_operator="halted"))
    assert not chaos.verdict(_report() | {"oracles": {"lake": {"ok": False}}})
