"""Restart after a crash: what replaying the state's changelogs costs a restarted stream.

The stream's deduplication state is snapshotted every ``STREAM_STATE_SNAPSHOT_INTERVAL_S`` of
batches (``spark_apps/stream_events.py``, ``batch_conf``); between two snapshots each batch's
changelog is the checkpoint, and a restarted driver replays the changelogs written since the
last snapshot into RocksDB in its first batch. The worst case is a crash just before a
snapshot, which this scenario makes:

1. the stream starts in continuous mode on an empty checkpoint, a burst of events is sent, and
   the time from the driver's spawn to the end of its first batch with data is taken;
2. events are sent at half the pipeline's capacity until the stream's batch count is
   :data:`BATCHES_SHORT` short of the first snapshot (the checkpoint then holds nearly a whole
   interval of changelogs: an observed state, not a sleep);
3. the driver's process group is SIGKILLed, a new driver is spawned on the same checkpoint, the
   same burst is sent, and the same times are taken.

The difference between the two first batches is the replay (the JVM's start is in both).
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
import uuid

from bench.latency import MIX, TRIGGER, Level, _has_progress, _pace
from include import pipeline
from include.spark.jobs import snapshot_every_batches

BATCHES_SHORT = 10  # the kill comes this many batches before the first state snapshot
BURST = 2_000  # events sent right after each spawn: the first batch's input
PACE_STEP_S = 2.0  # the load is sent in steps this long, the batch count read between them


def _first_batch(
    conn, proc, after_batch: int, log_file, spawned: float, timeout: float = 900
) -> dict:
    """Wait for the first batch with data after ``after_batch``; the seconds from the
    driver's spawn (``spawned``, monotonic) to its end, and its own."""
    while time.monotonic() - spawned < timeout:
        if proc.poll() is not None:
            raise RuntimeError(f"the stream exited ({proc.returncode}); see {log_file}")
        if _has_progress(conn):
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT batch_id, batch_duration_ms, durations FROM stream_progress "
                    "WHERE input_rows > 0 AND batch_id > %s ORDER BY batch_id LIMIT 1",
                    (after_batch,),
                )
                row = cur.fetchone()
            conn.commit()
            if row:
                return {
                    "to_first_batch_s": round(time.monotonic() - spawned, 1),
                    "batch_id": row[0],
                    "first_batch_s": round(row[1] / 1000, 1),
                    "add_batch_s": round(float(row[2].get("addBatch", 0)) / 1000, 1),
                }
        time.sleep(0.2)
    raise RuntimeError(f"no batch with data within {timeout:.0f} s; see {log_file}")


def _last_batch(conn) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT coalesce(max(batch_id), -1) FROM stream_progress")
        out = int(cur.fetchone()[0])
    conn.commit()
    return out


def _state_files(fs, root: str, committed_batch: int) -> dict:
    """The changelogs (and their bytes) and snapshots in the checkpoint's state, and what the
    health check counts as the restarted driver's replay (``checkpoint.replay_bytes``)."""
    from pyarrow.fs import FileSelector

    from include.supervision.checkpoint import replay_bytes

    infos = fs.get_file_info(FileSelector(root, recursive=True, allow_not_found=True))
    state = [i for i in infos if "/state/" in i.path and i.size is not None]
    changelogs = [i for i in state if i.path.endswith(".changelog")]
    replay = replay_bytes(((i.path, i.size) for i in state), committed_batch)
    return {
        "changelogs": len(changelogs),
        "changelog_mib": round(sum(i.size for i in changelogs) / 1024**2, 1),
        "snapshots": sum(i.path.endswith(".zip") for i in state),
        "replay_mib": round(replay / 1024**2, 1),
    }


