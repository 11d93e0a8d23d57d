"""The columnar stream's deduplication state (``spark_apps/columnar/state.py``) against a plain
model: a dict of event id -> (the first version's content, when it was seen), fed the records of
each batch in Kafka order. The model never sees keys or digests, so a wrong key, digest, sort or
expiry shows up as a different decision. Then the state's log: a state restored from its
snapshots and changelogs before any batch decides what the state that never stopped decides."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pyarrow import fs as pafs

from include.events import contract
from spark_apps.columnar import state as S

HORIZON_MS = 60_000


@dataclass(frozen=True)
class Record:
    event_id: str
    content: int  # which version of the event: 0, 1, ...
    partition: int
    offset: int


def model(batches: list[tuple[int, list[Record]]], horizon_ms: int = HORIZON_MS):
    """Per batch: (sorted indices of the kept records, of the conflicts, the copies)."""
    first: dict[str, tuple[int, int]] = {}  # id -> (content, seen_ms)
    out = []
    for now_ms, records in batches:
        kept, conflicts, copies = [], [], 0
        order = sorted(range(len(records)), key=lambda i: (records[i].partition, records[i].offset))
        for i in order:
            r = records[i]
            held = first.get(r.event_id)
            if held is None or held[1] <= now_ms - horizon_ms:
                first[r.event_id] = (r.content, now_ms)
                kept.append(i)
            elif held[0] == r.content:
                copies += 1
            else:
                conflicts.append(i)
        out.append((sorted(kept), sorted(conflicts), copies))
    return out


def event(event_id: str, content: int, ingestion_s: int = 0) -> dict:
    """A valid purchase whose price says which version it is."""
    return {
        "event_id": event_id,
        "event_type": "purchase",
        "schema_version": 2,
        "event_time": 1_796_126_370_000_000,
        "ingestion_time": 1_796_126_370_000_000 + ingestion_s * 1_000_000,
        "user_id": "u1",
        "session_id": "s1",
        "product_id": "p1",
        "category": "books",
        "price": 10.0 + content,
        "quantity": 1,
        "currency": "USD",
        "device": "web",
        "channel": None,
        "traffic_type": None,
    }


def table(events: list[dict]) -> pa.Table:
    from include.events.columnar import SCHEMA

    columns = {}
    for f in SCHEMA:
        values = [e[f.name] for e in events]
        if pa.types.is_timestamp(f.type):
            columns[f.name] = pa.array(values, pa.int64()).cast(f.type)
        else:
            columns[f.name] = pa.array(values, f.type)
    return pa.table(columns, schema=SCHEMA)


def run(state: S.FirstSeenState, now_ms: int, records: list[Record], log=None, batch_id=0):
    events = table([event(r.event_id, r.content, ingestion_s=r.offset) for r in records])
    hi, lo = S.keys(events["event_id"])
    order = np.array([r.partition * (1 << 40) + r.offset for r in records], np.int64)
    decision = state.decide(hi, lo, S.digests(events), order, now_ms)
    if log is not None:
        log.write(batch_id, state)
    return (decision.first.tolist(), decision.conflicts.tolist(), decision.copies)


ids = st.sampled_from([str(uuid.UUID(int=i)) for i in range(1, 9)] + ["e1", "E1", "x" * 128])
records = st.lists(
    st.builds(Record, ids, st.integers(0, 2), st.integers(0, 2), st.integers(0, 50)),
    max_size=25,
).map(lambda rs: list({(r.partition, r.offset): r for r in rs}.values()))  # unique coordinates
batches = st.lists(
    st.tuples(st.integers(0, HORIZON_MS * 3 // 2), records), min_size=1, max_size=12
).map(
    # processing times that only move forward, by steps of up to one and a half horizons
    lambda steps: [(sum(s for s, _ in steps[: i + 1]), rs) for i, (_, rs) in enumerate(steps)]
)


@settings(max_examples=150, deadline=None)
@given(batches)
def test_decisions_are_the_model_s(batches):
    state = S.FirstSeenState(HORIZON_MS)
    got = [run(state, now, rs) for now, rs in batches]
    assert got == model(batches)


@settings(max_examples=60, deadline=None)
@given(batches, st.integers(2, 4), st.data())
def test_a_restored_state_decides_as_the_one_that_never_stopped(
    tmp_path_factory, batches, every, data
):
    root = str(tmp_path_factory.mktemp("state"))
    log = S.StateLog(pafs.LocalFileSystem(), root, snapshot_every=every)
    log.restore(0, HORIZON_MS)
    state = S.FirstSeenState(HORIZON_MS)
    expected = [run(state, now, rs, log, b) for b, (now, rs) in enumerate(batches)]
    restart = data.draw(st.integers(0, len(batches) - 1))
    log.prune(restart)
    again = S.StateLog(pafs.LocalFileSystem(), root, snapshot_every=every)
    restored = again.restore(restart, HORIZON_MS)
    assert again.fresh == (restart == 0)
    got = [run(restored, now, rs, again, b) for b, (now, rs) in enumerate(batches) if b >= restart]
    assert got == expected[restart:]


def test_a_log_missing_a_changelog_or_a_snapshot_is_refused(tmp_path):
    log = S.StateLog(pafs.LocalFileSystem(), str(tmp_path), snapshot_every=10)
    log.restore(0, HORIZON_MS)
    state = S.FirstSeenState(HORIZON_MS)
    for b in range(4):
        run(state, 1000 * b, [Record(f"e{b}", 0, 0, b)], log, b)
    (tmp_path / "2.changelog").unlink()
    with pytest.raises(S.StateLost, match=r"changelogs of batches \[2\]"):
        S.StateLog(pafs.LocalFileSystem(), str(tmp_path)).restore(4, HORIZON_MS)
    assert len(S.StateLog(pafs.LocalFileSystem(), str(tmp_path)).restore(2, HORIZON_MS)) == 2
    (tmp_path / "0.snapshot").unlink()
    with pytest.raises(S.StateLost, match="no snapshot"):
        S.StateLog(pafs.LocalFileSystem(), str(tmp_path)).restore(2, HORIZON_MS)


def test_keys_are_a_uuid_s_bytes_and_other_ids_hashes():
    u = str(uuid.uuid4())
    hi, lo = S.keys(pa.array([u, u.upper(), "e1", "e2", "e1"]))
    assert (int(hi[0]) << 64 | int(lo[0])) == uuid.UUID(u).int
    pairs = list(zip(hi.tolist(), lo.tolist(), strict=True))
    assert len(set(pairs[:4])) == 4  # an upper-case UUID is another id
    assert pairs[2] == pairs[4]


def test_the_digest_reads_the_content_but_not_the_send_stamp():
    base = event("e1", 0)
    variants = [
        {**base, "ingestion_time": base["ingestion_time"] + 5},  # same content
        {**base, "price": 0.0},
        {**base, "price": -0.0},
        {**base, "channel": "email"},
        {**base, "channel": ""},  # a string nobody sends, but not a null
        {**base, "quantity": None},
        {**base, "quantity": 0},
        {**base, "event_time": base["event_time"] + 1},
        {**base, "user_id": "u1", "session_id": "s1x"},
        {**base, "user_id": "u1s", "session_id": "1"},  # the same letters, other fields
    ]
    d = S.digests(table([base, *variants])).tolist()
    assert d[1] == d[0]
    assert len(set(d[1:])) == len(variants)
    assert set(S.CONTENT_FIELDS) == set(contract.FIELD_NAMES) - {"ingestion_time"}


def test_expired_keys_are_removed_in_bulk_and_a_key_seen_again_after_expiry_is_new():
    state = S.FirstSeenState(HORIZON_MS)
    assert run(state, 0, [Record("a", 0, 0, 0), Record("b", 0, 0, 1)]) == ([0, 1], [], 0)
    assert run(state, HORIZON_MS - 1, [Record("a", 1, 0, 2)]) == ([], [0], 0)
    assert run(state, HORIZON_MS // 2, [Record("c", 0, 0, 3), Record("d", 0, 0, 4)]) == (
        [0, 1],
        [],
        0,
    )
    assert run(state, HORIZON_MS, [Record("a", 1, 0, 5)]) == ([0], [], 0)
    assert len(state) == 5  # a and b expired, not yet removed: their run holds c and d
    run(state, HORIZON_MS * 3 // 2, [])
    assert len(state) == 1  # the run of a to d dropped whole; a's new version held
    run(state, HORIZON_MS * 2, [])
    assert len(state) == 0


def test_a_batch_s_cost_does_not_grow_with_the_keys_held():
    """The state stays a few sorted runs, each within ``MAX_RUN`` keys, however many batches
    it took: a batch looks its keys up in each run (no merge into all the keys held)."""
    state = S.FirstSeenState(HORIZON_MS)
    state.MAX_RUN = 4_000
    rng = np.random.default_rng(1)
    for b in range(400):
        n = 100
        hi, lo = rng.integers(0, 2**63, n, np.uint64), rng.integers(0, 2**63, n, np.uint64)
        state.decide(hi, lo, np.zeros(n, np.uint64), np.arange(n), b)
        assert all(len(r) <= state.MAX_RUN for r in state.runs)
        assert len(state.runs) <= len(state) // (state.MAX_RUN // 2) + 7
    assert len(state) == 40_000
