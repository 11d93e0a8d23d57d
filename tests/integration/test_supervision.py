"""Supervision on the real stack: the launch DAG's guards (the offset-retention guard, the
single-writer lease, the crash-loop gate that waits for a dependency instead of halting) and
the health check (idle, frozen, wedged).

* Retention deletes records the stream has not read (the broker's log start offset moves past
  the checkpoint, as retention does) -> the launch stops before Spark starts, naming the
  partition and the lost range; accepting the gap (a trigger param) continues past it.
* A driver runs -> a second launch through Airflow is refused by the preflight, and a second
  driver started behind Airflow's back is refused by the lease itself.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psutil
import psycopg2
import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient

from devstack import class_archive
from devstack.spark import submit_argv, submit_env
from devstack.stream_status import stream_status
from include import pipeline
from include.analytics import store
from include.events.generator import generate
from include.events.producer import produce
from include.supervision import checkpoint, control, lease, retention
from tests.integration.conftest import (
    airflow_dags_run,
    airflow_dags_test,
    run_submit,
    s3,
    spawn,
    stop_group,
)
from tests.integration.lake_checks import (
    lake_progress_end,
    lake_report,
    latest_ends,
    lease_holder,
    query,
    reconcile_sandbox,
    wait_for,
)


def lake_rows(ctx, sandbox) -> int:
    b = ctx.settings.bucket
    return lake_report(
        ctx, pipeline.s3a(b, sandbox.lake_prefix), pipeline.s3a(b, sandbox.dead_letter_prefix)
    )["rows"]


def test_retention_gap_stops_the_launch_until_accepted(ctx, sandbox):
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    boot = ctx.settings.kafka_bootstrap
    conn = store.connect(ctx.analytics_db, schema=sandbox.pg_schema)

    def produced(n: int, seed: int):  # each run recorded, as reconcile accounts for it
        run = produce(
            generate(n, seed=seed, start=start), topic=sandbox.topic, bootstrap_servers=boot
        )
        store.record_run(conn, run)
        return run

    r1 = produced(300, 11)
    conf = sandbox.stream_conf(ctx.settings.bucket)
    assert airflow_dags_test(ctx, "stream_events", conf) == "success"
    assert lake_rows(ctx, sandbox) == r1.valid

    admin = AdminClient({"bootstrap.servers": boot})

    def lose(records: int) -> tuple[int, str]:
        """Delete the next ``records`` unread records of partition 0, as retention would."""
        read_up_to = retention.earliest_offsets(admin, sandbox.topic)[(sandbox.topic, 0)]
        read_up_to = max(read_up_to, lake_end(ctx, sandbox, 0))
        tp = TopicPartition(sandbox.topic, 0, read_up_to + records)
        admin.delete_records([tp])[tp].result(30)
        return read_up_to, (
            f"{sandbox.topic}[0]: offsets {read_up_to}..{read_up_to + records - 1} "
            f"({records} records)"
        )

    r2 = produced(600, 12)
    _, expected = lose(25)
    state, output = airflow_dags_run(ctx, "stream_events", conf)
    assert state == "failed"
    assert expected in output, "the alert names the partition and the lost range"
    assert "accept_retention_gap" in output
    assert lake_rows(ctx, sandbox) == r1.valid, "the stream did not start: nothing was skipped"
    refused = query(
        ctx,
        sandbox.pg_schema,
        "SELECT count(*) FROM stream_restarts WHERE action = 'launch_refused'",
    )
    assert refused == [(1,)], "the refused launch counts towards the gate's crash-loop rule"

    # The operator accepts the gap from the UI (stream_control); the next launch drains past it.
    accept = sandbox.supervision_conf(
        ctx.settings.bucket, action="accept_retention_gap", reason="records lost in the test"
    )
    assert airflow_dags_test(ctx, "stream_control", accept) == "success"
    state, _ = airflow_dags_run(ctx, "stream_events", conf)
    assert state == "success"
    (record,) = accepted(ctx, sandbox)  # the accepted loss is audited: who, why, which records
    assert "(records lost in the test)" in record and expected in record
    assert lake_rows(ctx, sandbox) == r1.valid + r2.valid - 25

    # The acceptance was one-shot: a new gap stops the launch again; the run param accepts it.
    r3 = produced(300, 13)
    _, expected = lose(10)
    assert airflow_dags_run(ctx, "stream_events", conf)[0] == "failed"
    state, _ = airflow_dags_run(ctx, "stream_events", {**conf, "accept_retention_gap": True})
    assert state == "success"
    newest = accepted(ctx, sandbox)[-1]
    assert "param accept_retention_gap" in newest and expected in newest
    assert lake_rows(ctx, sandbox) == r1.valid + r2.valid + r3.valid - 35

    # Reconcile counts the 35 records deleted unread in their own column, not as missing.
    report = reconcile_sandbox(ctx, sandbox, start)
    conn.close()
    assert report["ok"], report["problems"]
    by_run = {a["run_id"]: a for a in report["accounts"]}
    assert [by_run[r.run_id]["lost_accepted"] for r in (r1, r2, r3)] == [0, 25, 10]
    assert report["missing"] == report["duplicated"] == 0
    assert report["landed"] == r1.valid + r2.valid + r3.valid - 35


def accepted(ctx, sandbox) -> list[str]:
    """The audit records of the retention gaps accepted so far (stream_restarts), oldest first."""
    rows = query(
        ctx,
        sandbox.pg_schema,
        f"SELECT reason FROM stream_restarts WHERE action = '{control.GAP_ACCEPTED}' ORDER BY id",
    )
    return [r[0] for r in rows]


def lake_end(ctx, sandbox, partition: int) -> int:
    """Where the lake query's last batch ended on ``partition``."""
    return latest_ends(ctx, sandbox).get(pipeline.STREAM_QUERY, {}).get(partition, 0)


