"""Nightly compaction on the real stack: Spark, MinIO, the Iceberg JDBC catalog in Postgres,
pyiceberg, Airflow.

A day landed by Spark's file sink as ~670 small files compacts into a few files near the
target size; the table holds each distinct event once; the marts equal a recomputation (from
pyiceberg's read of the table); re-running the day changes nothing; a run killed mid-write
leaves no commit and the re-run completes; a mart is rebuilt from the table; broken rows stop
the run before it writes; a backfill of days through Airflow works; late events reach the
table before and after raw retention, which deletes only what a verified run read; a failed
verification undoes its own day only.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest

from devstack import environment
from devstack import spark as spark_cli
from devstack.demo import api
from include import pipeline
from include.lake.s3 import sandbox_prefix
from include.spark.jobs import CompactJob
from include.supervision import checkpoint
from include.warehouse import catalog, tasks
from tests.integration import seed_lake
from tests.integration.conftest import (
    airflow_dags_test,
    drop_sandbox,
    migrate_schema,
    s3,
    spawn,
)
from tests.integration.lake_checks import query, reader
from tests.integration.phases import timed

BIG_DAY = "2026-11-10"
SMALL_DAYS = ("2026-11-11", "2026-11-12")
BROKEN_DAY = "2026-11-13"
TARGET_MB = 0.25
TARGET = int(TARGET_MB * 1024 * 1024)


@dataclass
class Warehouse:
    prefix: str
    pg_schema: str
    seeded: dict  # day -> rows, distinct_ids, revenue (what the seed job landed)
    # A warehouse for runs the scheduler makes: its tasks hold the stack's real connections,
    # whose S3 users write only the real prefixes, so its lakes and tables sit under those
    # (raw/it-<id>-<which>/, warehouse/it-<id>/) instead of the tests' sandbox root.
    scheduled: bool = False

    def lake_prefix(self, which: str) -> str:
        if self.scheduled:
            return f"raw/{self.prefix.replace('/', '-')}-{which}/events"
        return f"{self.prefix}/{which}/raw/events"

    @property
    def warehouse_prefix(self) -> str:
        if self.scheduled:
            return f"warehouse/{self.prefix.replace('/', '-')}"
        return f"{self.prefix}/warehouse"

    def prefixes(self, *lakes: str) -> list[str]:
        """What the warehouse occupies in S3 (its lakes and its tables)."""
        if not self.scheduled:
            return [self.prefix]
        return [self.lake_prefix(w).removesuffix("/events") for w in lakes] + [
            self.warehouse_prefix
        ]


def _seed_small(ctx, box: Warehouse) -> None:
    small = {date.fromisoformat(d): 2_000 for d in (*SMALL_DAYS, BROKEN_DAY)}
    box.seeded.update(
        seed_lake.seed(
            reader(ctx),
            pipeline.s3a(ctx.settings.bucket, box.lake_prefix("small")),
            small,
            2,
            break_day=date.fromisoformat(BROKEN_DAY),
        )
    )


@pytest.fixture(scope="module")
def wh(ctx):
    sid = uuid.uuid4().hex[:10]
    box = Warehouse(prefix=sandbox_prefix(sid), pg_schema=f"it_{sid}", seeded={})
    migrate_schema(ctx, box.pg_schema)
    b = ctx.settings.bucket
    # One lake with a big day (~28 write tasks x 24 hours of small files; `make bench` compacts
    # a day of ~2,000), one with small days
    # (each lake is one file sink: one streaming query, one metadata log).
    session = reader(ctx)
    box.seeded.update(
        seed_lake.seed(
            session,
            pipeline.s3a(b, box.lake_prefix("big")),
            {date.fromisoformat(BIG_DAY): 20_000},
            28,
        )
    )
    _seed_small(ctx, box)
    yield box
    drop_sandbox(ctx, box.prefix, box.pg_schema)


@pytest.fixture
def scheduled_wh(ctx):
    """The small lake again, for a backfill the scheduler runs (see Warehouse.scheduled)."""
    sid = uuid.uuid4().hex[:10]
    box = Warehouse(sandbox_prefix(sid), f"it_{sid}", seeded={}, scheduled=True)
    migrate_schema(ctx, box.pg_schema)
    _seed_small(ctx, box)
    yield box
    for prefix in box.prefixes("small"):
        drop_sandbox(ctx, prefix, box.pg_schema)


@timed
def compact(
    ctx, wh: Warehouse, day: str, which: str = "big", log_name: str = "compact.log", **options
):
    return spark_cli.compact(ctx, compact_job(ctx, wh, day, which, **options), log_name=log_name)


def compact_job(ctx, wh: Warehouse, day: str, which: str = "big", **options) -> CompactJob:
    b = ctx.settings.bucket
    return CompactJob(
        day=date.fromisoformat(day),
        lake_path=pipeline.s3a(b, wh.lake_prefix(which)),
        warehouse=pipeline.s3a(b, wh.warehouse_prefix),
        pg_schema=wh.pg_schema,
        target_file_mb=TARGET_MB,
        **options,
    )


def iceberg(ctx, wh: Warehouse):
    return catalog.load_pyiceberg(
        ctx.analytics_db,
        wh.pg_schema,
        pipeline.s3a(ctx.settings.bucket, wh.warehouse_prefix),
        ctx.s3_root,
    )


def read_day(ctx, wh: Warehouse, table: str, day: str, column: str) -> pd.DataFrame:
    frame = iceberg(ctx, wh).load_table(table).scan().to_pandas()
    return frame[frame[column].astype(str) == day].reset_index(drop=True)


def recompute_sales(events: pd.DataFrame) -> pd.DataFrame:
    p = events[events["is_relevant"] & (events["event_type"] == "purchase")].copy()
    p["amount"] = p["price"] * p["quantity"]
    out = p.groupby(["category", "currency"]).agg(
        revenue=("amount", "sum"),
        orders=("event_id", "count"),
        units=("quantity", "sum"),
        buyers=("user_id", "nunique"),
    )
    out["revenue"] = out["revenue"].round(2)
    out["avg_order_value"] = (out["revenue"] / out["orders"]).round(2)
    return out.sort_index()


def recompute_funnel(events: pd.DataFrame) -> dict:
    r = events[events["is_relevant"]]

    def sessions(*types: str) -> int:
        return r[r["event_type"].isin(types)]["session_id"].nunique()

    return {
        "views": sessions("page_view", "product_view"),
        "clicks": sessions("click"),
        "carts": sessions("add_to_cart"),
        "checkouts": sessions("checkout"),
        "purchases": sessions("purchase"),
    }


def assert_day_correct(ctx, wh: Warehouse, day: str) -> pd.DataFrame:
    """Table = the distinct seeded events; marts = a recomputation from the table."""
    events = read_day(ctx, wh, "analytics.events", day, "event_date")
    seeded = wh.seeded[day]
    assert len(events) == seeded["distinct_ids"] and events["event_id"].is_unique
    purchases = events[events["is_relevant"] & (events["event_type"] == "purchase")]
    assert round((purchases["price"] * purchases["quantity"]).sum(), 2) == pytest.approx(
        seeded["revenue"], abs=0.01
    )
    sales = read_day(ctx, wh, "marts.daily_sales_by_category", day, "day")
    mart = sales.set_index(["category", "currency"]).sort_index()[
        ["revenue", "orders", "units", "buyers", "avg_order_value"]
    ]
    pd.testing.assert_frame_equal(
        mart, recompute_sales(events), check_dtype=False, check_names=False, atol=0.011
    )
    funnel = read_day(ctx, wh, "marts.daily_funnel", day, "day")
    assert len(funnel) == 1
    stages = recompute_funnel(events)
    assert {k: int(funnel.iloc[0][k]) for k in stages} == stages
    assert funnel.iloc[0]["views_to_purchases"] == pytest.approx(
        round(stages["purchases"] / stages["views"], 4)
    )
    return events


def data_files(ctx, wh: Warehouse) -> dict[str, datetime]:
    """The events table's data files in S3 (committed or not): key -> last modified."""
    client = s3(ctx)
    return {
        o["Key"]: o["LastModified"]
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=ctx.settings.bucket, Prefix=f"{wh.warehouse_prefix}/analytics/events/data/"
        )
        for o in page.get("Contents", [])
    }


