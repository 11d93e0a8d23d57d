"""The first-release upgrade's plan (include/supervision/checkpoint.py), its move of the sink
logs into their archives (spark_apps/upgrade.py) and the outputs' floors in both engines."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pytest
from pyarrow import fs as pafs

from include.supervision import checkpoint
from include.supervision.checkpoint import CheckpointError, ResumePlan
from spark_apps import sink_log, upgrade
from tests.unit.test_checkpoint_and_retention import offsets_file, store


def first_release(extra: dict[str, str] | None = None) -> dict[str, str]:
    """Four queries at their own positions (committed batches) on topic ``events``."""
    files = {
        # the lake: batch 3 committed at {0: 40, 1: 38}; batch 4 planned, not committed
        "cp/lake/offsets/3": offsets_file({0: 40, 1: 38}),
        "cp/lake/commits/3": "v1\n{}",
        "cp/lake/offsets/4": offsets_file({0: 55, 1: 50}),
        "cp/dead_letter/offsets/1": offsets_file({0: 20, 1: 15}),
        "cp/dead_letter/commits/1": "v1\n{}",
        "cp/category_sales/offsets/2": offsets_file({0: 30, 1: 31}),
        "cp/category_sales/commits/2": "v1\n{}",
        "cp/category_sales/offsets/3": offsets_file({0: 35, 1: 36}),
        # the funnel never read partition 1 (it was added after its last batch)
        "cp/funnel/offsets/0": offsets_file({0: 10}),
        "cp/funnel/commits/0": "v1\n{}",
    }
    return {**files, **(extra or {})}


def plan_of(files: dict[str, str], written: dict[str, int | None] | None = None) -> ResumePlan:
    read, list_keys = store(files)
    return checkpoint.first_release_plan("cp", "events", read, list_keys, written or {})


def test_each_output_resumes_after_its_last_committed_batch():
    plan = plan_of(first_release())
    assert plan.floors == {
        "lake": {0: 40, 1: 38},
        "dead_letter": {0: 20, 1: 15},
        "category_sales_minute": {0: 30, 1: 31},
        "funnel_minute": {0: 10, 1: 0},  # a partition a query never read: from its start
    }
    assert plan.starting() == {0: 10, 1: 0}
    assert json.loads(plan.starting_offsets()) == {"events": {"0": 10, "1": 0}}
    # A partition added since: from its start (Spark wants every partition named).
    assert json.loads(plan.starting_offsets([0, 1, 2])) == {"events": {"0": 10, "1": 0, "2": -2}}
    # An output the first release did not have (a new aggregate) starts where the stream does.
    assert plan.floor("revenue_by_device_minute") == {0: 10, 1: 0}
    assert ResumePlan.from_json(plan.to_json()) == plan


def test_a_batch_written_but_not_committed_counts_as_written():
    """A crash between an output and its commit: the sink's log (or the table's batch_id)
    holds the planned batch, so the first release already wrote its records there."""
    plan = plan_of(first_release(), {"lake": 4, "category_sales_minute": 3, "dead_letter": 1})
    assert plan.floors["lake"] == {0: 55, 1: 50}
    assert plan.floors["category_sales_minute"] == {0: 35, 1: 36}
    assert plan.floors["dead_letter"] == {0: 20, 1: 15}


def test_an_output_ahead_of_its_checkpoint_is_refused():
    with pytest.raises(CheckpointError, match="beyond what"):
        plan_of(first_release(), {"dead_letter": 2})
    files = {k: v for k, v in first_release().items() if not k.startswith("cp/funnel/")}
    with pytest.raises(CheckpointError, match="no checkpoint"):
        plan_of(files, {"funnel_minute": 0})


def test_a_checkpoint_of_another_topic_is_refused():
    files = first_release({"cp/funnel/offsets/0": offsets_file({0: 10}, topic="other")})
    with pytest.raises(CheckpointError, match="other"):
        plan_of(files)


def test_a_query_that_never_ran_has_written_nothing():
    files = {k: v for k, v in first_release().items() if not k.startswith("cp/funnel/")}
    plan = plan_of(files)
    assert plan.floors["funnel_minute"] == {0: 0, 1: 0}


def test_first_release_roots_are_recognised_and_the_plan_passed():
    _, list_keys = store(first_release())
    assert checkpoint.first_release_queries("cp", list_keys) == [
        "dead_letter",
        "category_sales",
        "funnel",
    ]
    _, only_lake = store({"cp/lake/offsets/0": offsets_file({0: 1})})
    assert checkpoint.first_release_queries("cp", only_lake) == []
    plan = plan_of(first_release())
    assert not plan.passed({"events": {0: 40, 1: 37}})
    assert plan.passed({"events": {0: 40, 1: 38}})


def test_the_first_release_log_moves_to_the_archive_and_readers_still_see_every_file(tmp_path):
    """The sink's log copied aside is written into the log's archive as one run; with the log
    empty, the readers' committed files are the archive's."""
    fs = pafs.LocalFileSystem()
    sink, kept = f"{tmp_path}/lake", f"{tmp_path}/kept"
    entries = [
        {
            "path": f"file:{sink}/event_date=2026-12-0{d}/part-{i}.parquet",
            "size": 10 + i,
            "isDir": False,
            "modificationTime": 500 + i,
            "blockReplication": 1,
            "blockSize": 1,
            "action": "add",
        }
        for i, d in enumerate((1, 1, 2))
    ]
    fs.create_dir(f"{kept}/{sink_log.SINK_LOG}", recursive=True)
    with fs.open_output_stream(f"{kept}/{sink_log.SINK_LOG}/0") as out:
        out.write("\n".join(["v1", *(json.dumps(e) for e in entries)]).encode())
    fs.create_dir(f"{sink}/{sink_log.SINK_LOG}", recursive=True)  # the empty log
    assert sink_log.committed(fs, sink) is None
    assert upgrade.archive_first_release(fs, sink, kept) == 3
    assert upgrade.archive_first_release(fs, sink, kept) == 3  # again: the same files
    assert sink_log.committed(fs, sink) == {e["path"]: e["size"] for e in entries}
    assert set(sink_log.committed(fs, sink, {"event_date=2026-12-02"}) or {}) == {
        entries[2]["path"]
    }
    # The stream's archiver goes on after the newest entry archived.
    assert sink_log.Archiver(fs, sink, 4000, clock=lambda: 1.0).cutoff() == 502
    assert upgrade.archive_first_release(fs, sink, f"{tmp_path}/nothing") == 0


def test_the_columnar_engine_writes_only_what_an_output_does_not_hold():
    from spark_apps.columnar import engine as E

    plan = E.Plan(
        1,
        0,
        "",
        "lake",
        "dead",
        "/tmp/x",
        floors=(("lake", "events", 0, 12), ("dead_letter", "events", 1, 3)),
    )
    offsets = pa.array(np.arange(10, 15), pa.int64())
    assert plan.ours("lake", "events", 0, offsets).to_pylist() == [False, False, True, True, True]
    assert plan.ours("lake", "events", 1, offsets) is None
    assert plan.ours("funnel_minute", "events", 0, offsets) is None
    rows = pa.table({"kafka_offset": pa.array([1, 2, 3, 4], pa.int64())})
    assert E._ours(plan, "dead_letter", "events", 1, rows)["kafka_offset"].to_pylist() == [3, 4]


def test_the_row_engine_writes_only_what_an_output_does_not_hold(spark):
    from spark_apps.transforms import events as tx

    df = spark.createDataFrame(
        [(p, o) for p in (0, 1, 2) for o in range(5)], "kafka_partition int, kafka_offset long"
    )
    kept = df.where(tx.at_or_above({0: 3, 1: 0})).collect()
    assert sorted((r[0], r[1]) for r in kept) == [
        (0, 3),
        (0, 4),
        *((1, o) for o in range(5)),
        *((2, o) for o in range(5)),
    ]
    assert df.where(tx.at_or_above({})).count() == 15