def test_a_second_driver_is_refused_by_the_lease(ctx, sandbox):
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    produce(
        generate(2_000, seed=21, start=start),
        topic=sandbox.topic,
        bootstrap_servers=ctx.settings.kafka_bootstrap,
    )
    job = sandbox.stream_job(ctx, mode="continuous", trigger="2 seconds")
    first = spawn(
        ctx,
        submit_argv(ctx, job),
        submit_env(ctx, job),
        f"lease-test-{sandbox.id}.log",
    )
    try:
        deadline = time.monotonic() + 300
        while (holder := lease_holder(ctx, sandbox)) is None:
            assert first.poll() is None, "the first driver exited"
            assert time.monotonic() < deadline, "the first driver never took its lease"
            time.sleep(0.5)

        # Through Airflow: the preflight refuses, naming the holder; the stream task never runs.
        state, output = airflow_dags_run(
            ctx, "stream_events", sandbox.stream_conf(ctx.settings.bucket)
        )
        assert state == "failed"
        assert f"held by driver pid {holder.pid}" in output

        # Behind Airflow's back: the driver itself refuses (exit code 3), naming the holder.
        second = run_submit(ctx, job.replace(mode="bounded"))
        assert second.returncode == 3, second.stdout[-2000:] + second.stderr[-2000:]
        assert f"held by driver pid {holder.pid}" in second.stdout + second.stderr

        # Another stream (its own checkpoint) writing the same lake: refused by the lake
        # path's lease, named, and the new checkpoint's lease it took first is given back.
        other = job.replace(mode="bounded", checkpoint_root=f"{job.checkpoint_root}-other")
        third = run_submit(ctx, other)
        out = third.stdout + third.stderr
        assert third.returncode == 3, out[-4000:]
        assert f"'sink:{job.lake_path}' is held by driver pid {holder.pid}" in out, out[-4000:]
        assert "give each stream its own lake and dead-letter prefixes" in out
        conn = store.connect(ctx.analytics_db, schema=sandbox.pg_schema)
        try:
            assert lease.holder(conn, lease.lease_name(other.checkpoint_root)) is None
            assert lease.holder(conn, lease.sink_lease_name(job.lake_path)).owner == holder.owner
        finally:
            conn.close()
        assert first.poll() is None, "the first driver still runs"
        assert lease_holder(ctx, sandbox).owner == holder.owner
    finally:
        stop_group(first)


