"""The warehouse DAGs' task logic that needs no services: which day, late days, retention."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from include.warehouse import catalog, runs, tasks
from spark_apps import file_sinks


def test_the_day_comes_from_the_data_interval_or_the_param():
    start = datetime(2026, 11, 24, 2, 30, tzinfo=UTC)
    assert tasks.pick_day({"day": None}, start) == "2026-11-24"
    assert tasks.pick_day({"day": "2026-11-01"}, start) == "2026-11-01"
    with pytest.raises(ValueError, match="param day='yesterday'"):
        tasks.pick_day({"day": "yesterday"}, start)
    with pytest.raises(ValueError, match="no data interval"):
        tasks.pick_day({}, None)


def test_a_raw_file_of_the_log_is_an_object_of_the_lake_bucket():
    path = "s3a://lake/raw/events/event_date=2026-11-02/event_hour=3/part-0.parquet"
    assert (
        tasks.s3_key(path, "lake") == "raw/events/event_date=2026-11-02/event_hour=3/part-0.parquet"
    )
    for wrong in ("s3a://other/raw/x.parquet", "file:/tmp/x.parquet", "s3a://lake/"):
        with pytest.raises(ValueError, match="is not an object of bucket 'lake'"):
            tasks.s3_key(wrong, "lake")


def test_late_files_make_a_verified_day_stale_and_only_those_days():
    d1, d2, d3, d4 = (date(2026, 11, n) for n in (1, 2, 3, 4))
    logged = {d1: {"a", "b"}, d2: {"c", "late"}, d3: {"e"}, d4: {"never-compacted"}}
    recorded = {d1: {"a", "b"}, d2: {"c"}, d3: {"e", "expired-since"}}
    # d4 was never verified: a backfill's business, not a late day's.
    assert runs.stale_days(logged, recorded, {d1, d2, d3}) == {d2: {"late"}}
    assert runs.stale_days(logged, {}, {d1}) == {d1: {"a", "b"}}


def test_files_group_by_their_event_day_partition():
    files = [
        "s3a://lake/raw/events/event_date=2026-11-02/event_hour=3/a.parquet",
        "s3a://lake/raw/events/event_date=2026-11-02/event_hour=4/b.parquet",
        "s3a://lake/raw/events/event_date=2026-11-03/event_hour=0/c.parquet",
        "s3a://lake/raw/events/no-partition.parquet",
    ]
    by_day = file_sinks.files_by_day(files)
    assert {d.isoformat(): len(f) for d, f in by_day.items()} == {"2026-11-02": 2, "2026-11-03": 1}


def test_raw_retention_is_off_unless_set():
    assert tasks.expire_raw({"raw_retention_days": None}) == {}
    assert tasks.expire_raw({"raw_retention_days": 0}) == {}


def test_spark_catalog_settings_point_at_the_pipeline_schema_and_warehouse():
    env = {"PGHOST": "db", "PGPORT": "5433", "PGDATABASE": "analytics", "PGUSER": "u"}
    conf = catalog.spark_conf("s3a://lake/warehouse/", "it_1", env)
    assert conf["spark.sql.catalog.lake.uri"] == (
        "jdbc:postgresql://db:5433/analytics?currentSchema=it_1"
    )
    assert conf["spark.sql.catalog.lake.warehouse"] == "s3a://lake/warehouse"
    assert conf["spark.sql.catalog.lake.type"] == "jdbc"
    with pytest.raises(ValueError, match="plain identifier"):
        catalog.spark_conf("s3a://lake/warehouse", "x; drop", env)


def test_maintenance_removes_only_audit_branches_older_than_a_run_takes():
    from spark_apps.compact_events import abandoned_audit_branches, audit_branch_name

    day = date(2026, 11, 20)
    killed = audit_branch_name(day, datetime(2026, 11, 21, 2, 31, tzinfo=UTC), "0a1b2c3d")
    running = audit_branch_name(day, datetime(2026, 11, 29, 3, 55, tzinfo=UTC), "4e5f6a7b")
    assert killed == "audit_20261120_20261121023100_0a1b2c3d"
    legacy = "audit_20261120_9c8d7e6f"  # named before branches said when they were opened
    names = ["main", "nightly-tag", running, killed, legacy]
    cutoff = datetime(2026, 11, 29, 0, 0, tzinfo=UTC)  # maintenance at 04:00, 4 h grace
    assert abandoned_audit_branches(names, cutoff) == sorted([killed, legacy])
    assert running in abandoned_audit_branches(names, datetime(2026, 11, 29, 4, 0, tzinfo=UTC))


def test_running_out_of_memory_names_the_setting_and_other_failures_stay_as_they_are():
    from spark_apps.compact_events import out_of_memory

    day = date(2026, 11, 20)
    # as Spark 4 raised them on a 2,000,000-event day with a 1g heap (bench/limits.md)
    for message in (
        "An error occurred while calling o788.count.\n: org.apache.spark.SparkException: Job "
        "aborted ... org.apache.spark.memory.SparkOutOfMemoryError: [AGGREGATE_OUT_OF_MEMORY] "
        "No enough memory for aggregation SQLSTATE: 82001",
        "[UNABLE_TO_ACQUIRE_MEMORY] Unable to acquire 262144 bytes of memory, got 0.",
        "java.lang.OutOfMemoryError: Java heap space",
    ):
        reason = out_of_memory(RuntimeError(message), day, "1g")
        assert reason is not None
        assert reason.startswith("2026-11-20:")
        assert "spark.driver.memory=1g" in reason and "driver_memory" in reason
    assert out_of_memory(RuntimeError("Connection refused: lake:9000"), day, "1g") is None
    import pyarrow as pa

    arrow = out_of_memory(pa.ArrowMemoryError("malloc of size 4096 failed"), day, "1g")
    assert arrow is not None and "malloc of size 4096 failed" in arrow and "idempotent" in arrow
