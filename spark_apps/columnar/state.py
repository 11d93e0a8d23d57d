"""The columnar stream's deduplication state, held by the driver: which event ids it first saw
within the dedupe horizon of *processing* time, and the digest of each one's first version.

A micro-batch's tasks hand the driver one row per valid event: its 128-bit key (:func:`keys`),
its content digest (:func:`digests`) and its order in the batch (Kafka partition and offset).
:meth:`FirstSeenState.decide` keeps the first record of each key (within the batch the lowest
order; against the state, a key seen within the horizon is a repeat), and of the repeats tells
the identical copies (dropped, counted) from the versions with other content (dead-lettered as
``conflicting_duplicate``), the rules of the row-based stream's ``rtap.spark.FirstSeen``.
A key expires ``horizon`` after the batch that first saw it; expired keys read as absent at
once and are removed from memory in bulk (a run at a time), so no batch scans the whole state
to evict.

Why sorted numpy arrays on the driver rather than Spark's state store: measured in
``bench/limits.md`` ("the columnar core"), a decision costs 0.10-0.23 s per 200,000 keys
against 24,000,000 held, where Spark's RocksDB store through ``transformWithState`` cost
1.2-1.6 s per 100,000 keys and task, with a shuffle by key in front of it. The state takes
32 bytes per key held. Why several sorted runs rather than one: a live batch of ~30,000 keys
merged into one array of every key held cost O(keys held) (0.2 s at 2.5 M keys, 1.4-2.0 s
at 6.8 M on a busy machine, most of a batch); looked up in a dozen runs it costs
~0.05-0.15 s at any size (``bench/limits.md``).

Durability (:class:`StateLog`): every batch writes its new keys as one changelog object named
by its batch id, before its outputs are published; every ``snapshot_every`` batches the whole
state is written instead. The state before batch ``n`` is the newest snapshot below ``n`` and
the changelogs after it: a replayed batch (the same Kafka offsets and processing time, Spark's
offset log) is decided against exactly the state its first attempt saw, so it decides the same.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pyarrow import fs as pafs

from include.events import contract

# The fields that make two versions of an event "the same event": every contract field but the
# producer's own send stamp (a retry may re-stamp ``ingestion_time``).
CONTENT_FIELDS = tuple(f.name for f in contract.FIELDS if f.name != "ingestion_time")
_CANONICAL_UUID = r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$"


def keys(event_ids: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """The 128-bit keys of event ids, as (high, low) uint64 halves: a canonical UUID (lower-case
    hex, as producers write them) is its own 16 bytes; any other id, the 16-byte BLAKE2b digest
    of its UTF-8 (two different ids share a key with probability 2**-128)."""
    ids = pc.cast(event_ids, pa.string())
    n = len(ids)
    hi, lo = np.zeros(n, np.uint64), np.zeros(n, np.uint64)
    if not n:
        return hi, lo
    uuid = pc.fill_null(pc.match_substring_regex(ids, _CANONICAL_UUID), False).to_numpy(
        zero_copy_only=False
    )
    where = np.flatnonzero(uuid)
    if len(where):
        hexes = pc.replace_substring(ids.take(pa.array(where)), "-", "")
        raw = np.frombuffer(bytes.fromhex("".join(hexes.to_pylist())), dtype=">u8")
        hi[where], lo[where] = raw[0::2], raw[1::2]
    other = np.flatnonzero(~uuid)
    if len(other):
        import hashlib

        digests = b"".join(
            hashlib.blake2b(str(v).encode(), digest_size=16).digest()
            for v in ids.take(pa.array(other)).to_pylist()
        )
        raw = np.frombuffer(digests, dtype=">u8")
        hi[other], lo[other] = raw[0::2], raw[1::2]
    return hi, lo


def digests(events: pa.Table) -> np.ndarray:
    """A 64-bit digest per event of its :data:`CONTENT_FIELDS` (typed values, so two encodings
    of the same JSON are the same content; a null is never read as a value): BLAKE2b over the
    string fields joined (a separator between them, a marker for a null) and the numbers' and
    timestamps' bits with the pattern of their nulls. The standard library's hash, not pandas'
    (whose import cost each Python worker 2-3 s in a stream's first batch)."""
    import hashlib

    n = events.num_rows
    if not n:
        return np.zeros(0, np.uint64)
    strings = [f.name for f in contract.FIELDS if f.name in CONTENT_FIELDS and f.type == "string"]
    numbers = [f.name for f in contract.FIELDS if f.name in CONTENT_FIELDS and f.type != "string"]
    bits = np.zeros((n, len(numbers) + 1), np.uint64)  # the last column: which numbers are null
    for i, name in enumerate(numbers):
        col = events[name]
        if pa.types.is_timestamp(col.type):
            col = col.cast(pa.int64())
        values = pc.fill_null(col, 0).to_numpy()
        bits[:, i] = values.view(np.uint64) if values.dtype.itemsize == 8 else values
        nulls = pc.is_null(col).to_numpy(zero_copy_only=False).astype(np.uint64)
        bits[:, -1] |= nulls << np.uint64(i)
    width = bits.shape[1] * 8
    fixed = pa.FixedSizeBinaryArray.from_buffers(
        pa.binary(width), n, [None, pa.py_buffer(bits.tobytes())]
    )
    # \x1e marks a null string: the contract refuses control characters, so no value has it.
    joined = pc.binary_join_element_wise(
        *[events[s].cast(pa.binary()) for s in strings],
        fixed.cast(pa.binary()),
        b"\x1f",
        null_handling="replace",
        null_replacement=b"\x1e",
    )
    joined = joined.combine_chunks() if isinstance(joined, pa.ChunkedArray) else joined
    ends = np.frombuffer(joined.buffers()[1], np.int32)[joined.offset : joined.offset + n + 1]
    data = memoryview(joined.buffers()[2])
    b2 = hashlib.blake2b
    bounds = ends.tolist()
    out = b"".join([b2(data[a:b], digest_size=8).digest() for a, b in itertools.pairwise(bounds)])
    return np.frombuffer(out, np.uint64).copy()


@dataclass(frozen=True)
class Decision:
    """What one batch's records are: ``first`` the indices of the first-seen records (kept),
    ``conflicts`` those of repeats with other content (dead-lettered), ``copies`` how many
    identical repeats were dropped. Indices into the arrays handed to :meth:`decide`."""

    first: np.ndarray
    conflicts: np.ndarray
    copies: int


class _Run:
    """One sorted run of the state: keys (high half, then low half) with their first version's
    digest and the processing time of the batch that saw them; ``newest_ms`` the latest."""

    __slots__ = ("digest", "hi", "lo", "newest_ms", "seen_ms")

    def __init__(self, hi: np.ndarray, lo: np.ndarray, digest: np.ndarray, seen_ms: np.ndarray):
        self.hi, self.lo, self.digest, self.seen_ms = hi, lo, digest, seen_ms
        self.newest_ms = int(seen_ms.max()) if len(seen_ms) else -(1 << 62)

    def __len__(self) -> int:
        return len(self.hi)

    def find(self, hi: np.ndarray, lo: np.ndarray, since_ms: int) -> tuple[np.ndarray, np.ndarray]:
        """(held here and seen after ``since_ms``, where) per key (``hi`` sorted)."""
        left = np.searchsorted(self.hi, hi, "left")
        right = np.searchsorted(self.hi, hi, "right")
        at = np.minimum(left, len(self.hi) - 1)
        hit = (right - left == 1) & (self.lo[at] == lo)
        for i in np.flatnonzero(right - left > 1):  # a shared high half: compare each
            span = np.arange(left[i], right[i])
            match = span[(self.lo[span] == lo[i]) & (self.seen_ms[span] > since_ms)]
            if len(match):
                hit[i], at[i] = True, match[0]
        hit &= self.seen_ms[at] > since_ms
        return hit, at

    def live(self, since_ms: int) -> _Run:
        """This run without its keys seen at or before ``since_ms``."""
        keep = self.seen_ms > since_ms
        if keep.all():
            return self
        return _Run(self.hi[keep], self.lo[keep], self.digest[keep], self.seen_ms[keep])

    def merge(self, newer: _Run) -> _Run:
        """One run of both (``newer`` holds no key this one holds live: drop expired keys
        first): O(size of both)."""
        at = np.searchsorted(self.hi, newer.hi)
        return _Run(
            np.insert(self.hi, at, newer.hi),
            np.insert(self.lo, at, newer.lo),
            np.insert(self.digest, at, newer.digest),
            np.insert(self.seen_ms, at, newer.seen_ms),
        )


class FirstSeenState:
    """Keys first seen within ``horizon_ms`` of processing time, with their first version's
    digest and the processing time (epoch milliseconds) of the batch that saw it.

    Held as sorted runs, oldest first (a log-structured merge): a batch's new keys are one run,
    and the newest runs are merged while the one before is no larger than the last (as a
    binary counter carries) and the merged run stays within :attr:`MAX_RUN` keys. A batch
    looks its keys up in each run, so it costs O(batch x runs), never O(keys held): ~log2 of
    the batch count of the newest :attr:`MAX_RUN` keys plus one run per :attr:`MAX_RUN` keys
    beyond them. A run whose newest key has expired is dropped whole; a merge drops the
    expired keys of the runs it joins, so expired keys are held at most until their run's
    newest key expires."""

    COLUMNS = ("hi", "lo", "digest", "seen_ms")
    MAX_RUN = 1 << 20  # keys: a merge copies at most 32 MiB

    def __init__(self, horizon_ms: int) -> None:
        if horizon_ms <= 0:
            raise ValueError(f"the dedupe horizon must be positive, not {horizon_ms} ms")
        self.horizon_ms = horizon_ms
        self.runs: list[_Run] = []
        self.added = self._empty()  # the keys the last decision added (its changelog)

    def __len__(self) -> int:
        return sum(len(r) for r in self.runs)

    def decide(
        self,
        hi: np.ndarray,
        lo: np.ndarray,
        digest: np.ndarray,
        order: np.ndarray,
        now_ms: int,
    ) -> Decision:
        """Decide one batch (keys, digests, order within the batch) at its processing time
        ``now_ms``, and add its first-seen keys to the state (:attr:`added`)."""
        self._evict(now_ms)
        n = len(hi)
        if n == 0:
            self.added = self._empty()
            return Decision(np.zeros(0, np.int64), np.zeros(0, np.int64), 0)
        idx = np.lexsort((order, lo, hi))
        h, low = hi[idx], lo[idx]
        lead = np.ones(n, bool)  # the first of its key in this batch
        lead[1:] = (h[1:] != h[:-1]) | (low[1:] != low[:-1])
        group = np.cumsum(lead) - 1
        lead_idx = idx[lead]
        first_digest = digest[lead_idx][group]  # the digest of the batch's first of the key
        found, held = self._lookup(hi[lead_idx], lo[lead_idx], now_ms)
        # The reference version of each key: the state's (seen within the horizon) or the
        # batch's first.
        reference = np.where(found[group], held[group], first_digest)
        repeat = ~lead | found[group]
        same = digest[idx] == reference
        conflicts = np.sort(idx[repeat & ~same])
        first = np.sort(idx[~repeat])
        added = idx[lead & ~found[group]]  # sorted by key, as a run is
        seen = np.full(len(added), now_ms, np.int64)
        self._add(_Run(hi[added], lo[added], digest[added], seen), now_ms)
        self.added = pa.table(
            {
                "hi": pa.array(hi[added]),
                "lo": pa.array(lo[added]),
                "digest": pa.array(digest[added]),
                "seen_ms": pa.array(seen),
            }
        )
        return Decision(first, conflicts, int((repeat & same).sum()))

    def _lookup(self, hi: np.ndarray, lo: np.ndarray, now_ms: int) -> tuple[np.ndarray, np.ndarray]:
        """(held and not expired, its digest) per key (sorted by key)."""
        found = np.zeros(len(hi), bool)
        held = np.zeros(len(hi), np.uint64)
        since = now_ms - self.horizon_ms
        for run in self.runs:
            if not len(run) or run.newest_ms <= since:
                continue
            hit, at = run.find(hi, lo, since)
            found |= hit
            held[hit] = run.digest[at[hit]]
        return found, held

    def _add(self, run: _Run, now_ms: int) -> None:
        """Append a run of keys no run holds live, then merge the newest runs while the one
        before is no larger than the last and the merge stays within :attr:`MAX_RUN`."""
        if not len(run):
            return
        self.runs.append(run)
        since = now_ms - self.horizon_ms
        while len(self.runs) >= 2:
            older, newer = self.runs[-2], self.runs[-1]
            if len(older) > len(newer) or len(older) + len(newer) > self.MAX_RUN:
                break
            self.runs[-2:] = [older.live(since).merge(newer.live(since))]

    def _evict(self, now_ms: int) -> None:
        """Drop the runs whose every key has expired (a lookup already reads an expired key
        as absent)."""
        since = now_ms - self.horizon_ms
        self.runs = [r for r in self.runs if r.newest_ms > since]

    def snapshot(self) -> pa.Table:
        """The whole state (its runs' keys, oldest run first)."""
        return pa.table(
            {
                name: pa.array(
                    np.concatenate([getattr(r, name) for r in self.runs])
                    if self.runs
                    else np.zeros(0, np.int64 if name == "seen_ms" else np.uint64)
                )
                for name in self.COLUMNS
            }
        )

    def apply(self, changes: pa.Table) -> None:
        """Add a changelog's (or a snapshot's) keys, as :meth:`decide` added them."""
        for seen_ms in np.unique(changes["seen_ms"].to_numpy()):
            part = changes.filter(pc.equal(changes["seen_ms"], seen_ms))
            self._evict(int(seen_ms))
            hi, lo = part["hi"].to_numpy(), part["lo"].to_numpy()
            order = np.lexsort((lo, hi))
            self._add(
                _Run(
                    hi[order],
                    lo[order],
                    part["digest"].to_numpy()[order],
                    np.full(len(order), seen_ms, np.int64),
                ),
                int(seen_ms),
            )

    @classmethod
    def _empty(cls) -> pa.Table:
        return pa.schema(
            [
                ("hi", pa.uint64()),
                ("lo", pa.uint64()),
                ("digest", pa.uint64()),
                ("seen_ms", pa.int64()),
            ]
        ).empty_table()


_ENTRY = re.compile(r"^(\d+)\.(changelog|snapshot)$")


class StateLog:
    """Where the state is kept: ``<root>/<batch id>.changelog`` (the keys a batch added) and
    ``<root>/<batch id>.snapshot`` (the whole state after that batch), Arrow IPC files on a
    pyarrow file system (S3 in the stream, a local path in the tests)."""

    def __init__(self, filesystem: pafs.FileSystem, root: str, snapshot_every: int = 50) -> None:
        self.fs, self.root, self.snapshot_every = filesystem, root.rstrip("/"), snapshot_every
        self.fresh = True  # nothing was restored (set by restore)
        self._snapshotted = False

    def _path(self, batch_id: int, kind: str) -> str:
        return f"{self.root}/{batch_id}.{kind}"

    def entries(self) -> dict[int, set[str]]:
        """Batch id -> the kinds of entry written for it."""
        selector = pafs.FileSelector(self.root, allow_not_found=True)
        out: dict[int, set[str]] = {}
        for info in self.fs.get_file_info(selector):
            m = _ENTRY.match(info.base_name)
            if m:
                out.setdefault(int(m[1]), set()).add(m[2])
        return out

    def write(self, batch_id: int, state: FirstSeenState) -> None:
        """Record a decided batch: its changelog, or the whole state every ``snapshot_every``
        batches and in the state's first batch (a replayed batch writes the same object
        again)."""
        snap = batch_id % self.snapshot_every == 0 or not self._snapshotted
        table = state.snapshot() if snap else state.added
        self._put(self._path(batch_id, "snapshot" if snap else "changelog"), table)
        self._snapshotted = True

    def restore(self, before: int, horizon_ms: int) -> FirstSeenState:
        """The state before batch ``before``: the newest snapshot below it and every changelog
        after that snapshot; an empty state when nothing below it was written (:attr:`fresh`).
        A log without a snapshot, or with a changelog missing, is refused (the state would
        forget keys)."""
        entries = {b: k for b, k in self.entries().items() if b < before}
        state = FirstSeenState(horizon_ms)
        self.fresh = not entries
        self._snapshotted = bool(entries)
        if not entries:
            return state
        snapshots = [b for b, kinds in entries.items() if "snapshot" in kinds]
        if not snapshots:
            raise StateLost(
                f"the deduplication state under {self.root} has changelogs but no snapshot "
                f"below batch {before}: it cannot be restored"
            )
        start = max(snapshots)
        missing = [b for b in range(start + 1, before) if "changelog" not in entries.get(b, ())]
        if missing:
            raise StateLost(
                f"the deduplication state under {self.root} lacks the changelogs of batches "
                f"{missing[:10]}: it cannot be restored before batch {before}"
            )
        state.apply(self._get(self._path(start, "snapshot")))
        for b in range(start + 1, before):
            state.apply(self._get(self._path(b, "changelog")))
        return state

    def prune(self, before: int) -> int:
        """Delete the entries no restore at or after batch ``before`` needs (everything older
        than the newest snapshot below it); how many were deleted."""
        entries = self.entries()
        snapshots = [b for b, k in entries.items() if "snapshot" in k and b < before]
        if not snapshots:
            return 0
        keep_from = max(snapshots)
        old = [
            self._path(b, kind) for b, kinds in entries.items() if b < keep_from for kind in kinds
        ]
        for path in old:
            self.fs.delete_file(path)
        return len(old)

    def _put(self, path: str, table: pa.Table) -> None:
        self.fs.create_dir(self.root, recursive=True)
        with self.fs.open_output_stream(path) as out, pa.ipc.new_file(out, table.schema) as w:
            w.write_table(table)

    def _get(self, path: str) -> pa.Table:
        with self.fs.open_input_file(path) as f:
            return pa.ipc.open_file(f).read_all()


class StateLost(RuntimeError):
    """The deduplication state's log is incomplete: the stream stops rather than forget ids."""
