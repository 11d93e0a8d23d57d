"""Killing the driver (SIGKILL) in the middle of a batch loses nothing and duplicates nothing.

The stream runs in continuous mode, launched directly with spark-submit (the same arguments
Airflow passes), over a backlog large enough for many small batches; once a few batches have
committed, the driver's whole process group is killed at a state read from the checkpoint: a
batch planned (its offsets written) and not yet committed. A bounded run then resumes from the
checkpoints: the lake holds every valid event exactly once, Postgres equals the generator's
record and the reconciliation accounts for every produced event. Before the kill, the driver's
log shows that its warm batches compiled no generated code.
"""

from __future__ import annotations

import os
import re
import signal
import time
from datetime import UTC, datetime, timedelta

from devstack.spark import submit_argv, submit_env
from include import pipeline
from include.analytics import store
from include.events.generator import generate
from include.events.producer import produce
from include.supervision import checkpoint
from spark_apps.stream_events import COMPILED_FORMAT
from tests.integration.conftest import airflow_dags_test, run_submit, s3, spawn
from tests.integration.lake_checks import (
    assert_sales_match,
    lake_report,
    postgres_sales,
    reconcile_sandbox,
)

# The batches a fresh driver may compile code in: the first plans every path, and the second
# the dead letters' read of their bytes from the topic, planned once some need it.
WARM = 2


def compiled_per_batch(log_file) -> dict[int, int]:
    """Batch id -> the generated classes it compiled, from the driver's per-batch log lines."""
    pattern = re.compile(
        r"stream_events: batch (\d+): .*; " + COMPILED_FORMAT.replace("%d", r"(\d+)") + "$"
    )
    found = (pattern.search(line) for line in log_file.read_text().splitlines())
    return {int(m[1]): int(m[2]) for m in found if m}


def test_sigkill_mid_batch_then_resume_is_exactly_once(ctx, sandbox):
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    batch = generate(60_000, seed=303, start=start, bad_share=0.02, duplicate_share=0.02)
    record = produce(batch, topic=sandbox.topic, bootstrap_servers=ctx.settings.kafka_bootstrap)
    conn = store.connect(ctx.analytics_db, schema=sandbox.pg_schema)
    store.record_run(conn, record)  # what the reconciliation accounts for
    conn.close()
    b = ctx.settings.bucket
    # The row engine (--engine rows, the engine on a cluster): its relaunch through the DAG
    # (engine auto) keeps the engine the checkpoint was started with.
    job = sandbox.stream_job(
        ctx, mode="continuous", trigger="1 second", max_offsets_per_trigger=3000, engine="rows"
    )
    driver = spawn(
        ctx,
        submit_argv(ctx, job),
        submit_env(ctx, job),
        f"crash-test-{sandbox.id}.log",
    )
    read, list_keys = checkpoint.s3_reader(s3(ctx), b)
    try:
        deadline = time.monotonic() + 300
        while True:  # a batch planned (offsets/<n>) but not committed (commits/<n>)
            pos = checkpoint.query_position(
                pipeline.STREAM_QUERY, sandbox.checkpoint_prefix, read, list_keys
            )
            committed = -1 if pos is None or pos.committed_batch is None else pos.committed_batch
            if committed >= WARM + 3 and pos.planned_batch > committed:
                break
            assert driver.poll() is None, "the stream exited before it was killed"
            assert time.monotonic() < deadline, "the stream made no progress"
            time.sleep(0.1)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(30)
    pos = checkpoint.query_position(
        pipeline.STREAM_QUERY, sandbox.checkpoint_prefix, read, list_keys
    )
    assert pos.planned_batch > pos.committed_batch, "killed between a batch's plan and commit"
    # Once warm, a batch compiles no generated code: its plans are the last batch's and
    # Spark's code cache holds their classes (include/spark/submit.py BASE_CONF).
    # (The driver's output reaches its log through spark-submit's copying thread, so the
    # last committed batch's line may not be there yet; the three before it are.)
    compiled = compiled_per_batch(ctx.settings.logs_dir / f"crash-test-{sandbox.id}.log")
    warm = [n for batch, n in compiled.items() if batch >= WARM]
    assert len(warm) >= 3 and not any(warm), compiled
    # What the relaunched driver replays before its first batch, as the health check reads it
    # to extend that batch's limit (include/supervision/health.py): Spark's own file names.
    state = checkpoint.s3_sizes(s3(ctx), b)(
        f"{sandbox.checkpoint_prefix}/{pipeline.STREAM_QUERY}/state/"
    )
    assert any(key.endswith(".changelog") for key, _ in state), "changelog checkpointing"
    assert checkpoint.replay_bytes(state, pos.committed_batch) > 0
    partial = lake_report(
        ctx, pipeline.s3a(b, sandbox.lake_prefix), pipeline.s3a(b, sandbox.dead_letter_prefix)
    )
    assert 0 < partial["rows"] < record.valid, "killed mid-stream, with work left"

    # Airflow relaunches it (bounded here, so the test ends): it resumes from the checkpoints.
    assert airflow_dags_test(ctx, "stream_events", sandbox.stream_conf(b)) == "success"
    assert_exactly_once(ctx, sandbox, record, batch, start)


