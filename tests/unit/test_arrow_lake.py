"""The compaction's pyarrow adapter (spark_apps/arrow_lake.py) on a local directory: the file
sink's log as Spark writes it, a lake of Hive-partitioned files, a data file written back."""

from __future__ import annotations

import json
from datetime import date

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.parquet as pq
import pytest
from pyarrow import fs

from spark_apps import arrow_lake

LOCAL = fs.LocalFileSystem()


def log_file(folder, name: str, entries: list[dict]) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    lines = ["v1", *(json.dumps(e) for e in entries)]
    (folder / name).write_text("\n".join(lines))


def entry(path: str, size: int, action: str = "add") -> dict:
    return {"path": path, "size": size, "isDir": False, "modificationTime": 1, "action": action}


def test_sink_log_reads_the_latest_compaction_and_the_batches_after_it(tmp_path):
    log = tmp_path / "_spark_metadata"
    log_file(log, "8", [entry("file:/x/old-8", 8)])  # folded into 9.compact, not yet deleted
    log_file(log, "9.compact", [entry("file:/x/a", 1), entry("file:/x/b", 2)])
    log_file(log, "10", [entry("file:/x/c", 3)])
    log_file(log, "11", [entry("file:/x/b", 2, "delete"), entry("file:/x/d", 4)])
    (log / ".12.tmp").write_text("v1\n" + json.dumps(entry("file:/x/partial", 5)))
    (log / "12.crc").write_text("")
    got = arrow_lake.sink_log(LOCAL, str(tmp_path))
    assert got == {"file:/x/a": 1, "file:/x/c": 3, "file:/x/d": 4}


def test_sink_log_without_a_compaction_reads_every_batch_and_none_before_a_commit(tmp_path):
    assert arrow_lake.sink_log(LOCAL, str(tmp_path)) is None
    log_file(tmp_path / "_spark_metadata", "0", [entry("file:/x/a", 1)])
    log_file(tmp_path / "_spark_metadata", "1", [entry("file:/x/b", 2)])
    assert arrow_lake.sink_log(LOCAL, str(tmp_path)) == {"file:/x/a": 1, "file:/x/b": 2}


def test_sink_log_refuses_a_log_of_another_version(tmp_path):
    (tmp_path / "_spark_metadata").mkdir()
    (tmp_path / "_spark_metadata" / "0").write_text("v9\n{}")
    with pytest.raises(ValueError, match="not a v1 file sink log"):
        arrow_lake.sink_log(LOCAL, str(tmp_path))


def test_object_path_drops_the_scheme():
    assert arrow_lake.object_path("s3a://lake/raw/x.parquet") == "lake/raw/x.parquet"
    assert arrow_lake.object_path("file:/tmp/x.parquet") == "/tmp/x.parquet"
    assert arrow_lake.object_path("file:///tmp/x.parquet") == "/tmp/x.parquet"
    assert arrow_lake.object_path("/tmp/x.parquet") == "/tmp/x.parquet"


def lake_file(root, day: str, hour: int, name: str, table: pa.Table) -> str:
    folder = root / f"event_date={day}" / f"event_hour={hour}"
    folder.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, folder / name, use_deprecated_int96_timestamps=True)
    return f"file:{folder / name}"


def test_a_day_of_files_reads_with_its_partitions_typed_and_missing_columns_null(tmp_path):
    at = pa.array([1_700_000_000_000_000], pa.timestamp("us"))
    older = pa.table({"event_id": ["a"], "event_time": at})
    newer = pa.table(
        {"event_id": ["b", "c"], "event_time": pa.concat_arrays([at, at]), "device": ["x", None]}
    )
    files = [
        lake_file(tmp_path, "2026-11-20", 3, "one.parquet", older),
        lake_file(tmp_path, "2026-11-20", 4, "two.parquet", newer),
    ]
    partitions = ("event_date", "event_hour")
    schema = arrow_lake.lake_schema(LOCAL, files, partitions)
    assert schema == pa.schema(
        [
            ("event_id", pa.string()),
            ("event_time", pa.timestamp("us", tz="UTC")),  # Spark's INT96, as Spark reads it
            ("device", pa.string()),
            ("event_date", pa.date32()),
            ("event_hour", pa.int32()),
        ]
    )
    rows = arrow_lake.read_files(
        LOCAL, files, schema, partitions, ds.field("event_date") == date(2026, 11, 20)
    ).sort_by("event_id")
    assert rows.to_pydict()["device"] == [None, "x", None]
    assert rows.to_pydict()["event_hour"] == [3, 4, 4]
    assert rows["event_time"].to_pylist()[0].timestamp() == 1_700_000_000
    sizes = {f: (tmp_path / f.split(str(tmp_path) + "/", 1)[1]).stat().st_size for f in files}
    known = arrow_lake.read_files(LOCAL, files, schema, partitions, sizes=sizes)
    assert known.sort_by("event_id").to_pydict() == rows.to_pydict(), "sizes from the log"
    none = arrow_lake.read_files(
        LOCAL, files, schema, partitions, ds.field("event_date") == date(2026, 11, 21)
    )
    assert none.num_rows == 0


def test_a_partition_that_is_neither_a_number_nor_a_date_is_a_string(tmp_path):
    table = pa.table({"event_id": ["a"]})
    folder = tmp_path / "kind=web"
    folder.mkdir()
    pq.write_table(table, folder / "f.parquet")
    schema = arrow_lake.lake_schema(LOCAL, [f"file:{folder / 'f.parquet'}"], ("kind",))
    assert schema.field("kind").type == pa.string()


def test_write_file_makes_the_directory_and_returns_the_size(tmp_path):
    target = tmp_path / "data" / "event_time_day=2026-11-20" / "00000-x.parquet"
    size = arrow_lake.write_file(LOCAL, f"file:{target}", pa.table({"a": [1, 2]}), "zstd")
    assert size == target.stat().st_size > 0
    assert pq.read_table(target).to_pydict() == {"a": [1, 2]}