def run_record(ctx, wh: Warehouse, day: str) -> tuple:
    rows = query(
        ctx, wh.pg_schema, "SELECT status, rows FROM compaction_runs WHERE day = %s", (day,)
    )
    return rows[0] if rows else None


def test_a_day_of_small_files_compacts_verified_idempotent_and_crash_safe(ctx, wh):
    code, first = compact(ctx, wh, BIG_DAY)
    assert code == 0, first
    assert first["engine"] == "arrow"  # a day this size goes through Arrow in the driver
    src, dst = first["source"], first["target"]
    assert src["files"] >= 600, f"the seed landed only {src['files']} files"
    assert dst["files"] * 100 <= src["files"], (src["files"], dst["files"])
    assert dst["rows"] == wh.seeded[BIG_DAY]["distinct_ids"] < src["rows"]  # copies removed
    events = assert_day_correct(ctx, wh, BIG_DAY)
    assert run_record(ctx, wh, BIG_DAY) == ("verified", len(events))

    # Killed while writing: a data file of the new write is in S3 and the commit has not
    # happened (observed, not timed) -> no commit (the table is what it was).
    table = iceberg(ctx, wh).load_table("analytics.events")
    before = table.current_snapshot().snapshot_id
    written = set(data_files(ctx, wh))
    job = compact_job(ctx, wh, BIG_DAY)
    log = ctx.settings.logs_dir / "compact_killed.log"
    proc = spawn(ctx, spark_cli.submit_argv(ctx, job), spark_cli.submit_env(ctx, job), log.name)
    try:
        deadline = time.monotonic() + 300
        while not set(data_files(ctx, wh)) - written:
            assert proc.poll() is None, f"compaction ended before writing; see {log}"
            assert time.monotonic() < deadline, f"compaction never started writing; see {log}"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
    after_kill = iceberg(ctx, wh).load_table("analytics.events").current_snapshot().snapshot_id
    assert after_kill == before, "the killed run committed: it was not killed mid-write"
    assert set(data_files(ctx, wh)) - written, "the killed run's files stay, unreferenced"

    # The re-run completes, to the same tables, here through Spark's engine (the one for a
    # day larger than the driver's memory): the same rows either way. Its plan uses the
    # bytes per row the table measured, so every file lands within +-25 % of the target.
    code, again = compact(ctx, wh, BIG_DAY, arrow_max_mb=0.0)
    assert code == 0, again
    assert again["engine"] == "spark"
    assert {k: again["source"][k] for k in src} == src, "both engines read the same day"
    assert again["target"]["rows"] == dst["rows"]
    assert all(0.75 * TARGET <= size <= 1.25 * TARGET for size in again["target"]["file_bytes"]), (
        again["target"]["file_bytes"]
    )
    rerun = assert_day_correct(ctx, wh, BIG_DAY)
    assert sorted(rerun["event_id"]) == sorted(events["event_id"])
    assert iceberg(ctx, wh).load_table("analytics.events").current_snapshot().snapshot_id != before


