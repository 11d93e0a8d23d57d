"""The columnar stream's pure parts (``spark_apps/columnar/engine.py`` and ``aggregates.py``)
on a generated backlog, against the generator's own record of what it sent: the lake's rows
(enrichment, relevance, partitions), the live aggregates' partials computed per task and
combined on the driver, and the driver's decision per Kafka partition. The whole engine runs on
the real stack in ``tests/integration/test_pipeline.py``."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime, timedelta

import numpy as np
import pyarrow as pa
from datasketches import hll_sketch

from include.analytics import store
from include.events import columnar
from include.events.catalog import build_catalog
from include.events.generator import generate
from spark_apps.columnar import aggregates as A
from spark_apps.columnar import engine as E
from spark_apps.columnar import state as S
from tests.integration.lake_checks import (
    assert_funnel_match,
    assert_sales_match,
    iso_minute,
)

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
NOW_US = int(NOW.timestamp() * 1_000_000)
WINDOW_MS = 60_000


def backlog():
    return generate(
        3_000,
        seed=7,
        start=NOW - timedelta(minutes=5),
        bad_share=0.05,
        irrelevant_share=0.05,
    )


def checked_events(produced) -> pa.Table:
    """The valid events of a backlog as the check caches them (one Kafka partition, the
    offset the index)."""
    checked = columnar.check_block(pa.array([p.value for p in produced], pa.binary()), NOW_US)
    rows = checked.valid["row"]
    events = checked.valid.drop_columns(["row"])
    events = events.append_column("kafka_partition", pa.array(np.zeros(len(rows), np.int32)))
    events = events.append_column("kafka_offset", rows)
    return events.append_column(
        "kafka_timestamp", pa.array(np.full(len(rows), NOW_US), pa.int64()).cast(columnar.TIMESTAMP)
    )


def catalog_table() -> pa.Table:
    products = build_catalog().products
    return pa.table(
        {
            "product_id": [p.product_id for p in products],
            "list_price": [p.price for p in products],
            "popularity_rank": pa.array(range(1, len(products) + 1), pa.int32()),
        }
    )


def test_the_lake_rows_carry_every_valid_event_its_catalog_fields_and_partitions():
    produced = backlog()
    lake = E.lake_rows(checked_events(produced), catalog_table())
    landable = {p.event_id: p for p in produced if p.kind in ("valid", "irrelevant")}
    assert sorted(lake["event_id"].to_pylist()) == sorted(landable)
    assert lake.schema.names == [*E.LAKE_SCHEMA.names, "event_date", "event_hour"]
    prices = {p.product_id: (p.price, rank) for rank, p in enumerate(build_catalog().products, 1)}
    for row in lake.to_pylist():
        p = landable[row["event_id"]]
        assert row["is_relevant"] == (p.kind == "valid")
        if row["product_id"] is None:
            assert row["list_price"] is None and row["popularity_rank"] is None
        else:
            assert (row["list_price"], row["popularity_rank"]) == prices[row["product_id"]]
        when = datetime.fromtimestamp(p.event_time_ms / 1000, UTC)
        assert (row["event_date"], row["event_hour"]) == (when.date().isoformat(), when.hour)


def test_partials_of_three_tasks_combined_are_the_generator_s_totals():
    produced = backlog()
    lake = E.lake_rows(checked_events(produced), catalog_table())
    thirds = [lake.slice(i * 1000, 1000) for i in range(3)]
    for table, function, check in (
        ("category_sales_minute", A.category_sales, assert_sales_match),
        ("funnel_minute", A.funnel_counts, assert_funnel_match),
    ):
        agg = store.AGGREGATES[table]
        partials = [row for t in thirds for row in function(t, WINDOW_MS).to_pylist()]
        assert all(set(row) == set(agg.partial_columns) for row in partials)
        combined = store.combine_partials(agg, partials)
        assert len(combined) < len(partials)  # the tasks' rows of one key became one
        got = {}
        for row in combined:
            key = (iso_minute(row["window_start"]), *(row[d] for d in agg.dimensions))
            got[key] = {s: float(row[s]) for s in agg.sums}
            for name, sketch in zip(agg.distinct, agg.sketches, strict=True):
                got[key][name] = round(hll_sketch.deserialize(row[sketch]).get_estimate())
            assert row["window_end"] - row["window_start"] == timedelta(milliseconds=WINDOW_MS)
        check(got, produced)


def test_the_registry_s_added_aggregate_has_its_columnar_transform():
    from tests.integration.device_aggregate import DEVICE_SALES, device_sales_arrow

    produced = backlog()
    lake = E.lake_rows(checked_events(produced), catalog_table())
    partials = device_sales_arrow(lake, WINDOW_MS)
    assert partials.schema.names == list(DEVICE_SALES.partial_columns)
    purchases = [p for p in produced if p.kind == "valid" and p.event_type == "purchase"]
    assert sum(partials["orders"].to_pylist()) == len(purchases)
    assert round(float(sum(partials["revenue"].to_pylist())), 2) == round(
        sum(p.revenue for p in purchases), 2
    )


def test_the_decision_is_split_by_kafka_partition_into_dropped_and_dead_lettered_offsets():
    ids = ["a", "b", "a", "a", "c", "b"]
    partitions = [0, 0, 1, 1, 2, 2]
    offsets = [10, 11, 5, 6, 7, 8]
    versions = [1, 1, 1, 2, 1, 1]  # the second "a" of partition 1 is another version
    hi, lo = S.keys(pa.array(ids))
    results = pa.Table.from_batches(
        [  # what the check's task of each partition returns, partition 2's first
            E._rows(
                "keys",
                name=["events"],
                kafka_partition=[p],
                payload=[
                    E._ipc(
                        pa.table(
                            {
                                "hi": pa.array(hi[rows].view(np.int64)),
                                "lo": pa.array(lo[rows].view(np.int64)),
                                "digest": pa.array(np.array(versions)[rows], pa.int64()),
                                "kafka_offset": pa.array(np.array(offsets)[rows], pa.int64()),
                            }
                        )
                    )
                ],
            )
            for p in (2, 0, 1)
            for rows in [np.flatnonzero(np.array(partitions) == p)]
        ]
    )
    kept, copies, conflicts = E.decide(S.FirstSeenState(60_000), results, 1_000)
    got = {(k.partition, tuple(k.dropped), tuple(k.conflicts)) for k in kept}
    # Partition 0 comes first in the batch's order: its a and b are the first ones; the a of
    # partition 1 at offset 5 and the b of partition 2 are copies, the a at 6 another version.
    assert got == {(0, (), ()), (1, (5,), (6,)), (2, (8,), ())}
    assert (copies, conflicts) == (2, 1)


def test_an_outcome_counts_as_the_row_based_stream_observes():
    outcome = E.Outcome()
    results = pa.Table.from_batches(
        [
            E._rows("dead", path=["lake/dead/x.parquet"], size=[10], n=[3]),
            E._rows("count", name=["landed"], n=[5]),
            E._rows("count", name=["irrelevant"], n=[1]),
            E._rows("lake", path=["lake/raw/y.parquet"], size=[20], n=[5]),
        ]
    )
    outcome.take(results)
    outcome.count("conflicting_duplicates", 2)
    assert outcome.lake == [("lake/raw/y.parquet", 20)]
    assert outcome.dead == [("lake/dead/x.parquet", 10)]
    assert outcome.observed() == {
        "lake": {"landed": 5, "irrelevant": 1},
        "dead_letter": {"dead_lettered": 3, "conflicting_duplicates": 2},
    }


def test_a_killed_driver_s_cache_is_removed_a_day_later_and_a_live_one_kept(tmp_path):
    root = tmp_path / "rtap-columnar"
    mine, live, stale = root / "app-3", root / "app-2", root / "app-1"
    for d in (mine, live, stale):
        (d / "7").mkdir(parents=True)
    now = time.time()
    os.utime(stale, (now - E.STALE_CACHE_S - 1, now - E.STALE_CACHE_S - 1))
    os.utime(mine, (now - E.STALE_CACHE_S - 1, now - E.STALE_CACHE_S - 1))
    assert E.clear_stale_caches(str(mine), now) == [str(stale)]
    assert mine.exists() and live.exists() and not stale.exists()


def test_auto_engine_keeps_a_checkpoints_engine_and_starts_new_ones_columnar_where_it_can():
    from spark_apps.stream_events import choose_engine

    local, cluster, cp = "local[2]", "spark://10.0.0.1:7077", "s3a://b/cp/stream"
    # A new checkpoint: columnar on a local master, rows on a cluster (columnar cannot run).
    assert choose_engine("auto", local, cp, False, False) == ("columnar", None)
    assert choose_engine("auto", cluster, cp, False, False) == ("rows", None)
    # A checkpoint keeps the engine it was started with, wherever it runs next.
    assert choose_engine("auto", local, cp, False, True) == ("rows", None)
    engine, refused = choose_engine("auto", cluster, cp, True, False)
    assert engine == "columnar" and "local master only" in str(refused)
    # An explicit engine is used as asked: rows refuses a columnar checkpoint (one-way), and
    # columnar resumes a row engine's checkpoint (its state starts empty; the app warns).
    engine, refused = choose_engine("rows", local, cp, True, False)
    assert engine == "rows" and "resume it with --engine=columnar" in str(refused)
    assert choose_engine("columnar", local, cp, False, True) == ("columnar", None)
    assert choose_engine("rows", cluster, cp, False, False) == ("rows", None)


def test_the_driver_s_write_lands_each_partition_s_kept_events_and_waits_for_every_thread(
    tmp_path,
):
    """The write step on the driver's threads, from the check's cache (no S3: the plan writes
    no files): each partition's kept events counted as landed, its dropped and conflicting
    offsets not, a partial per aggregate; a partition whose cache is missing fails the step
    only once the other partitions' threads are done (their caches consumed)."""
    from concurrent.futures import ThreadPoolExecutor

    import pytest

    events = checked_events(backlog())
    n = events.num_rows
    halves = {0: events.slice(0, n // 2), 1: events.slice(n // 2)}
    plan = E.Plan(7, NOW_US, "", "lake", "dead", str(tmp_path), write_lake=False, write_dead=False)

    def cache(partition: int, part: pa.Table) -> np.ndarray:
        part = part.set_column(
            part.schema.get_field_index("kafka_partition"),
            "kafka_partition",
            pa.array(np.full(part.num_rows, partition, np.int32)),
        )
        part = part.append_column("raw_key", pa.nulls(part.num_rows, pa.binary()))
        part = part.append_column("raw_value", pa.nulls(part.num_rows, pa.binary()))
        with (
            pa.OSFile(E._cached(plan, "events", partition), "wb") as f,
            pa.ipc.new_file(f, part.schema) as w,
        ):
            w.write_table(part)
        return part["kafka_offset"].to_numpy()

    kept = []
    for partition, part in halves.items():
        offsets = cache(partition, part)
        kept.append(E.Kept("events", partition, offsets[:3], offsets[3:5]))
    functions = E.resolve({t: a.arrow_transform for t, a in store.AGGREGATES.items()})
    with ThreadPoolExecutor(4) as pool:
        results = E.write(plan, kept, catalog_table(), WINDOW_MS, functions, pool)
        outcome = E.Outcome()
        outcome.take(results)
        assert outcome.counts["landed"] == n - 2 * 5
        assert outcome.counts["dead_lettered"] == 2 * 2  # the conflicts (their file not written)
        assert set(outcome.partials) == set(store.AGGREGATES)
        assert not list(tmp_path.iterdir())  # each partition's cache consumed
        cache(0, halves[0])
        missing = E.Kept("events", 9, kept[0].dropped, kept[0].conflicts)
        with pytest.raises(E.CacheMiss):  # the missing partition first: it fails at once
            E.write(plan, [missing, kept[0]], catalog_table(), WINDOW_MS, functions, pool)
        assert not list(tmp_path.iterdir())  # partition 0's thread had finished