def test_columnar_sigkill_after_the_state_moved_then_resume_is_exactly_once(ctx, sandbox):
    """The columnar engine (``--engine columnar``), killed at the state its recovery must get
    right: a batch planned, its deduplication decided and logged (``first_seen/<n>.*``) and
    not committed. The relaunch restores the state as it was before that batch, so the replay
    decides the same: every valid event exactly once, the duplicates dropped, nothing lost."""
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    batch = generate(40_000, seed=404, start=start, bad_share=0.02, duplicate_share=0.05)
    record = produce(batch, topic=sandbox.topic, bootstrap_servers=ctx.settings.kafka_bootstrap)
    conn = store.connect(ctx.analytics_db, schema=sandbox.pg_schema)
    store.record_run(conn, record)
    conn.close()
    b = ctx.settings.bucket
    job = sandbox.stream_job(
        ctx,
        mode="continuous",
        trigger="1 second",
        max_offsets_per_trigger=3000,
        engine="columnar",
    )
    log_name = f"crash-test-columnar-{sandbox.id}.log"
    driver = spawn(ctx, submit_argv(ctx, job), submit_env(ctx, job), log_name)
    read, list_keys = checkpoint.s3_reader(s3(ctx), b)
    state = f"{sandbox.checkpoint_prefix}/{pipeline.STREAM_QUERY}/first_seen/"
    try:
        deadline = time.monotonic() + 300
        while True:  # a batch planned and decided (its state logged) but not committed
            pos = checkpoint.query_position(
                pipeline.STREAM_QUERY, sandbox.checkpoint_prefix, read, list_keys
            )
            committed = -1 if pos is None or pos.committed_batch is None else pos.committed_batch
            if committed >= 3 and pos.planned_batch > committed:
                logged = {k.rsplit("/", 1)[-1].split(".")[0] for k in list_keys(state)}
                if str(pos.planned_batch) in logged:
                    break
            assert driver.poll() is None, "the stream exited before it was killed"
            assert time.monotonic() < deadline, "the stream made no progress"
            time.sleep(0.05)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(30)
    pos = checkpoint.query_position(
        pipeline.STREAM_QUERY, sandbox.checkpoint_prefix, read, list_keys
    )
    assert pos.planned_batch > pos.committed_batch, "killed between a batch's plan and commit"
    partial = lake_report(
        ctx, pipeline.s3a(b, sandbox.lake_prefix), pipeline.s3a(b, sandbox.dead_letter_prefix)
    )
    assert 0 < partial["rows"] < record.valid, "killed mid-stream, with work left"

    # Relaunched with the DAG's default engine (auto), which resumes the checkpoint on the
    # engine it was started with (the row engine would refuse it: below).
    assert airflow_dags_test(ctx, "stream_events", sandbox.stream_conf(b)) == "success"
    assert_exactly_once(ctx, sandbox, record, batch, start)
    # The switch is one-way: the row engine refuses a checkpoint the columnar one ran on.
    rows = sandbox.stream_job(ctx, mode="bounded", engine="rows")
    done = run_submit(ctx, rows, timeout=300)
    out = done.stdout + done.stderr
    assert done.returncode == 2, out[-2000:]
    assert "resume it with --engine=columnar" in out


def assert_exactly_once(ctx, sandbox, record, batch, start) -> None:
    """After the resumed run: every valid event in the lake once, the bad ones dead-lettered,
    Postgres equal to the generator's record, and the reconciliation accounting for every
    event (landed, dead-lettered or a dropped copy)."""
    b = ctx.settings.bucket
    lake, dead = pipeline.s3a(b, sandbox.lake_prefix), pipeline.s3a(b, sandbox.dead_letter_prefix)
    final = lake_report(ctx, lake, dead)
    assert final["rows"] == final["distinct_ids"] == record.valid
    bad = sum(n for k, n in record.by_kind.items() if k not in ("valid", "irrelevant", "duplicate"))
    assert final["dead_letter_rows"] == bad
    assert final["purchases"] == record.purchases
    assert_sales_match(postgres_sales(ctx, sandbox.pg_schema), batch)
    report = reconcile_sandbox(ctx, sandbox, start)
    assert report["ok"], report["problems"]
    assert (report["produced"], report["landed"], report["missing"]) == (
        record.events,
        record.valid,
        0,
    )