def test_lease_rules_on_postgres(ctx, sandbox):
    conn = store.connect(ctx.analytics_db, schema=sandbox.pg_schema)
    name = "stream:s3a://lake/it/lease-rules"
    try:
        held = lease.acquire(conn, name, "A", ttl_s=30)
        assert (held.owner, held.pid, held.expired) == ("A", os.getpid(), False)
        with pytest.raises(lease.LeaseHeld, match=f"held by driver pid {os.getpid()}"):
            lease.acquire(conn, name, "B", ttl_s=30)
        lease.renew(conn, name, "A", ttl_s=30)
        with pytest.raises(lease.LeaseLost):
            lease.renew(conn, name, "B", ttl_s=30)

        lease.renew(conn, name, "A", ttl_s=0.5)  # A stops heartbeating: the lease expires
        time.sleep(1.0)
        assert lease.acquire(conn, name, "B", ttl_s=30).owner == "B"
        with pytest.raises(lease.LeaseLost):
            lease.renew(conn, name, "A", ttl_s=30)  # A woke up: it must stop writing

        dead = subprocess.Popen(["true"])
        dead.wait()
        with conn.cursor() as cur:  # B's driver was killed (-9) on this host
            cur.execute("UPDATE stream_leases SET pid = %s WHERE name = %s", (dead.pid, name))
        conn.commit()
        assert lease.acquire(conn, name, "C", ttl_s=30).owner == "C", "no wait for the expiry"

        # A renewal never waits on a lock for ever: a writer's transaction holds the fence
        # (FOR SHARE) -> the keeper's connection (a statement timeout) fails fast instead.
        with conn.cursor() as cur:
            lease.fence(cur, name, "C")  # the transaction stays open, the row share-locked
        keeper = store.connect(ctx.analytics_db, sandbox.pg_schema, statement_timeout_s=1)
        try:
            t0 = time.monotonic()
            with pytest.raises(psycopg2.errors.QueryCanceled):
                lease.renew(keeper, name, "C", ttl_s=30)
            assert time.monotonic() - t0 < 15
        finally:
            keeper.close()
        conn.rollback()

        lease.release(conn, name, "C")
        assert lease.holder(conn, name) is None

        # A driver's leases are taken all or none: D holds a lake's; E (another checkpoint,
        # the same lake) is refused and keeps none of the leases it took before.
        d = lease.driver_leases("s3a://lake/it/ck-d", ["s3a://lake/it/raw"])
        e = lease.driver_leases("s3a://lake/it/ck-e", ["s3a://lake/it/dead", "s3a://lake/it/raw"])
        assert lease.acquire_all(conn, d, "D", ttl_s=30).name == d[0]
        with pytest.raises(lease.LeaseHeld, match="sink:s3a://lake/it/raw' is held by"):
            lease.acquire_all(conn, e, "E", ttl_s=30)
        assert [lease.holder(conn, n) for n in e[:2]] == [None, None]
        lease.release_all(conn, d, "D")
        assert all(lease.holder(conn, n) is None for n in d)
    finally:
        conn.close()


