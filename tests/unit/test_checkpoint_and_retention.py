"""Checkpoint reading and the retention guard, on checkpoint files as Spark writes them."""

from __future__ import annotations

import json

import pytest

from include.supervision import checkpoint, retention
from include.supervision.checkpoint import CheckpointError, QueryPosition

META = json.dumps({"batchWatermarkMs": 0, "batchTimestampMs": 1764000000000, "conf": {}})


def offsets_file(parts: dict[int, int], topic: str = "events") -> str:
    return f"v1\n{META}\n" + json.dumps({topic: {str(p): o for p, o in parts.items()}})


def store(files: dict[str, str]):
    def read(key: str) -> str | None:
        return files.get(key)

    def list_keys(prefix: str) -> list[str]:
        return [k for k in files if k.startswith(prefix)]

    return read, list_keys


def test_parse_offsets_file_skips_metadata_and_empty_sources():
    text = offsets_file({0: 10, 2: 7}) + "\n-\n"
    assert checkpoint.parse_offsets_file(text) == {"events": {0: 10, 2: 7}}


def test_parse_initial_offsets_with_leading_nul():
    assert checkpoint.parse_offsets_file('\x00v1\n{"events":{"0":0,"1":5}}') == {
        "events": {0: 0, 1: 5}
    }


@pytest.mark.parametrize("text", ["", "garbage", "v1\n{not json"])
def test_unreadable_files_are_named(text):
    with pytest.raises(CheckpointError, match="where"):
        checkpoint.parse_offsets_file(text, "where")


def test_resume_position_is_the_last_committed_batch():
    read, list_keys = store(
        {
            "cp/lake/metadata": "{}",
            "cp/lake/offsets/0": offsets_file({0: 5}),
            "cp/lake/offsets/1": offsets_file({0: 9}),
            "cp/lake/offsets/2": offsets_file({0: 12}),  # planned, not committed: re-run
            "cp/lake/commits/0": "v1\n{}",
            "cp/lake/commits/1": "v1\n{}",
        }
    )
    pos = checkpoint.query_position("lake", "cp", read, list_keys)
    assert (pos.committed_batch, pos.planned_batch, pos.offsets) == (1, 2, {"events": {0: 9}})


def test_no_committed_batch_resumes_at_the_initial_offsets():
    read, list_keys = store(
        {"cp/lake/sources/0/0": 'v1\n{"events":{"0":3}}', "cp/lake/offsets/0": offsets_file({0: 8})}
    )
    pos = checkpoint.query_position("lake", "cp", read, list_keys)
    assert pos.committed_batch is None and pos.offsets == {"events": {0: 3}}


def test_absent_checkpoint_and_damaged_checkpoint():
    read, list_keys = store({})
    assert checkpoint.query_position("lake", "cp", read, list_keys) is None
    read, list_keys = store({"cp/lake/commits/4": "v1\n{}", "cp/lake/offsets/3": offsets_file({})})
    with pytest.raises(CheckpointError, match="commits/4 has no offsets/4"):
        checkpoint.query_position("lake", "cp", read, list_keys)


def test_replay_bytes_are_the_changelogs_after_each_partitions_snapshot():
    # Two state partitions as RocksDB's changelog checkpointing leaves them; batch 6 is
    # committed, so the next batch loads version 7.
    part0 = "cp/lake/state/0/0"
    part1 = "cp/lake/state/0/1"
    objects = [
        (f"{part0}/1.zip", 900),  # snapshot of version 1 (after batch 0)
        *((f"{part0}/{v}.changelog", 10 * v) for v in range(2, 9)),  # 8: the running batch's
        *((f"{part0}/{v}.changelog.crc", 1) for v in range(2, 9)),
        (f"{part1}/5_0f3a.zip", 900),  # a snapshot named with a unique id
        *((f"{part1}/{v}_0f3a.changelog", 100) for v in range(1, 8)),
        ("cp/lake/state/0/_metadata/v2/0", 50),
        ("cp/lake/state/0/_stateSchema/default/0_aebf", 50),
        (f"{part0}/SSTs/000012-8a2c.sst", 5000),
    ]
    expected = sum(10 * v for v in range(2, 8)) + 2 * 100  # part0: 2..7; part1: 6, 7
    assert checkpoint.replay_bytes(objects, committed_batch=6) == expected
    # A snapshot beyond the version loaded is not used: part1 replays from scratch.
    assert checkpoint.replay_bytes(objects, committed_batch=3) == 20 + 30 + 40 + 4 * 100
    assert checkpoint.replay_bytes(objects, committed_batch=None) == 0  # no state yet


def test_a_checkpoint_behind_its_sink_log_is_refused():
    from include.supervision import preflight

    files = {f"lake/raw/_spark_metadata/{i}": "v1" for i in range(10)}
    files["lake/raw/_spark_metadata/9.compact"] = files.pop("lake/raw/_spark_metadata/9")
    _, list_keys = store(files)
    assert checkpoint.sink_log_batch("lake/raw", list_keys) == 9
    assert checkpoint.sink_log_batch("lake/dead", list_keys) is None
    sinks = {"lake_prefix": "lake/raw", "dead_letter_prefix": "lake/dead"}
    caught_up = QueryPosition("lake", 9, 10, {"events": {0: 1}})
    preflight.check_sink_logs(list_keys, "b", sinks, [caught_up])  # batch 10 planned: fine
    mid_batch = QueryPosition("lake", 8, 9, {"events": {0: 1}})
    preflight.check_sink_logs(list_keys, "b", sinks, [mid_batch])  # committed to the sink first
    for behind in ([], [QueryPosition("lake", 3, 4, {"events": {0: 1}})]):
        with pytest.raises(
            preflight.PreflightError, match=r"`lake_prefix`\) already holds batches up to 9"
        ):
            preflight.check_sink_logs(list_keys, "b", sinks, behind)


def test_gaps_name_partition_range_and_queries():
    positions = [
        QueryPosition("lake", 3, 3, {"events": {0: 100, 1: 50, 2: 70}}),
        QueryPosition("funnel", 2, 2, {"events": {0: 90, 1: 60, 2: 70}}),
    ]
    earliest = {("events", 0): 120, ("events", 1): 55, ("events", 2): 10}
    gaps = retention.find_gaps(positions, earliest)
    assert gaps == [
        retention.Gap("events", 0, 90, 120, ("lake", "funnel")),
        retention.Gap("events", 1, 50, 55, ("lake",)),
    ]
    assert gaps[0].lost == 30
    message = str(retention.RetentionGapError(gaps))
    assert "events[0]: offsets 90..119 (30 records)" in message
    assert "events[1]: offsets 50..54 (5 records)" in message
    assert "accept_retention_gap" in message


def test_no_gap_when_retention_is_behind_or_partition_is_new():
    positions = [QueryPosition("lake", 1, 1, {"events": {0: 100}})]
    assert retention.find_gaps(positions, {("events", 0): 100, ("events", 1): 40}) == []
