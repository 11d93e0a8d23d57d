"""The file sinks' logs stay bounded and lose nothing (spark_apps/sink_log.py), on the real
stack: the stream (each engine, continuous, 1 s trigger, small batches) with a sink log
retention of a minute lands a first wave; once its files are older than that, a second wave
runs the logs past a compaction. The logs no longer list the first wave's files, their archive
does, and every reader still sees every event: the lake report and the reconciliation against
the generator's own record (every produced event landed, dead-lettered or a dropped copy), and
the nightly compaction of the day, read through the log and its archive.
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from datetime import UTC, datetime, timedelta

from devstack.spark import compact, submit_argv, submit_env
from include import pipeline
from include.analytics import store
from include.events.generator import generate
from include.events.producer import produce
from include.spark.jobs import CompactJob
from include.supervision import checkpoint
from spark_apps import sink_log
from tests.integration.conftest import s3, spawn, stop_group
from tests.integration.lake_checks import lake_report, reconcile_sandbox

RETENTION_S = 60


ENGINES = ("columnar", "rows")


def test_the_sink_logs_retention_archives_what_it_drops_and_every_reader_sees_it(ctx, sandbox):
    """Both engines at once, one stream each on its own prefixes and checkpoint, reading the
    same topic (the minute's wait is shared)."""
    b = ctx.settings.bucket
    boxes = {
        engine: dataclasses.replace(sandbox, prefix=f"{sandbox.prefix}/{engine}")
        for engine in ENGINES
    }
    sinks = {
        engine: (pipeline.s3a(b, box.lake_prefix), pipeline.s3a(b, box.dead_letter_prefix))
        for engine, box in boxes.items()
    }
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    waves = [
        generate(1_500, seed=611, start=start, bad_share=0.05, duplicate_share=0.03),
        generate(3_600, seed=612, start=start, bad_share=0.05, duplicate_share=0.03),
    ]
    read, list_keys = checkpoint.s3_reader(s3(ctx), b)
    fs = ctx.s3_root.pyarrow_filesystem()
    end: Counter[int] = Counter()
    records = []

    def drained(box) -> bool:
        pos = checkpoint.query_position(
            pipeline.STREAM_QUERY, box.checkpoint_prefix, read, list_keys
        )
        if pos is None or pos.committed_batch is None or pos.planned_batch != pos.committed_batch:
            return False
        at = pos.offsets.get(sandbox.topic, {})
        return all(at.get(p, 0) >= n for p, n in end.items())

    drivers = {}
    for engine, box in boxes.items():
        job = box.stream_job(
            ctx,
            mode="continuous",
            trigger="1 second",
            max_offsets_per_trigger=300,  # the second wave: 12 batches, past a log compaction
            sink_log_retention=f"{RETENTION_S} seconds",
            engine=engine,
        )
        log_name = f"sinklog-{sandbox.id}-{engine}.log"
        drivers[engine] = spawn(ctx, submit_argv(ctx, job), submit_env(ctx, job), log_name)
    first_files: dict[str, set[str]] = {}
    try:
        for i, wave in enumerate(waves):
            record = produce(
                wave, topic=sandbox.topic, bootstrap_servers=ctx.settings.kafka_bootstrap
            )
            conn = store.connect(ctx.analytics_db, schema=sandbox.pg_schema)
            store.record_run(conn, record)  # what the reconciliation accounts for
            conn.close()
            records.append(record)
            end.update(record.by_partition)
            deadline = time.monotonic() + 300
            while not all(drained(box) for box in boxes.values()):
                for engine, driver in drivers.items():
                    assert driver.poll() is None, f"the {engine} stream exited"
                assert time.monotonic() < deadline, f"wave {i} was not drained"
                time.sleep(0.5)
            if i == 0:
                first_files = {
                    p: set(sink_log.log_entries(fs, p) or {})
                    for paths in sinks.values()
                    for p in paths
                }
                assert all(first_files.values()), first_files
                # The first wave's entries grow older than the retention while nothing comes.
                time.sleep(RETENTION_S + 5)
    finally:
        for driver in drivers.values():
            stop_group(driver)

    for path, files in first_files.items():
        logged = set(sink_log.log_entries(fs, path) or {})
        archived = set(sink_log.archived_entries(fs, path))
        assert not files & logged, f"{path}: the log still lists the first wave's files"
        assert files <= archived, f"{path}: the first wave's files are not in the archive"

    valid = sum(r.valid for r in records)
    bad = sum(
        n
        for r in records
        for kind, n in r.by_kind.items()
        if kind not in ("valid", "irrelevant", "duplicate")
    )
    produced = sum(r.events for r in records)
    for engine, (lake, dead) in sinks.items():
        final = lake_report(ctx, lake, dead)
        assert final["rows"] == final["distinct_ids"] == valid, engine
        assert final["dead_letter_rows"] == bad, engine
        report = reconcile_sandbox(ctx, boxes[engine], start)
        assert report["ok"], (engine, report["problems"])
        assert (report["produced"], report["landed"], report["missing"]) == (produced, valid, 0)

    # The nightly compaction of each day, from the log and its archive (one engine's lake: the
    # compaction reads either the same way): the table holds every landable event of the day
    # once (the generator's record), the first wave's included.
    landable: dict[str, set[str]] = {}
    for p in (p for wave in waves for p in wave if p.kind in ("valid", "irrelevant")):
        day = datetime.fromtimestamp(p.event_time_ms / 1000, UTC).date().isoformat()
        landable.setdefault(day, set()).add(p.event_id)
    for day, ids in sorted(landable.items()):
        job = CompactJob(
            day=datetime.fromisoformat(day).date(),
            lake_path=sinks["columnar"][0],
            warehouse=pipeline.s3a(b, f"{sandbox.prefix}/warehouse"),
            pg_schema=sandbox.pg_schema,
            target_file_mb=0.25,
        )
        code, compacted = compact(ctx, job, log_name=f"sinklog-compact-{sandbox.id}.log")
        assert (code, compacted["status"]) == (0, "verified"), compacted
        assert compacted["target"]["rows"] == len(ids)