def test_the_gate_waits_for_a_dependency_instead_of_halting(ctx, sandbox, monkeypatch):
    """Driver runs failed while the broker was away: the crash-loop rule probes the stream's
    dependencies before it halts. Kafka not answering (a real client on a closed port) -> the
    gate waits, recorded and alerted, the stream not halted; Kafka back -> the launch goes ahead
    and the failures before the outage do not count; the same failures with every dependency
    answering -> halted (an app crash loop)."""
    from confluent_kafka.admin import AdminClient

    from include.supervision import control, tasks

    params = {
        **sandbox.supervision_conf(ctx.settings.bucket),
        "topic": sandbox.topic,
        "max_restarts": 3,
        "restart_window_min": 30,
    }
    name = lease.lease_name(pipeline.s3a(ctx.settings.bucket, sandbox.checkpoint_prefix))
    broker = {"bootstrap.servers": ctx.settings.kafka_bootstrap}
    closed = {"bootstrap.servers": "127.0.0.1:9", "socket.connection.setup.timeout.ms": 1000}
    monkeypatch.setattr(
        tasks, "_postgres", lambda schema: store.connect(ctx.analytics_db, schema=schema)
    )
    monkeypatch.setattr(tasks, "_s3", lambda: s3(ctx))

    def fail_runs(n: int, tag: str) -> None:
        conn = store.connect(ctx.analytics_db, schema=sandbox.pg_schema)
        try:
            for i in range(n):  # started, never ended: killed or crashed
                control.record_start(conn, name, f"{tag}-{i}", "h", 1_000 + i)
        finally:
            conn.close()

    def actions() -> list[str]:
        rows = query(ctx, sandbox.pg_schema, "SELECT action FROM stream_restarts ORDER BY ts, id")
        return [a for (a,) in rows]

    def state() -> str:
        rows = query(ctx, sandbox.pg_schema, "SELECT state FROM stream_control")
        return rows[0][0] if rows else control.RUNNING

    fail_runs(3, "outage")
    monkeypatch.setattr(tasks, "_kafka_admin", lambda: AdminClient(closed))
    assert tasks.gate(params) is False
    assert state() == control.RUNNING, "not halted"
    assert actions() == [control.WAITING_DEPENDENCY]
    reason = query(ctx, sandbox.pg_schema, "SELECT reason FROM stream_restarts")[0][0]
    assert reason.startswith("kafka: "), reason
    assert tasks.gate(params) is False, "still waiting while the broker is away"

    monkeypatch.setattr(tasks, "_kafka_admin", lambda: AdminClient(broker))
    assert tasks.gate(params) is True, "the broker is back: the launch goes ahead"
    assert actions()[-1] == control.DEPENDENCIES_BACK

    # Runs killed from outside after they moved the stream forward: each of them committed a
    # batch that read input after it started, so they are not a loop.
    for i in range(3):
        fail_runs(1, f"worked-{i}")
        conn = store.connect(ctx.analytics_db, schema=sandbox.pg_schema)
        try:
            store.record_progress(conn, batch_row(i))
        finally:
            conn.close()
    assert tasks.gate(params) is True, "failures with progress between them are no loop"

    fail_runs(3, "app")  # the app fails on its own, no progress, every dependency answering
    assert tasks.gate(params) is False
    assert state() == control.HALTED
    assert actions()[-1] == "refused_crash_loop"


def batch_row(batch_id: int) -> dict:
    """A progress row as the listener records it: a batch of 10 input rows that started now."""
    return {
        "query_id": str(uuid.uuid4()),
        "run_id": str(uuid.uuid4()),
        "query_name": pipeline.STREAM_QUERY,
        "batch_id": batch_id,
        "ts": datetime.now(UTC),
        "input_rows": 10,
        "input_rows_per_s": 1.0,
        "processed_rows_per_s": 1.0,
        "batch_duration_ms": 100,
        "watermark": None,
        "late_rows_dropped": 0,
        "state_rows": 0,
        "sources": "[]",
        "observed": "{}",
        "durations": "{}",
    }


def execute(ctx, schema: str, sql: str) -> None:
    conn = store.connect(ctx.analytics_db, schema=schema)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
        conn.commit()
    finally:
        conn.close()


def last_health(ctx, sandbox) -> tuple:
    return query(
        ctx,
        sandbox.pg_schema,
        "SELECT status, reasons, metrics FROM stream_health ORDER BY ts DESC LIMIT 1",
    )[0]


def in_flight_s(ctx, sandbox) -> float | None:
    """Seconds since the lake query planned a batch it has not committed (None: none), read
    from its checkpoint the way the health check reads it."""
    client, b = s3(ctx), ctx.settings.bucket
    read, list_keys = checkpoint.s3_reader(client, b)
    root = sandbox.checkpoint_prefix
    pos = checkpoint.query_position(pipeline.STREAM_QUERY, root, read, list_keys)
    if pos is None or pos.planned_batch is None or pos.planned_batch == pos.committed_batch:
        return None
    key = f"{root}/{pipeline.STREAM_QUERY}/offsets/{pos.planned_batch}"
    planned_at = client.head_object(Bucket=b, Key=key)["LastModified"]
    return (datetime.now(UTC) - planned_at).total_seconds()


