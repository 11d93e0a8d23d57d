"""A running first-release deployment upgraded in place (``spark_apps/upgrade.py``), on the real
stack, for both engines at once (one deployment each, own prefixes and schema, one topic).

The first release's four queries (tests/integration/first_release_app.py) run as it ran them,
each with its own checkpoint, and are left at three different offsets: all four drain a first
wave; the lake, the dead letters and the category sales a second; the lake alone a third. Two
of them are then left as a crash between an output and its commit leaves them: the lake's
last batch is in its sink log and the category sales' last batch in its table, but neither
query committed it. The launch's preflight and the driver refuse the root and name the
upgrade. The upgrade writes a plan whose positions must be the generator's cumulative end
offsets of the waves each output saw (the oracle: the producer's record, not the
checkpoints). A partition is added to the topic and a fourth wave produced; the stream runs on
the upgraded root, from the funnel's position. Then every output holds every event once: the
lake and the dead letters (the lake report and the reconciliation against the generator's
record: 0 missing), the category sales and the funnel in Postgres (the generator's tally, per
minute; the first release's rows adopted under the mixed currency), and the stream's own
counts are of what it wrote.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewPartitions

from devstack.spark import submit_argv, submit_env, upgrade
from include import pipeline
from include.analytics import store
from include.events.generator import generate
from include.events.producer import produce
from include.spark.jobs import StreamJob, UpgradeJob
from include.supervision import checkpoint, preflight
from tests.integration.conftest import drop_sandbox, migrate_schema, run_submit, s3
from tests.integration.first_release_app import FIRST_RELEASE_DDL, QUERIES
from tests.integration.lake_checks import (
    lake_report,
    oracle_funnel,
    oracle_sales,
    postgres_funnel,
    postgres_sales,
    query,
    reconcile_sandbox,
    stream_progress,
)

ENGINES = ("columnar", "rows")
APP = str(Path(__file__).with_name("first_release_app.py"))
# The queries each wave of the first release is drained by.
RUNS = (QUERIES, ("lake", "dead_letter", "category_sales"), ("lake",))


def run_first_release(ctx, boxes, queries) -> None:
    deployments = [
        {
            "lake": pipeline.s3a(ctx.settings.bucket, box.lake_prefix),
            "dead": pipeline.s3a(ctx.settings.bucket, box.dead_letter_prefix),
            "root": pipeline.s3a(ctx.settings.bucket, box.checkpoint_prefix),
            "pg_schema": box.pg_schema,
        }
        for box in boxes.values()
    ]
    box = next(iter(boxes.values()))
    args = [
        f"--bootstrap-servers={ctx.settings.kafka_bootstrap}",
        f"--topic={box.topic}",
        f"--deployments={json.dumps(deployments)}",
        f"--queries={','.join(queries)}",
    ]
    # The first release's six stateful queries (three per deployment) keep their state on the
    # JVM's heap: with RocksDB (the stack's default) each is a native instance, and on a busy
    # run the app once died of a native allocation failure (std::bad_alloc) before any batch.
    heap_state = {
        "spark.sql.streaming.stateStore.providerClass": "org.apache.spark.sql.execution"
        ".streaming.state.HDFSBackedStateStoreProvider"
    }
    done = subprocess.run(
        submit_argv(ctx, APP, args, extra_conf=heap_state),
        env=submit_env(ctx, StreamJob),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]


def uncommit_last_batch(ctx, box, query: str) -> int:
    """Leave ``query`` as a crash between its output and its commit does: its last batch's
    ``commits/`` entry removed (its output stays). The batch id."""
    client, b = s3(ctx), ctx.settings.bucket
    prefix = f"{box.checkpoint_prefix}/{query}/commits/"
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=b, Prefix=prefix)["Contents"]]
    last = max(int(k.rsplit("/", 1)[1]) for k in keys if k.rsplit("/", 1)[1].isdigit())
    client.delete_object(Bucket=b, Key=f"{prefix}{last}")
    return last


def bad_of(record) -> int:
    """The records of a producer run that break the contract (the generator's own record)."""
    return sum(
        n for kind, n in record.by_kind.items() if kind not in ("valid", "irrelevant", "duplicate")
    )


def by_minute_and_category(rows: dict) -> dict:
    """Sales summed over currencies (the first release's rows are kept under the mixed
    currency): purchases, units and the amounts' sum, per minute and category."""
    out: dict = defaultdict(lambda: {"purchases": 0, "units": 0, "revenue": 0.0})
    for (minute, category, _), row in rows.items():
        for m in ("purchases", "units", "revenue"):
            out[(minute, category)][m] += row[m]
    return {k: {m: round(v, 2) for m, v in row.items()} for k, row in out.items()}


def test_a_first_release_deployment_is_upgraded_in_place_losing_and_repeating_nothing(ctx, sandbox):
    b = ctx.settings.bucket
    boxes = {
        engine: dataclasses.replace(
            sandbox, prefix=f"{sandbox.prefix}/{engine}", pg_schema=f"{sandbox.pg_schema}_{engine}"
        )
        for engine in ENGINES
    }
    for box in boxes.values():
        migrate_schema(ctx, box.pg_schema)  # the pipeline's records; then the first release's
        conn = store.connect(ctx.analytics_db, schema=box.pg_schema)
        with conn.cursor() as cur:
            cur.execute(FIRST_RELEASE_DDL)
        conn.commit()
        conn.close()
    try:
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
        waves = [
            generate(700, seed=721 + i, start=start, bad_share=0.05, duplicate_share=0.03)
            for i in range(4)
        ]
        records, ends = [], []
        end: Counter[int] = Counter()

        def send(wave) -> None:
            record = produce(
                wave, topic=sandbox.topic, bootstrap_servers=ctx.settings.kafka_bootstrap
            )
            for box in boxes.values():
                conn = store.connect(ctx.analytics_db, schema=box.pg_schema)
                store.record_run(conn, record)  # what the reconciliation accounts for
                conn.close()
            records.append(record)
            end.update(record.by_partition)
            ends.append({int(p): n for p, n in end.items()})

        for wave, queries in zip(waves, RUNS, strict=False):
            send(wave)
            run_first_release(ctx, boxes, queries)
        for box in boxes.values():
            for query_name in ("lake", "category_sales"):
                uncommit_last_batch(ctx, box, query_name)

        # The launch refuses the first release's root, and so does the driver started by hand.
        with pytest.raises(preflight.PreflightError, match="make upgrade"):
            preflight.checkpoint_positions(
                s3(ctx), b, boxes["rows"].checkpoint_prefix, sandbox.topic
            )
        refused = run_submit(ctx, boxes["rows"].stream_job(ctx, mode="bounded"))
        assert refused.returncode == 2, refused.stderr[-3000:]
        assert "make upgrade" in refused.stdout + refused.stderr

        # A partition added while the stream is down: no first-release query read it.
        admin = AdminClient({"bootstrap.servers": ctx.settings.kafka_bootstrap})
        admin.create_partitions([NewPartitions(sandbox.topic, 4)])[sandbox.topic].result(30)
        send(waves[3])  # produced while the stream is down for its upgrade
        assert records[-1].by_partition.get(3, 0) > 0, records[-1].by_partition
        expected = {
            "lake": ends[2],
            "category_sales_minute": ends[1],
            "dead_letter": ends[1],
            "funnel_minute": ends[0],
        }
        read, _ = checkpoint.s3_reader(s3(ctx), b)
        for box in boxes.values():
            migrate_schema(ctx, box.pg_schema)  # adopts the first release's tables
            job = UpgradeJob(
                topic=box.topic,
                lake_path=pipeline.s3a(b, box.lake_prefix),
                dead_letter_path=pipeline.s3a(b, box.dead_letter_prefix),
                checkpoint_root=pipeline.s3a(b, box.checkpoint_prefix),
                s3_endpoint=ctx.settings.s3_endpoint,
                pg_schema=box.pg_schema,
            )
            done = upgrade(ctx, job)
            assert done.returncode == 0, done.stderr[-3000:]
            assert json.loads(done.stdout)["upgraded"] is True
            again = upgrade(ctx, job)  # a second run changes nothing
            assert again.returncode == 0, again.stderr[-3000:]
            plan = checkpoint.ResumePlan.from_json(
                read(f"{box.checkpoint_prefix}/{checkpoint.RESUME_PLAN}") or ""
            )
            assert plan.floors == expected, (plan.floors, expected)
            # The launch now passes, and its retention guard checks the plan's start.
            positions = preflight.checkpoint_positions(s3(ctx), b, box.checkpoint_prefix, box.topic)
            assert [p.offsets for p in positions] == [{box.topic: ends[0]}]

        streams = {
            engine: subprocess.Popen(
                submit_argv(ctx, job := box.stream_job(ctx, mode="bounded", engine=engine)),
                env=submit_env(ctx, job),
                stdout=subprocess.DEVNULL,
                stderr=open(ctx.settings.logs_dir / f"upgrade-{sandbox.id}-{engine}.log", "w"),  # noqa: SIM115
            )
            for engine, box in boxes.items()
        }
        for engine, proc in streams.items():
            assert proc.wait(600) == 0, f"the {engine} stream failed (see its log)"

        produced = [p for wave in waves for p in wave]
        valid = sum(r.valid for r in records)
        bad = sum(bad_of(r) for r in records)
        want_sales = by_minute_and_category(oracle_sales(produced))
        want_funnel = {k: v["events"] for k, v in oracle_funnel(produced).items()}
        for engine, box in boxes.items():
            lake, dead = (pipeline.s3a(b, p) for p in (box.lake_prefix, box.dead_letter_prefix))
            final = lake_report(ctx, lake, dead)
            assert final["rows"] == final["distinct_ids"] == valid, (engine, final)
            assert final["dead_letter_rows"] == bad, (engine, final)
            report = reconcile_sandbox(ctx, box, start)
            assert report["ok"], (engine, report["problems"])
            assert (report["landed"], report["missing"]) == (valid, 0), engine
            got_sales = by_minute_and_category(postgres_sales(ctx, box.pg_schema))
            assert got_sales == want_sales, engine
            got_funnel = {k: v["events"] for k, v in postgres_funnel(ctx, box.pg_schema).items()}
            assert got_funnel == want_funnel, engine
            # The stream's own counts (stream_progress) are of what it wrote: the last wave's
            # valid events, the dead letters after the second wave.
            batches = stream_progress(ctx, box.pg_schema)[pipeline.STREAM_QUERY]
            landed, dead_lettered = (
                sum(r["observed"].get(m, {}).get(k, 0) for r in batches)
                for m, k in (("lake", "landed"), ("dead_letter", "dead_lettered"))
            )
            dead_after = bad - bad_of(records[0]) - bad_of(records[1])
            assert (landed, dead_lettered) == (records[3].valid, dead_after), engine
            mixed = query(
                ctx,
                box.pg_schema,
                "SELECT count(*) FROM category_sales_minute WHERE currency = %s",
                (store.MIXED_CURRENCY,),
            )[0][0]
            assert mixed > 0, "the first release's rows were not adopted"
    finally:
        for box in boxes.values():
            drop_sandbox(ctx, box.prefix, box.pg_schema)
