"""Compaction of a day of many small files: files and bytes before and after, MB/s per core,
where the run's time goes (its phases), and the scan time of the day before (the small Parquet
files) and after (the Iceberg table).

The day is synthetic and sized like a day the stream lands at its default trigger: ``files``
small files (≥ 2,000 by default) holding ``events`` generator events, landed by the tests'
seeder (``tests/integration/seed_lake.py``: the real generator, the stream's own parse /
validate / enrich transforms, Spark's file sink with its ``_spark_metadata`` log; 24 hourly
partitions, ``files / 24`` write tasks each). ``compact_events.py`` runs on it into a fresh
warehouse prefix and catalog schema and reports its own seconds from the read to the committed
write (JVM start left out) and per phase. The scan is the same query with the same reader both
times, pyarrow's dataset over the day's files: a per-category revenue sum over four columns.
"Before" lists the day's prefix in S3 (what a reader of the raw lake must do); "after" plans the
files from Iceberg's metadata (pyiceberg), as a warehouse reader does.
"""

from __future__ import annotations

import os
import statistics
import time
import uuid

from bench.sandbox import analytics_schema, dropped_after

COLUMNS = ["category", "event_type", "price", "quantity"]


def _s3fs(ctx):
    return ctx.s3_root.pyarrow_filesystem()


def _query(paths: list[str], s3) -> float:
    """Per-category revenue of purchases over ``paths``; returns the total (a checksum)."""
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    table = ds.dataset(paths, format="parquet", filesystem=s3).to_table(columns=COLUMNS)
    table = table.filter(pc.equal(table["event_type"], "purchase"))
    table = table.append_column(
        "revenue", pc.multiply(table["price"].cast("double"), table["quantity"].cast("double"))
    )
    by_category = table.group_by("category").aggregate([("revenue", "sum")])
    return float(pc.sum(by_category["revenue_sum"]).as_py() or 0.0)


def _raw_files(s3, bucket: str, prefix: str, day: str) -> list[str]:
    from pyarrow import fs

    infos = s3.get_file_info(fs.FileSelector(f"{bucket}/{prefix}/event_date={day}", recursive=True))
    return [i.path for i in infos if i.type == fs.FileType.File and i.path.endswith(".parquet")]


def _timed(fn, reps: int, warmup: int) -> dict:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "max_s": max(times)}


DAY = "2026-11-20"  # the synthetic day (any past day: the sandbox is new each run)


def seed_day(ctx, root: str, files: int, events: int) -> str:
    """Land ``events`` events of :data:`DAY` as ~``files`` small files under ``root``; return
    the lake's prefix."""
    from datetime import date

    from include import pipeline
    from tests.integration import seed_lake
    from tests.integration.lake_checks import reader, stop_reader

    prefix = f"{root}/raw/events"
    tasks = max(1, -(-files // 24))  # each task writes one file per hour of the day
    t0 = time.perf_counter()
    # a benchmark day is larger than the tests' (the seeder's aggregates, its write)
    memory = f"{max(1, -(-events // 500_000))}g"
    seed_lake.seed(
        reader(ctx, driver_memory=memory),
        pipeline.s3a(ctx.settings.bucket, prefix),
        {date.fromisoformat(DAY): events},
        tasks,
    )
    stop_reader()  # its JVM's memory back before the compaction's
    print(f"    seeded {events:,} events in {time.perf_counter() - t0:.0f} s", flush=True)
    return prefix


def run(ctx, *, files: int, events: int, reps: int = 5, warmup: int = 1) -> dict:
    from include.lake.s3 import sandbox_prefix

    sid = uuid.uuid4().hex[:8]
    root = sandbox_prefix(f"bench-compaction-{sid}")
    with dropped_after(ctx, root):  # the day's lake and warehouse
        return _run(ctx, root, sid, files, events, reps, warmup)


def _run(ctx, root: str, sid: str, files: int, events: int, reps: int, warmup: int) -> dict:
    from include import pipeline

    lake_prefix = seed_day(ctx, root, files, events)
    warehouse = pipeline.s3a(ctx.settings.bucket, f"{root}/warehouse")
    schema = f"bench_c_{sid}"
    with analytics_schema(ctx, schema):  # the catalog's and the runs' tables
        return _measure(ctx, lake_prefix, schema, warehouse, reps, warmup)


def _measure(ctx, lake_prefix: str, schema: str, warehouse: str, reps: int, warmup: int) -> dict:
    from devstack import spark as spark_cli
    from include import pipeline
    from include.spark.jobs import CompactJob
    from include.warehouse import catalog

    b = ctx.settings.bucket
    s3 = _s3fs(ctx)
    day = DAY
    job = CompactJob.parse(
        day=str(day), lake_path=pipeline.s3a(b, lake_prefix), warehouse=warehouse, pg_schema=schema
    )
    code, report = spark_cli.compact(ctx, job, log_name="bench-compact.log")
    if code != 0 or report.get("status") != "verified":
        raise RuntimeError(f"compaction of {day} did not verify: {report}")
    src, dst = report["source"], report["target"]
    seconds = report["seconds"]["read_dedupe_write"]
    phases = report.get("phases", {})
    cores = os.cpu_count() or 1  # local[*]: every core

    table = catalog.load_pyiceberg(
        ctx.analytics_db,
        schema,
        warehouse,
        ctx.s3_root,
    ).load_table(f"{pipeline.WAREHOUSE_NAMESPACE}.{catalog.EVENTS_TABLE}")

    def scan_raw() -> float:
        return _query(_raw_files(s3, b, lake_prefix, day), s3)

    def scan_iceberg() -> float:
        from pyiceberg.expressions import EqualTo

        table.refresh()
        tasks = table.scan(row_filter=EqualTo("event_date", day)).plan_files()
        return _query([t.file.file_path.split("://", 1)[1] for t in tasks], s3)

    # Same answer both ways (the raw files hold duplicates the warehouse removed: close, not
    # necessarily equal), then the timings.
    raw_total, ice_total = scan_raw(), scan_iceberg()
    before = _timed(scan_raw, reps, warmup)
    after = _timed(scan_iceberg, reps, warmup)
    return {
        "day": day,
        "engine": report.get("engine"),
        "rows": dst["rows"],
        "files_before": src["files"],
        "bytes_before": src["bytes"],
        "files_after": dst["files"],
        "bytes_after": dst["bytes"],
        "seconds": seconds,
        "phases": phases,
        "cores": cores,
        "mb_per_s_per_core": src["bytes"] / 1024**2 / seconds / cores,
        "scan_before": before,
        "scan_after": after,
        "scan_revenue": {"raw": raw_total, "iceberg": ice_total},
        "file_reduction": src["files"] / max(1, dst["files"]),
        "scan_speedup": before["median_s"] / after["median_s"],
    }
