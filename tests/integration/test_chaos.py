"""The chaos soak's quick profile (``make chaos QUICK=1``) on the real stack: live traffic from
recorded producer runs through the stream the scheduler launches and ``stream_health``
supervises, while a seeded plan of five faults hits the driver and the services under it.

Every fault must be recovered from without a human (the stream commits a batch again), an
operator's restart triggered from the Airflow CLI must run and hand over to a new driver, and
the four oracles (devstack/chaos.py) must hold: nothing lost, nothing doubled, the dead letters
and the live aggregates equal to what the generator recorded, Iceberg holding every event.

It stops and starts the stack's shared services, so ``make test`` runs it alone, after the
other tests (marker ``chaos``)."""

from __future__ import annotations

import pytest

from devstack import chaos
from tests.integration.conftest import production_context

pytestmark = pytest.mark.chaos

SEED = 20261202


def test_the_quick_soak_loses_nothing_doubles_nothing_and_needs_no_human(ctx):
    ctx = production_context()  # the stream's real paths and users, as the scheduler runs it
    try:
        report = chaos.run(ctx, chaos.QUICK, SEED)
    finally:
        chaos.stop_stream(ctx)
    chaos.write_report(report, ctx.settings.logs_dir / "chaos-quick.json", None)
    print(chaos.markdown(report))
    assert not report["traffic_error"], report["traffic_error"]
    assert report["events"] >= chaos.QUICK.events
    assert len(report["faults"]) == len(chaos.QUICK.faults)
    for fault in report["faults"]:
        assert not fault["detail"].startswith(chaos.NOT_INJECTED_MARK), fault
        assert fault["recovery_s"] is not None, f"not recovered: {fault}"
        assert not fault["needed_operator"], f"needed a human: {fault}"
    restart = report["operator_restart"]
    assert restart["recovery_s"] is not None, f"the CLI's stream_control restart: {restart}"
    assert restart["new_pid"] != restart["old_pid"]
    for name, verdict in report["oracles"].items():
        assert verdict["ok"], (name, verdict)
    assert report["ok"]