# The stream's role: its S3 user (the sandbox's twin, as the tests run it) and the analytics
# database (devstack/secrets.py names them).
STREAM_ROLE = {"sandbox_stream_s3_access_key", "sandbox_stream_s3_secret_key", "pg_password"}


def assert_holds_only_the_streams_credentials(ctx, driver_pid: int) -> None:
    """The driver launched through Airflow (the Python process and its spark-submit JVM) holds
    the stream's credentials and no other of the stack's, in its environment or argv."""
    from dataclasses import asdict

    secrets = {k: v for k, v in asdict(ctx.secrets).items() if len(v) >= 8}
    driver = psutil.Process(driver_pid)
    for proc in (driver, driver.parent()):
        environ = "\n".join(f"{k}={v}" for k, v in proc.environ().items())
        held = {k for k, v in secrets.items() if v in environ}
        assert held == STREAM_ROLE, (proc.pid, sorted(held ^ STREAM_ROLE))
        argv = " ".join(proc.cmdline())
        assert not [k for k, v in secrets.items() if v in argv], proc.pid


def assert_maps_the_class_archive(ctx, jvm_pid: int) -> None:
    """The driver's JVM uses the stack's class-data archive (devstack/class_archive.py): it is
    mapped into the process (a JVM that finds it does not fit its class path unmaps it)."""
    archive = class_archive.path(ctx.settings)
    assert archive.exists(), "`devstack install` built no class-data archive"
    assert str(archive) in Path(f"/proc/{jvm_pid}/maps").read_text(), archive