def test_a_mart_is_rebuilt_from_the_events_table(ctx, wh):
    """The funnel mart loses the big day's rows (a mart added after the day was compacted
    lacks them the same way); the rebuild_marts DAG (`make marts` runs the same app) for that mart
    and day makes them again from the events table, equal to a recomputation; the sales mart
    gets no commit."""
    from pyiceberg.expressions import EqualTo

    cat = iceberg(ctx, wh)
    cat.load_table("marts.daily_funnel").delete(EqualTo("day", BIG_DAY))
    assert read_day(ctx, wh, "marts.daily_funnel", BIG_DAY, "day").empty
    sales_before = cat.load_table("marts.daily_sales_by_category").current_snapshot().snapshot_id
    funnel_before = len(cat.load_table("marts.daily_funnel").snapshots())
    conf = {
        "bucket": ctx.settings.bucket,
        "warehouse_prefix": wh.warehouse_prefix,
        "pg_schema": wh.pg_schema,
        "since": BIG_DAY,
        "until": BIG_DAY,
        "marts": ["daily_funnel"],
    }
    assert airflow_dags_test(ctx, "rebuild_marts", conf) == "success"
    assert_day_correct(ctx, wh, BIG_DAY)
    cat = iceberg(ctx, wh)
    assert len(cat.load_table("marts.daily_funnel").snapshots()) == funnel_before + 1
    sales = cat.load_table("marts.daily_sales_by_category").current_snapshot()
    assert sales.snapshot_id == sales_before


