"""The supervision DAGs' task layer (include/supervision/tasks.py) through its seams: the
clients it gets from ``_kafka_admin``, ``_s3`` and ``_postgres``. S3 is moto (our adapter code
reading Spark's checkpoint files); the Kafka admin and the Postgres connection are stand-ins
that answer or fail. The same paths on the real stack: tests/integration/test_supervision.py."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from types import SimpleNamespace

import pytest
from moto import mock_aws

from include.endpoints import S3Endpoint
from include.lake.s3 import ensure_bucket
from include.supervision import checkpoint, health, tasks

PARAMS = {
    "topic": "events",
    "bucket": "lake",
    "checkpoint_prefix": "_checkpoints/stream_events",
    "pg_schema": "analytics",
}


class FakeCursor:
    def __init__(self, conn: FakeConn):
        self.conn = conn

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def execute(self, sql, args=None):
        self.conn.executed.append((" ".join(sql.split()), args))

    def fetchone(self):
        return self.conn.rows[0]

    def fetchall(self):
        return self.conn.rows


class FakeConn:
    """A Postgres connection that returns ``rows`` to every query and records the SQL."""

    def __init__(self, rows=()):
        self.rows = list(rows)
        self.executed: list = []
        self.closed = False

    def cursor(self):
        return FakeCursor(self)

    def commit(self):
        pass

    def close(self):
        self.closed = True


class Unreachable:
    def __init__(self, error: str):
        self.error = error

    def list_topics(self, *args, **kwargs):
        raise RuntimeError(self.error)


# --- dependencies -----------------------------------------------------------------------------


def test_dependencies_down_names_each_one_with_the_first_line_of_its_error(monkeypatch):
    with mock_aws():
        s3 = S3Endpoint(access_key="k" * 16, secret_key="s" * 32).client()
        ensure_bucket(s3, "lake")
        monkeypatch.setattr(tasks, "_s3", lambda: s3)
        monkeypatch.setattr(
            tasks, "_kafka_admin", lambda: Unreachable("KafkaError: transport\nsecond line")
        )
        assert tasks._dependencies_down(PARAMS) == ["kafka: KafkaError: transport"]

        answers = SimpleNamespace(list_topics=lambda *a, **k: SimpleNamespace(topics={}))
        monkeypatch.setattr(tasks, "_kafka_admin", lambda: answers)
        assert tasks._dependencies_down(PARAMS) == []
        down = tasks._dependencies_down(dict(PARAMS, bucket="gone"))
    assert len(down) == 1 and down[0].startswith("s3: ") and "404" in down[0]


# --- the launch gate ---------------------------------------------------------------------------


def test_gate_waits_then_gives_up_after_gate_timeout_s(monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    monkeypatch.setattr(tasks, "_gate_open", lambda params: False)
    run = SimpleNamespace(start_date=datetime.now(UTC) - timedelta(seconds=100))
    assert tasks.gate(dict(PARAMS, gate_timeout_s=0), run) is False  # no limit: waits
    assert tasks.gate(dict(PARAMS, gate_timeout_s=600), run) is False
    with pytest.raises(AirflowFailException, match=r"gate_timeout_s=60\)"):
        tasks.gate(dict(PARAMS, gate_timeout_s=60), run)
    monkeypatch.setattr(tasks, "_gate_open", lambda params: True)
    assert tasks.gate(dict(PARAMS, gate_timeout_s=60), run) is True


def test_policy_from_params_with_defaults():
    assert tasks.policy_from({}) == health.Policy()
    policy = tasks.policy_from({"stall_after_s": "30", "max_restarts": "2"})
    assert (policy.stall_after_s, policy.max_restarts) == (30.0, 2)
    assert policy.restart_window_min == health.Policy().restart_window_min


def test_a_refused_launch_is_raised_even_when_it_cannot_be_recorded(monkeypatch):
    """The refusal reaches Airflow whatever happens to its record (Postgres down too)."""

    def no_postgres(schema):
        raise OSError("connection refused")

    monkeypatch.setattr(tasks, "_postgres", no_postgres)
    monkeypatch.setattr(tasks, "_kafka_admin", lambda: Unreachable("broker down"))
    with pytest.raises(RuntimeError, match="broker down"):
        tasks.preflight(PARAMS)


# --- the health check --------------------------------------------------------------------------


def test_recent_batches_reads_end_offsets_in_either_form_and_dead_letters():
    ts = datetime(2026, 12, 2, 8, 0, tzinfo=UTC)
    rows = [
        # sources as Spark's progress JSON has them: endOffset an object, or a JSON string
        ("lake", ts, 10, 5.0, 9.0, 1200, [{"endOffset": {"events": {"0": 7, "1": 3}}}], None),
        (
            "lake",
            ts + timedelta(seconds=10),
            4,
            1.0,
            2.0,
            800,
            [{"endOffset": json.dumps({"events": {"0": 9}, "other": {"0": 1}})}],
            {"dead_letter": {"dead_lettered": 2}},
        ),
    ]
    conn = FakeConn(rows)
    batches = tasks._recent_batches(conn, "events", minutes=5, per_query=3)
    assert conn.executed[0][1] == (300, 3)
    assert [(b.query, b.input_rows, b.end_offsets, b.dead_lettered) for b in batches] == [
        ("lake", 10, {0: 7, 1: 3}, 0),
        ("lake", 4, {0: 9}, 2),
    ]


def _checkpoint(s3, query: str, planned: int, committed: int | None) -> None:
    root = f"{PARAMS['checkpoint_prefix']}/{query}"
    meta = json.dumps({"batchWatermarkMs": 0, "batchTimestampMs": 0, "conf": {}})
    for n in range(planned + 1):
        body = f"v1\n{meta}\n" + json.dumps({"events": {"0": 100 * (n + 1), "1": 50 * (n + 1)}})
        s3.put_object(Bucket="lake", Key=f"{root}/offsets/{n}", Body=body.encode())
    for n in range((committed or -1) + 1):
        s3.put_object(
            Bucket="lake", Key=f"{root}/commits/{n}", Body=b'v1\n{"nextBatchWatermarkMs":0}'
        )


def test_queries_report_committed_offsets_and_the_age_of_a_planned_batch(monkeypatch):
    from include import pipeline
    from include.analytics import store

    alive = datetime(2026, 12, 2, 7, 59, tzinfo=UTC)
    monkeypatch.setattr(store, "last_signs_of_life", lambda conn: {"lake": alive})
    with mock_aws():
        s3 = S3Endpoint(access_key="k" * 16, secret_key="s" * 32).client()
        ensure_bucket(s3, "lake")
        _checkpoint(s3, "lake", planned=3, committed=2)  # batch 3 planned, not committed
        state = f"{PARAMS['checkpoint_prefix']}/lake/state/0/0"
        for version, size in ((1, 7), (2, 5), (3, 11), (4, 13)):  # batch 3 loads version 3
            s3.put_object(Bucket="lake", Key=f"{state}/{version}.changelog", Body=b"x" * size)
        s3.put_object(Bucket="lake", Key=f"{state}/1.zip", Body=b"x" * 99)
        planned_at = s3.head_object(
            Bucket="lake", Key=f"{PARAMS['checkpoint_prefix']}/lake/offsets/3"
        )["LastModified"]
        now = planned_at + timedelta(seconds=42)  # the database's clock, read by the task
        relaunched = alive + timedelta(minutes=1)  # no sign of life since: its first batch
        queries = tasks._queries(FakeConn([(now,)]), s3, PARAMS, driver_started=relaunched)
        # the same batch, from a driver that has committed a batch since it started, or with
        # no driver: the state is not listed (only a driver's first batch replays it)
        listed = []
        sizes = checkpoint.s3_sizes

        def spied(client, bucket):
            listing = sizes(client, bucket)
            return lambda prefix: (listed.append(prefix), listing(prefix))[1]

        monkeypatch.setattr(checkpoint, "s3_sizes", spied)
        started_earlier = alive - timedelta(minutes=1)
        running = tasks._queries(FakeConn([(now,)]), s3, PARAMS, driver_started=started_earlier)
        driverless = tasks._queries(FakeConn([(now,)]), s3, PARAMS)
    assert [q.name for q in queries] == list(pipeline.STREAM_QUERIES)
    lake = queries[0]
    assert lake.committed == {0: 300, 1: 150}  # batch 2's end: where batch 3 starts
    assert lake.in_flight_s == pytest.approx(42, abs=1)
    assert lake.last_alive == alive
    assert lake.replay_bytes == 5 + 11  # the changelogs after the snapshot, up to version 3
    for later in (running[0], driverless[0]):
        assert (later.in_flight_s is not None, later.replay_bytes) == (True, 0)
    assert not [p for p in listed if "/state/" in p]


def test_queries_without_a_batch_in_flight(monkeypatch):
    from include.analytics import store

    monkeypatch.setattr(store, "last_signs_of_life", lambda conn: {})
    with mock_aws():
        s3 = S3Endpoint(access_key="k" * 16, secret_key="s" * 32).client()
        ensure_bucket(s3, "lake")
        empty = tasks._queries(FakeConn([(datetime.now(UTC),)]), s3, PARAMS)
        _checkpoint(s3, "lake", planned=1, committed=1)
        done = tasks._queries(FakeConn([(datetime.now(UTC),)]), s3, PARAMS)
    assert (empty[0].committed, empty[0].in_flight_s, empty[0].last_alive) == (None, None, None)
    assert (done[0].committed, done[0].in_flight_s) == ({0: 200, 1: 100}, None)


# --- acting on a verdict -----------------------------------------------------------------------


def _report(status: str, failures: int = 0) -> dict:
    return {
        "status": status,
        "reasons": [f"the reason for {status}"],
        "driver": {"pid": 4242, "host": "elsewhere"},
        "metrics": {"failures_in_window": failures},
    }


@pytest.mark.parametrize(
    ("status", "done"),
    [(health.HEALTHY, "none"), (health.DEGRADED, "alerted"), (health.DOWN, "alerted")],
)
def test_only_a_stalled_stream_is_acted_on(monkeypatch, status, done, caplog):
    monkeypatch.setattr(tasks, "_postgres", lambda schema: pytest.fail("no database needed"))
    assert tasks.act_on_health(_report(status), PARAMS) == done
    if done == "alerted":
        assert f"the reason for {status}" in caplog.text


def test_a_stalled_stream_with_restart_off_is_alerted_not_killed(monkeypatch, caplog):
    from include.supervision import driver

    conn = FakeConn()
    monkeypatch.setattr(tasks, "_postgres", lambda schema: conn)
    monkeypatch.setattr(driver, "kill_driver", lambda *a: pytest.fail("must not kill"))
    done = tasks.act_on_health(_report(health.STALLED), dict(PARAMS, restart=False))
    assert done == "alerted"
    assert "stalled (restart disabled)" in caplog.text
    assert conn.closed and conn.executed == []


# --- operations --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "message"),
    [(None, "needs the param `partition`"), ("", "needs"), ("x", r"`partition`='x'")],
)
def test_quarantine_params_are_named(value, message):
    with pytest.raises(ValueError, match=message):
        tasks._int_param({"partition": value}, "partition")
    assert tasks._int_param({"partition": "3"}, "partition") == 3


def _holder(owner: str, pid: int, *, alive: bool = True):
    return SimpleNamespace(
        owner=owner,
        pid=pid,
        expired=False,
        process_gone=lambda: not alive,
        describe=lambda: f"held by driver pid {pid}",
    )


@pytest.mark.parametrize(
    ("state", "launches"), [("running", True), ("stopped", False)], ids=["relaunch", "stopped"]
)
def test_a_retry_adopts_an_orphaned_driver_until_it_ends(monkeypatch, caplog, state, launches):
    """After a scheduler crash the stream task's next try finds the old driver still running:
    it watches it (no second launch the lease would refuse) and goes on only when it ended,
    and not at all when the stream was stopped meanwhile."""
    from airflow.sdk.exceptions import AirflowFailException

    from include.supervision import control, lease

    holders = iter([_holder("a", 11), _holder("a", 11), _holder("a", 11, alive=False)])
    monkeypatch.setattr(tasks, "_postgres", lambda schema: FakeConn())
    monkeypatch.setattr(lease, "holder", lambda conn, name: next(holders))
    monkeypatch.setattr(
        control, "get", lambda conn, name: SimpleNamespace(state=state, set_by="op", reason="why")
    )
    slept = []
    monkeypatch.setattr("time.sleep", slept.append)
    if launches:
        tasks.await_orphaned_driver(PARAMS, poll_s=7)
    else:
        with pytest.raises(AirflowFailException, match="stopped by op"):
            tasks.await_orphaned_driver(PARAMS, poll_s=7)
    assert slept == [7, 7]
    assert sum("adopts it" in r.message for r in caplog.records) == 1


def test_a_try_with_no_live_driver_launches_at_once(monkeypatch):
    from include.supervision import control, lease

    monkeypatch.setattr(tasks, "_postgres", lambda schema: FakeConn())
    monkeypatch.setattr(lease, "holder", lambda conn, name: None)
    monkeypatch.setattr(control, "get", lambda conn, name: SimpleNamespace(state="halted"))
    tasks.await_orphaned_driver(PARAMS)  # nothing adopted: the gate decided before this try