def test_stalled_driver_is_restarted_and_stops_on_request(ctx, sandbox):
    """An idle stream whose last batch is older than any progress window is healthy (idle);
    SIGSTOP the driver launched by Airflow -> the health DAG finds it stalled and kills it ->
    the launcher's retry starts a new driver from the checkpoints; its batch wedged in its sink
    (the product catalog locked) -> stalled, killed, relaunched, the batch re-run -> a graceful
    stop from the stream_control DAG ends the run cleanly; every event landed exactly once."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    boot, bucket = ctx.settings.kafka_bootstrap, ctx.settings.bucket
    r1 = produce(generate(2_000, seed=31, start=start), topic=sandbox.topic, bootstrap_servers=boot)
    launcher = sandbox.launch_supervised(ctx, f"launcher-test-{sandbox.id}.log")
    stall_after = 30
    health_conf = sandbox.supervision_conf(bucket, topic=sandbox.topic, stall_after_s=stall_after)
    try:
        first = wait_for(lambda: lease_holder(ctx, sandbox), 300, "the first driver", launcher)
        assert_holds_only_the_streams_credentials(ctx, first.pid)
        assert_maps_the_class_archive(ctx, psutil.Process(first.pid).parent().pid)
        wait_for(lambda: lake_progress_end(ctx, sandbox) == r1.events, 300, "the backlog", launcher)

        # Idle: the query reports it (Spark's onQueryIdle, recorded by the listener).
        wait_for(
            lambda: (
                query(ctx, sandbox.pg_schema, "SELECT query_name FROM stream_idle")
                == [(pipeline.STREAM_QUERY,)]
            ),
            120,
            "an idle report",
            launcher,
        )
        # Idle for two hours, on the clock the check reads: no progress row is recent, nothing
        # waits. Healthy (idle), and nothing is restarted.
        execute(ctx, sandbox.pg_schema, "UPDATE stream_progress SET ts = ts - interval '2 hours'")
        assert airflow_dags_test(ctx, "stream_health", health_conf) == "success"
        status, reasons, metrics = last_health(ctx, sandbox)
        assert (status, reasons) == ("healthy", ["idle: nothing waits to be read"]), reasons
        assert metrics["total_lag"] == 0 and metrics["idle"] is True
        assert query(ctx, sandbox.pg_schema, "SELECT count(*) FROM stream_restarts") == [(0,)]

        os.kill(first.pid, signal.SIGSTOP)  # frozen: no heartbeat, no batch
        wait_for(
            lambda: (h := lease_holder(ctx, sandbox)) and h.heartbeat_age_s > stall_after,
            120,
            "the frozen driver's heartbeat to age",
        )
        assert airflow_dags_test(ctx, "stream_health", health_conf) == "success"
        status, reasons, _ = last_health(ctx, sandbox)
        assert status == "stalled" and f"driver pid {first.pid}" in reasons[0]
        assert query(ctx, sandbox.pg_schema, "SELECT action, pid FROM stream_restarts") == [
            ("restarted", first.pid)
        ]
        assert not psutil.pid_exists(first.pid) or psutil.Process(first.pid).status() == "zombie"

        # The launcher's retry starts a new driver, which resumes from the checkpoints.
        second = wait_for(
            lambda: (h := lease_holder(ctx, sandbox)) and h.pid != first.pid and h,
            300,
            "the relaunched driver",
            launcher,
        )
        # A batch wedged in its sink: the product catalog the batch enriches from is locked, so
        # the next batch is planned and never commits, while the driver heart-beats. Judged at
        # that state (read from the checkpoint), once it is older than the batch limit.
        wedge = store.connect(ctx.analytics_db, schema=sandbox.pg_schema)
        try:
            with wedge.cursor() as cur:
                cur.execute("LOCK TABLE products IN ACCESS EXCLUSIVE MODE")
            r2 = produce(
                generate(500, seed=32, start=start), topic=sandbox.topic, bootstrap_servers=boot
            )
            wait_for(
                lambda: (age := in_flight_s(ctx, sandbox)) is not None and age > stall_after,
                180,
                "a batch planned and not committed past the limit",
                launcher,
            )
            assert lease_holder(ctx, sandbox).heartbeat_age_s < stall_after, "not frozen"
            assert airflow_dags_test(ctx, "stream_health", health_conf) == "success"
            status, reasons, _ = last_health(ctx, sandbox)
            assert status == "stalled", reasons
            assert reasons[0].startswith("query lake: a batch has run "), reasons
            assert reasons[0].endswith("s without committing (limit 30s): wedged"), reasons
        finally:
            wedge.rollback()
            wedge.close()
        assert query(
            ctx, sandbox.pg_schema, "SELECT action, pid FROM stream_restarts ORDER BY ts"
        ) == [("restarted", first.pid), ("restarted", second.pid)]
        third = wait_for(
            lambda: (h := lease_holder(ctx, sandbox)) and h.pid != second.pid and h,
            300,
            "the driver relaunched after the wedge",
            launcher,
        )
        total = r1.events + r2.events
        wait_for(
            lambda: lake_progress_end(ctx, sandbox) == total, 300, "the wedged batch", launcher
        )
        # `make status` tells the same story from the shell.
        status = "\n".join(
            stream_status(ctx, sandbox.checkpoint_prefix, sandbox.topic, sandbox.pg_schema)
        )
        assert f"driver      pid {third.pid} on " in status, status
        assert "control     running" in status, status
        assert "; lag 0 (p0:0, p1:0, p2:0)" in status, status
        assert "health      stalled " in status and "wedged" in status, status

        # A graceful stop: the driver finishes its batch and exits 0; the run succeeds.
        stop = sandbox.supervision_conf(bucket, action="stop", reason="integration test")
        assert airflow_dags_test(ctx, "stream_control", stop) == "success"
        assert launcher.wait(180) == 0
    finally:
        if launcher.poll() is None:
            os.killpg(launcher.pid, signal.SIGKILL)
            launcher.wait(30)
    runs = query(
        ctx,
        sandbox.pg_schema,
        "SELECT pid, exit_code, exit_reason FROM stream_runs ORDER BY started_at",
    )
    assert [(pid, code) for pid, code, _ in runs] == [
        (first.pid, None),
        (second.pid, None),
        (third.pid, 0),
    ]
    assert "stopped by" in runs[2][2] and "integration test" in runs[2][2]
    launcher_log = (ctx.settings.logs_dir / f"launcher-test-{sandbox.id}.log").read_text()
    assert (
        "DagRun Finished: dag_id=stream_events" in launcher_log and "state=success" in launcher_log
    )
    report = lake_report(
        ctx,
        pipeline.s3a(bucket, sandbox.lake_prefix),
        pipeline.s3a(bucket, sandbox.dead_letter_prefix),
    )
    assert report["rows"] == report["distinct_ids"] == r1.valid + r2.valid