def test_broken_rows_stop_the_run_before_it_writes(ctx, wh):
    code, report = compact(ctx, wh, BROKEN_DAY, which="small", log_name="compact_broken.log")
    assert code == 1
    assert "price below 0" in report["error"] and "nothing was written" in report["error"]
    assert run_record(ctx, wh, BROKEN_DAY) == ("failed", None)
    cat = iceberg(ctx, wh)
    if cat.table_exists("analytics.events"):
        assert read_day(ctx, wh, "analytics.events", BROKEN_DAY, "event_date").empty


def small_lake_conf(ctx, wh: Warehouse, **extra) -> dict:
    """``compact_warehouse`` params for the small lake of this module."""
    return {
        "bucket": ctx.settings.bucket,
        "lake_prefix": wh.lake_prefix("small"),
        "warehouse_prefix": wh.warehouse_prefix,
        "pg_schema": wh.pg_schema,
        "target_file_mb": TARGET_MB,
        **extra,
    }


def test_backfill_of_days_through_airflow(ctx, scheduled_wh):
    """A backfill of two days, run by the scheduler with the stack's own connections."""
    wh = scheduled_wh
    conf = small_lake_conf(ctx, wh)
    argv = [
        str(environment.venv_bin() / "airflow"),
        "backfill",
        "create",
        "--dag-id",
        "compact_warehouse",
        "--from-date",
        f"{SMALL_DAYS[0]}T00:00:00+00:00",
        "--to-date",
        f"{SMALL_DAYS[-1]}T12:00:00+00:00",
        "--dag-run-conf",
        json.dumps(conf),
        "--reprocess-behavior",
        "completed",
    ]
    proc = subprocess.run(argv, capture_output=True, text=True, env=ctx.env, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    client = api(ctx)
    # The scheduler runs a backfill only while its DAG is unpaused (unpausing also creates
    # the latest nightly run: the default lake's yesterday, empty here, is left alone).
    client.unpause("compact_warehouse")
    try:
        states = _wait_for_backfill(client, wh.pg_schema)
    finally:
        client.pause("compact_warehouse")
    assert states == ["success"] * len(SMALL_DAYS), states
    for day in SMALL_DAYS:
        assert run_record(ctx, wh, day)[0] == "verified"
        assert_day_correct(ctx, wh, day)


def _wait_for_backfill(client, pg_schema: str, timeout: float = 900) -> list[str]:
    deadline = time.monotonic() + timeout
    while True:
        runs = [
            r
            for r in client.get("/api/v2/dags/compact_warehouse/dagRuns?limit=100")["dag_runs"]
            if r["run_type"] == "backfill" and (r.get("conf") or {}).get("pg_schema") == pg_schema
        ]
        states = sorted(r["state"] for r in runs)
        if len(runs) == len(SMALL_DAYS) and set(states) <= {"success", "failed"}:
            return states
        assert time.monotonic() < deadline, f"backfill runs not finished: {states}"
        time.sleep(5)


def test_late_events_reach_the_warehouse_and_retention_deletes_only_what_it_holds(
    ctx, wh, monkeypatch
):
    """Events of a compacted day that land two days later are in Iceberg after the next
    nightly run; raw retention deletes only files a verified run read: a file that lands after
    its day was expired is kept, its events appended by the next run (beside the table's rows
    of the deleted files), then expired; a failed day keeps its files."""
    d0, d1 = SMALL_DAYS
    lake = pipeline.s3a(ctx.settings.bucket, wh.lake_prefix("small"))
    code, _ = compact(ctx, wh, d1, which="small", log_name="compact_small.log")
    assert code == 0
    compacted_at = query(
        ctx, wh.pg_schema, "SELECT run_at FROM compaction_runs WHERE day = %s", (d1,)
    )

    def raw_objects(day: str) -> int:
        prefix = f"{wh.lake_prefix('small')}/event_date={day}/"
        listing = s3(ctx).list_objects_v2(Bucket=ctx.settings.bucket, Prefix=prefix)
        return listing.get("KeyCount", 0)

    def add_late(day: str, n: int, seed: int) -> set[str]:
        list_keys = checkpoint.s3_reader(s3(ctx), ctx.settings.bucket)[1]
        batch = checkpoint.sink_log_batch(wh.lake_prefix("small"), list_keys) + 1
        late = seed_lake.append_late(reader(ctx), lake, batch, date.fromisoformat(day), n, seed)
        wh.seeded[day]["distinct_ids"] += len(late["ids"])
        wh.seeded[day]["revenue"] = round(wh.seeded[day]["revenue"] + late["revenue"], 2)
        return late["ids"]

    # Events of d1 land after d1 was compacted. The nightly run of d0 (retention on) compacts
    # d0, finds d1's late files in the sink's log and appends their events, then expires both.
    late_d1 = add_late(d1, 40, seed=101)
    conf = small_lake_conf(ctx, wh, day=d0, raw_retention_days=1)
    assert airflow_dags_test(ctx, "compact_warehouse", conf) == "success"
    assert late_d1 <= set(read_day(ctx, wh, "analytics.events", d1, "event_date")["event_id"])
    assert_day_correct(ctx, wh, d1)
    rerun = query(ctx, wh.pg_schema, "SELECT run_at FROM compaction_runs WHERE day = %s", (d1,))
    assert rerun[0][0] > compacted_at[0][0]
    assert [raw_objects(d) for d in SMALL_DAYS] == [0] * len(SMALL_DAYS)
    assert raw_objects(BROKEN_DAY) > 0  # its compaction failed: kept

    # Events of d0 land after d0's raw files were expired. Retention run now keeps them (no
    # verified run read them); readers still see them (only deleted files are skipped).
    late_d0 = add_late(d0, 25, seed=202)
    for key, value in environment.connection_env(ctx.settings, ctx.secrets, sandbox=True).items():
        monkeypatch.setenv(key, value)
    params = {**conf, "lake_prefix": wh.lake_prefix("small")}
    assert tasks.expire_raw(params) == {}
    assert raw_objects(d0) > 0

    # The next run (of d1: nothing new, left alone) appends d0's late events to the table
    # (the rows of its deleted files stay); then the late files are expired too.
    code, report = compact(ctx, wh, d1, which="small", log_name="compact_late.log")
    assert code == 0, report
    assert report["status"] == "empty"
    # Appended, not rewritten: only its late events are new in the table.
    assert [(d["day"], d["appended"], d["status"]) for d in report["late_days"]] == [
        (d0, len(late_d0), "verified")
    ]
    assert late_d0 <= set(read_day(ctx, wh, "analytics.events", d0, "event_date")["event_id"])
    assert_day_correct(ctx, wh, d0)
    assert set(tasks.expire_raw(params)) == {d0}
    assert raw_objects(d0) == 0

    assert run_record(ctx, wh, d0)[0] == "verified"
    assert_day_correct(ctx, wh, d1)  # the run of d1, all of its raw files expired, left it


def local_iceberg_catalog(spark, prefix: str, directory) -> str:
    """A new Iceberg catalog of the session (Spark's Iceberg runtime, a Hadoop catalog in
    ``directory``): its name."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    spark.conf.set(f"spark.sql.catalog.{name}", "org.apache.iceberg.spark.SparkCatalog")
    spark.conf.set(f"spark.sql.catalog.{name}.type", "hadoop")
    spark.conf.set(f"spark.sql.catalog.{name}.warehouse", f"file:{directory}")
    return name


def test_write_audit_publish_never_shows_an_unverified_day(ctx, tmp_path):
    """Compaction's write-audit-publish (spark_apps/compact_events.py) on a real Iceberg table
    (Spark's Iceberg runtime, a Hadoop catalog in a temporary directory), runs interleaved as
    a backfill beside the nightly run interleaves them:

    * a run's day is on its own branch until published: ``main`` does not show it;
    * a failed audit publishes nothing: no commit of ``main``'s history ever held the rejected
      rows, and another day committed meanwhile stays;
    * a day published after ``main`` moved on (another day committed meanwhile) is
      cherry-picked: both days are there;
    * a fast-forward refused because another run published between its check and its commit
      falls back to the cherry-pick;
    * two runs of one day: the second to publish is refused, ``main`` keeps the first's day;
    * every run's branch is gone when it ends.
    """
    import pyarrow as pa
    from pyarrow import fs
    from pyspark.sql import functions as F

    from spark_apps import compact_events as E

    spark = reader(ctx)
    local = fs.LocalFileSystem()  # the compaction's Arrow writer, on the catalog's directory
    name = local_iceberg_catalog(spark, "wap", tmp_path)
    table = f"{name}.db.events"
    spark.sql(
        f"CREATE TABLE {table} (event_id string, event_time timestamp) USING iceberg "
        f"PARTITIONED BY (days(event_time))"
    )
    day_a, day_b = date(2026, 11, 20), date(2026, 11, 21)

    def rows(day: date, ids: list[str]) -> pa.Table:
        at = datetime.combine(day, datetime.min.time(), tzinfo=UTC) + timedelta(hours=5)
        return pa.table(
            {"event_id": ids, "event_time": pa.array([at] * len(ids), pa.timestamp("us", "UTC"))}
        )

    def ids_of(day: date, source: str = table, snapshot: int | None = None) -> list[str]:
        reader_ = spark.read.option("versionAsOf", snapshot) if snapshot else spark.read
        frame = reader_.table(source).where(F.to_date("event_time") == F.lit(day.isoformat()))
        return sorted(r[0] for r in frame.select("event_id").collect())

    def write(branch: str, day: date, ids: list[str]) -> None:
        E.write_files(spark, table, branch, local, day, [rows(day, ids)], replace=True)

    def refs() -> set[str]:
        return {r[0] for r in spark.sql(f"SELECT name FROM {table}.refs").collect()}

    # The first day of an empty table.
    with E.audit_branch(spark, table, day_a) as first:
        write(first, day_a, ["a1", "a2", "a3"])
        assert ids_of(day_a, E.on_branch(table, first)) == ["a1", "a2", "a3"]
        assert ids_of(day_a) == [], "main shows a day before its audit"
        E.publish(spark, table, first)
    assert ids_of(day_a) == ["a1", "a2", "a3"]

    # A rewrite of day A fails its audit while another run commits day B.
    with pytest.raises(E.CompactionFailed), E.audit_branch(spark, table, day_a) as rejected:
        write(rejected, day_a, ["a1", "bad"])
        with E.audit_branch(spark, table, day_b) as other:
            write(other, day_b, ["b1", "b2"])
            E.publish(spark, table, other)
        raise E.CompactionFailed("verification failed")  # what compact() does then
    assert ids_of(day_a) == ["a1", "a2", "a3"]
    assert ids_of(day_b) == ["b1", "b2"]
    history = [r[0] for r in spark.sql(f"SELECT snapshot_id FROM {table}.history").collect()]
    assert all("bad" not in ids_of(day_a, snapshot=s) for s in history)
    assert refs() == {"main"}

    # Day A audited while day B is committed again: A is cherry-picked onto the new main.
    with E.audit_branch(spark, table, day_a) as late:
        write(late, day_a, ["a1", "a2", "a3", "a4"])
        with E.audit_branch(spark, table, day_b) as other:
            write(other, day_b, ["b1", "b2", "b3"])
            E.publish(spark, table, other)
        E.publish(spark, table, late)
    assert ids_of(day_a) == ["a1", "a2", "a3", "a4"]
    assert ids_of(day_b) == ["b1", "b2", "b3"]

    # Two runs publishing at once: day A's run checked that main had not moved, then day B's
    # published before A's fast-forward committed. Iceberg refuses that fast-forward (it
    # re-checks at the commit); A's publication then cherry-picks.
    with E.audit_branch(spark, table, day_a) as racing:
        write(racing, day_a, ["a1", "a2", "a3", "a5"])
        checked = E._iceberg(spark, table)  # A's view of main when it checked
        with E.audit_branch(spark, table, day_b) as other:
            write(other, day_b, ["b1", "b2", "b3", "b4"])
            E.publish(spark, table, other)
        assert "Cannot fast-forward" in (E.fast_forward(checked, racing) or "")
        E.publish(spark, table, racing)
    assert ids_of(day_a) == ["a1", "a2", "a3", "a5"]
    assert ids_of(day_b) == ["b1", "b2", "b3", "b4"]

    # Two runs of day B: the one that publishes second is refused.
    with E.audit_branch(spark, table, day_b) as slow:
        write(slow, day_b, ["x"])
        with E.audit_branch(spark, table, day_b) as fast:
            write(fast, day_b, ["y"])
            E.publish(spark, table, fast)
        with pytest.raises(E.PublishConflict, match="partition"):
            E.publish(spark, table, slow)
    assert ids_of(day_b) == ["y"]
    assert ids_of(day_a) == ["a1", "a2", "a3", "a5"]
    assert refs() == {"main"}


def test_a_sales_mart_made_before_currencies_gains_them_and_keeps_its_days(ctx, tmp_path):
    """Upgrading: the sales mart of a deployment from before amounts were kept per currency
    (no ``currency`` column) is written by today's compaction (``ensure_mart`` then the
    day's replacement, as ``write_marts`` does): the column is added, the old day keeps its
    row (currency null: the dashboard shows it as unconverted ``XXX``), and the new day has a
    row per currency, never their sum."""
    from pyspark.sql import functions as F

    from spark_apps import compact_events as E
    from spark_apps.transforms import warehouse as W

    spark = reader(ctx)
    name = local_iceberg_catalog(spark, "mart", tmp_path)
    table = f"{name}.marts.daily_sales_by_category"
    spark.sql(  # the mart as compaction made it before
        f"CREATE TABLE {table} (day date, category string, revenue double, orders bigint, "
        "units bigint, buyers bigint, avg_order_value double) USING iceberg PARTITIONED BY (day)"
    )
    old_day, new_day = date(2026, 11, 20), date(2026, 11, 21)
    spark.sql(f"INSERT INTO {table} VALUES (DATE'{old_day}', 'books', 30.0, 2, 3, 2, 15.0)")
    events = spark.createDataFrame(
        [
            ("u1", "books", 10.0, 2, "USD"),
            ("u2", "books", 4.0, 1, "EUR"),
            ("u3", "books", 6.0, 1, "EUR"),
        ],
        "user_id string, category string, price double, quantity long, currency string",
    ).selectExpr(
        f"DATE'{new_day}' AS event_date", "'purchase' AS event_type", "true AS is_relevant", "*"
    )
    frame = W.daily_sales(events)
    E.ensure_mart(spark, table, frame)
    E.ensure_mart(spark, table, frame)  # the next night: nothing more to add
    E.replace_day(frame.coalesce(1), table, F.col("day") == F.lit(new_day.isoformat()).cast("date"))
    got = {
        (str(r["day"]), r["currency"]): (r["revenue"], r["orders"])
        for r in spark.table(table).collect()
    }
    assert got == {
        (str(old_day), None): (30.0, 2),
        (str(new_day), "USD"): (20.0, 1),
        (str(new_day), "EUR"): (10.0, 2),
    }


def test_weekly_maintenance_through_airflow(ctx, wh):
    """After the runs above (one killed mid-write), maintenance leaves one snapshot per table
    and tables that read the same; unreferenced data files are only the killed run's, younger
    than the orphan margin (Iceberg refuses a margin under a day), so they stay."""
    before = read_day(ctx, wh, "analytics.events", BIG_DAY, "event_date")
    # The run killed mid-write left its audit branch (runs that ended dropped theirs).
    left = set(iceberg(ctx, wh).load_table("analytics.events").metadata.refs) - {"main"}
    assert [b.split("_")[1] for b in left] == [BIG_DAY.replace("-", "")], left
    conf = {
        "bucket": ctx.settings.bucket,
        "warehouse_prefix": wh.warehouse_prefix,
        "pg_schema": wh.pg_schema,
        "snapshot_days": 0,
        "retain_last": 1,
        "orphan_days": 1,
    }
    # Within the grace period the killed run's branch may be a run in progress: it is kept.
    assert airflow_dags_test(ctx, "maintain_warehouse", {**conf, "retain_last": 5}) == "success"
    assert set(iceberg(ctx, wh).load_table("analytics.events").metadata.refs) - {"main"} == left
    conf["audit_grace_hours"] = 0  # older than the grace: the killed run's, removed
    assert airflow_dags_test(ctx, "maintain_warehouse", conf) == "success"
    cat = iceberg(ctx, wh)
    for name in ("analytics.events", "marts.daily_sales_by_category", "marts.daily_funnel"):
        assert len(cat.load_table(name).snapshots()) == 1, name
        assert set(cat.load_table(name).metadata.refs) == {"main"}, name
    table = cat.load_table("analytics.events")
    referenced = {task.file.file_path.split("/", 3)[-1] for task in table.scan().plan_files()}
    stored = data_files(ctx, wh)
    # Files of expired snapshots are gone: what is left is referenced, or a recent orphan.
    assert referenced <= set(stored)
    recent = datetime.now(UTC) - timedelta(hours=1)
    assert all(stored[key] > recent for key in set(stored) - referenced)
    after = read_day(ctx, wh, "analytics.events", BIG_DAY, "event_date")
    assert sorted(after["event_id"]) == sorted(before["event_id"])