def run(ctx, capacity: float, *, trigger: str = TRIGGER) -> dict:
    """The fresh start, the load, the kill and the restart; their figures."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from bench.sandbox import analytics_schema, dropped_after
    from devstack.spark import submit_argv, submit_env
    from include.analytics import store
    from include.events.catalog import build_catalog
    from include.events.generator import GeneratorConfig, iter_events
    from include.events.producer import producer_config
    from include.lake.s3 import sandbox_prefix
    from include.spark.jobs import StreamJob

    s = ctx.settings
    sid = uuid.uuid4().hex[:8]
    topic, schema = f"bench.restart.{sid}", f"bench_r_{sid}"
    prefix = sandbox_prefix(f"bench-restart-{sid}")
    every = snapshot_every_batches(trigger)
    admin = AdminClient({"bootstrap.servers": s.kafka_bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(30)
    b = s.bucket
    job = StreamJob(
        bootstrap_servers=s.kafka_bootstrap,
        topic=topic,
        lake_path=pipeline.s3a(b, f"{prefix}/raw"),
        dead_letter_path=pipeline.s3a(b, f"{prefix}/dead_letter"),
        checkpoint_root=pipeline.s3a(b, f"{prefix}/_checkpoints"),
        pg_schema=schema,
        mode="continuous",
        trigger=trigger,
    )
    producer = Producer(producer_config(s.kafka_bootstrap))
    events = iter(iter_events(GeneratorConfig(seed=19, live=True, **MIX)))

    def burst() -> None:
        for _ in range(BURST):
            ev = next(events)
            producer.produce(topic, key=ev.key, value=ev.value)
        producer.flush(60)

    procs: list[subprocess.Popen] = []

    def spawn(n: int):
        log_file = s.logs_dir / f"bench-restart-{n}.log"
        with open(log_file, "w") as log:
            procs.append(
                subprocess.Popen(
                    submit_argv(ctx, job),
                    env=submit_env(ctx, job),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        return procs[-1], log_file, time.monotonic()

    with dropped_after(ctx, prefix), analytics_schema(ctx, schema) as conn:
        try:
            store.publish_catalog(conn, build_catalog())
            proc, log_file, spawned = spawn(1)
            burst()
            fresh = _first_batch(conn, proc, -1, log_file, spawned)
            print(f"    fresh start: first batch after {fresh['to_first_batch_s']} s", flush=True)
            level = Level(0.5, 0.5 * capacity)
            kill_at = every - BATCHES_SHORT
            print(
                f"    {level.rate:,.0f} events/s until batch {kill_at} "
                f"(a snapshot every {every} batches)",
                flush=True,
            )
            started = time.monotonic()
            while _last_batch(conn) < kill_at:
                if proc.poll() is not None:
                    raise RuntimeError(f"the stream exited ({proc.returncode}); see {log_file}")
                _pace(producer, events, topic, level, 0.0, PACE_STEP_S)
                level.records.clear()  # the delivery reports: latency's, not needed here
                level.purchases.clear()
            loaded_s = time.monotonic() - started
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(60)
            last = _last_batch(conn)
            if last >= every:  # a snapshot may have been taken: the figure would be no worst case
                raise RuntimeError(f"killed after batch {last}, not before batch {every}")
            state = _state_files(
                ctx.s3_root.pyarrow_filesystem(), f"{b}/{prefix}/_checkpoints/", last
            )
            print(f"    SIGKILLed after batch {last}: {state}", flush=True)
            proc, log_file, spawned = spawn(2)
            burst()
            restart = _first_batch(conn, proc, last, log_file, spawned)
            print(f"    restart: first batch after {restart['to_first_batch_s']} s", flush=True)
        finally:
            for p in procs:  # before the schema and the prefix go
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(p.pid, signal.SIGKILL)
                p.wait(60)
            admin.delete_topics([topic])[topic].result(30)
    return {
        "trigger": trigger,
        "rate": level.rate,
        "loaded_s": round(loaded_s, 1),
        "events": level.sent,
        "killed_after_batch": last,
        "snapshot_every": every,
        "state": state,
        "fresh": fresh,
        "restart": restart,
        "replay_s": round(restart["first_batch_s"] - fresh["first_batch_s"], 1),
    }
