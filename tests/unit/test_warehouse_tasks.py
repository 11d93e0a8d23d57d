"""The warehouse DAGs' task logic that needs no services: which day, which prefix, retention off."""

from __future__ import annotations

from datetime import UTC, date, datetime

import pytest

from include.warehouse import catalog, tasks


def test_the_day_comes_from_the_data_interval_or_the_param():
    start = datetime(2026, 11, 24, 2, 30, tzinfo=UTC)
    assert tasks.pick_day({"day": None}, start) == "2026-11-24"
    assert tasks.pick_day({"day": "2026-11-01"}, start) == "2026-11-01"
    with pytest.raises(ValueError, match="param day='yesterday'"):
        tasks.pick_day({"day": "yesterday"}, start)
    with pytest.raises(ValueError, match="no data interval"):
        tasks.pick_day({}, None)


def test_a_day_prefix_is_the_stream_partition_of_that_day():
    assert (
        tasks.day_prefix("/raw/events/", date(2026, 11, 2)) == "raw/events/event_date=2026-11-02/"
    )


def test_raw_retention_is_off_unless_set():
    assert tasks.expire_raw({"raw_retention_days": None}) == []
    assert tasks.expire_raw({"raw_retention_days": 0}) == []


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
