"""The file sinks' logs with a retention, and their archive (spark_apps/sink_log.py): against
Spark's own ``FileStreamSinkLog`` (the class both engines commit through), on a local
directory. The oracle is the test's own record of every entry it committed."""

from __future__ import annotations

import json
import time

from pyarrow import fs

from spark_apps import arrow_lake, sink_log
from spark_apps.columnar import engine as E

LOCAL = fs.LocalFileSystem()


def test_every_entry_the_log_s_retention_drops_is_in_its_archive_first(spark, tmp_path):
    """Batches committed through the columnar engine's ``SinkLog`` (Spark's log with a 4 s
    retention, compacted every 10 batches) over several seconds: the log's compaction drops the old
    entries, and the log with its archive still lists every file committed, each once, with
    its size; the archive is kept by partition, a run every quarter of the retention."""
    retention_ms = 4_000  # a commit may take up to a quarter of it (1 s) on a busy machine
    sink = f"file://{tmp_path}/lake"  # the engine adds its scheme to a file's object path
    archiver = sink_log.Archiver(LOCAL, sink, retention_ms)
    log = E.SinkLog(spark, sink, archiver)
    sent: dict[str, int] = {}
    started = time.monotonic()
    for batch in range(60):
        files = []
        for day in ("2026-12-01", "2026-12-02"):
            path = f"{tmp_path}/lake/event_date={day}/event_hour=1/part-{batch:04d}.parquet"
            files.append((path, 100 + batch))
            sent[f"file://{path}"] = 100 + batch
        assert log.add(batch, files)
        time.sleep(0.12)
    elapsed_ms = (time.monotonic() - started) * 1000

    logged = sink_log.log_entries(LOCAL, sink) or {}
    assert len(logged) < len(sent), "the log's retention dropped nothing"
    assert arrow_lake.sink_log(LOCAL, sink) == sent
    archived = sink_log.archived_entries(LOCAL, sink)
    assert set(archived) | set(logged) == set(sent)
    runs = [
        i.base_name for i in LOCAL.get_file_info(fs.FileSelector(archiver.folder + "/_cutoffs"))
    ]
    # A run at most every quarter of the retention (the first at once), and not one a batch.
    assert 3 <= len(runs) <= elapsed_ms / (retention_ms / 4) + 1 < 60, (runs, elapsed_ms)
    # The archive is kept by partition: one day's read opens only its own.
    day = sink_log.archived_entries(LOCAL, sink, {"event_date=2026-12-01"})
    assert day and all("event_date=2026-12-01" in p for p in day)
    one_day = arrow_lake.sink_log(LOCAL, sink, {"event_date=2026-12-01"}) or {}
    assert {p for p in sent if "2026-12-01" in p} <= set(one_day)


def test_an_archive_run_takes_each_entry_once_and_only_when_due(tmp_path):
    """The cutoffs: a run is due once the last is 3/4 of the retention old and takes the
    entries modified in (last cutoff, now - retention/2]; a new archiver (a restarted stream)
    reads the last cutoff back, and a run interrupted before its cutoff is written is
    done again."""
    sink = str(tmp_path / "sink")
    log_dir = tmp_path / "sink" / "_spark_metadata"
    log_dir.mkdir(parents=True)
    hour = 3_600_000

    def entry(name: str, modified_ms: int) -> dict:
        return {
            "path": f"file:{sink}/d=1/{name}",
            "size": 1,
            "isDir": False,
            "modificationTime": modified_ms,
            "blockReplication": 1,
            "blockSize": 1,
            "action": "add",
        }

    entries = [entry("a", 1 * hour), entry("b", 2 * hour), entry("c", 5 * hour)]
    (log_dir / "0").write_text("\n".join(["v1", *map(json.dumps, entries)]))
    now = {"ms": 6 * hour}
    archiver = sink_log.Archiver(LOCAL, sink, 4 * hour, clock=lambda: now["ms"] / 1000)

    assert archiver.before_commit() == 2  # a and b: modified up to 6 h - 2 h
    assert archiver.cutoff() == 4 * hour
    now["ms"] = 6 * hour + 30 * 60_000  # a quarter of the retention not yet passed
    assert not archiver.due(now["ms"]) and archiver.before_commit() == 0
    now["ms"] = 8 * hour
    again = sink_log.Archiver(LOCAL, sink, 4 * hour, clock=lambda: now["ms"] / 1000)
    assert again.cutoff() == 4 * hour  # read back from _cutoffs
    assert again.before_commit() == 1  # c only: a and b were archived before
    assert set(sink_log.archived_entries(LOCAL, sink)) == {e["path"] for e in entries}

    # A run that died before writing its cutoff: the next does it again (a file the same).
    (tmp_path / "sink" / "_spark_metadata_archive" / "_cutoffs" / f"{6 * hour:013d}").unlink()
    third = sink_log.Archiver(LOCAL, sink, 4 * hour, clock=lambda: now["ms"] / 1000)
    assert third.cutoff() == 4 * hour and third.before_commit() == 1
    assert set(sink_log.archived_entries(LOCAL, sink)) == {e["path"] for e in entries}


def test_a_file_s_partition_directory_is_the_first_under_the_sink():
    assert (
        sink_log.partition_dir("s3a://b/lake", "s3a://b/lake/event_date=2026-12-01/event_hour=3/x")
        == "event_date=2026-12-01"
    )
    assert sink_log.partition_dir("file:/t/dead", "file:/t/dead/detected_date=2026-12-01/y") == (
        "detected_date=2026-12-01"
    )
    assert sink_log.partition_dir("s3a://b/lake", "s3a://b/lake/part-0.parquet") == sink_log.ROOT


def test_the_columnar_log_s_retention_reaches_spark_as_a_long(spark, tmp_path):
    """Py4J would pass 604800000 as an Integer, which Scala cannot unbox as the log's Long."""
    log = E.SinkLog(
        spark, f"file:{tmp_path}/s", sink_log.Archiver(LOCAL, f"file:{tmp_path}/s", 604_800_000)
    )
    assert log._log.retentionMs() == 604_800_000
