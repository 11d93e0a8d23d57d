"""The columnar stream core (``stream_events.py --engine columnar``): each micro-batch's
records go to Python as Arrow batches and are parsed, checked, deduplicated and written as
columns, never as Spark rows. Spark still reads Kafka, schedules the tasks and keeps the
offsets (its checkpoint: the offset log fixes a batch's records and processing time, the commit
log says which batches are done).

Per micro-batch (``foreachBatch``, :meth:`ColumnarBatches.write`), every output idempotent
under a replay of the batch:

1. **Check** (one task per Kafka partition, ``mapInArrow`` over Spark's Kafka source):
   records in an operator's quarantined ranges are dead letters unparsed; the rest are judged
   by the contract (:func:`include.events.columnar.check_block`, the batch's processing time
   from Spark's offset log); the task writes its dead letters as one Parquet file, keeps its
   valid events on the executor's local disk (Arrow IPC) and returns their 128-bit keys,
   content digests and offsets.
2. **Decide** (the driver): :class:`~spark_apps.columnar.state.FirstSeenState` keeps the first
   of each id within the dedupe horizon of processing time, drops identical repeats and
   dead-letters repeats with other content; the batch's new keys go to the state's log
   (``<checkpoint>/first_seen``) before any output is published.
3. **Write** (the driver's threads, one per kept partition, while the state's changelog is
   written): the kept events, enriched from the product catalog, as the lake's Parquet
   (partitioned by event date and hour, one file per partition value and Kafka partition,
   named by batch id: a replay rewrites the same objects), the conflicting versions as dead
   letters, and the live aggregates' partials.
4. **Publish** (the driver, side by side): the files go to the sinks' ``_spark_metadata``
   logs under the batch id (Spark's own ``FileStreamSinkLog``: every reader of the lake and
   the dead letters is unchanged; a batch the log already holds is not written again), the
   partials are combined and added to Postgres once per batch id (``store.add_batch``), and
   the batch's counts are handed to the progress listener.

The valid events stay on the machine that checked them until the driver writes them: this
engine runs on a local master only (one executor: the driver's JVM, on the driver's machine),
and refuses others at start. The write was a second Spark job (a task per partition, in the
Python workers) until 2026-12-07: on the driver it saves that job's scheduling and round trips,
~0.6-0.9 s of a live batch of ~3 s (``bench/limits.md``, "the columnar core").
"""

from __future__ import annotations

import functools
import json
import logging
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pyspark.sql.pandas.types import from_arrow_schema

from include import pipeline
from include.events import columnar, contract
from spark_apps import sink_log
from spark_apps.columnar import state as S

log = logging.getLogger("stream_events.columnar")

# What the check's tasks and the write's threads return to the driver, one row per item (the
# unused columns null): ``keys`` rows (a Kafka partition's valid events: name the topic,
# kafka_partition, payload their 128-bit keys, digests and offsets as Arrow IPC), ``lake`` and
# ``dead`` rows (a file written: path, size, n rows), ``partial`` rows (an aggregate's partial
# rows: name, payload as Arrow IPC) and ``count`` rows (name, n).
RESULT_SCHEMA = pa.schema(
    [
        ("kind", pa.string()),
        ("name", pa.string()),
        ("kafka_partition", pa.int32()),
        ("hi", pa.int64()),
        ("lo", pa.int64()),
        ("digest", pa.int64()),
        ("kafka_offset", pa.int64()),
        ("path", pa.string()),
        ("size", pa.int64()),
        ("n", pa.int64()),
        ("payload", pa.binary()),
    ]
)
# The same as Spark's type (``mapInArrow``'s output schema), derived: one definition.
RESULT_TYPE = from_arrow_schema(RESULT_SCHEMA)
# The lake's columns in the files (the partition columns are in the paths), as the row-based
# stream writes them (``tx.valid_events`` then ``tx.enrich``).
LAKE_SCHEMA = columnar.SCHEMA.append(pa.field("is_relevant", pa.bool_()))
for _name, _type in (
    ("kafka_partition", pa.int32()),
    ("kafka_offset", pa.int64()),
    ("kafka_timestamp", columnar.TIMESTAMP),
    ("list_price", pa.float64()),
    ("popularity_rank", pa.int32()),
):
    LAKE_SCHEMA = LAKE_SCHEMA.append(pa.field(_name, _type))
DEAD_SCHEMA = pa.schema(
    [
        ("reason", pa.string()),
        ("raw_key", pa.binary()),
        ("raw_value", pa.binary()),
        ("kafka_topic", pa.string()),
        ("kafka_partition", pa.int32()),
        ("kafka_offset", pa.int64()),
        ("kafka_timestamp", columnar.TIMESTAMP),
        ("detected_at", columnar.TIMESTAMP),
    ]
)
QUARANTINED = "quarantined"


@dataclass(frozen=True)
class Plan:
    """What one batch's tasks are told (pickled into their functions)."""

    batch_id: int
    now_us: int
    s3_endpoint: str
    lake: str  # bucket/prefix (pyarrow's S3 paths)
    dead: str
    cache: str  # the executor's local directory of this batch's valid events
    quarantine: tuple[tuple[str, int, int, int], ...] = ()
    write_lake: bool = True
    write_dead: bool = True
    # (output, topic, partition, first offset): what an output of an upgraded first-release
    # deployment already holds is below it (include.supervision.checkpoint.ResumePlan)
    floors: tuple[tuple[str, str, int, int], ...] = ()

    def ours(self, output: str, topic: str, partition: int, offsets: pa.Array) -> pa.Array | None:
        """Which of ``offsets`` (of one Kafka partition) ``output`` writes: those at or above
        its floor; None when it writes all of them."""
        for name, t, p, first in self.floors:
            if (name, t, p) == (output, topic, partition):
                return pc.greater_equal(offsets, pa.scalar(first, pa.int64()))
        return None

    @property
    def detected_date(self) -> str:
        return datetime.fromtimestamp(self.now_us / 1e6, UTC).date().isoformat()

    def s3(self):
        return s3(self.s3_endpoint)

    def file_name(self, topic: str, partition: int, what: str) -> str:
        return f"part-{self.batch_id:010d}-{topic}-{partition}-{what}.parquet"


@functools.cache
def s3(endpoint: str):
    """pyarrow's S3 client for ``endpoint`` with this process' ``AWS_*`` credentials (the
    driver's, or an executor's ``spark.executorEnv``): one per process (a client is safe to
    share between threads, and making one costs a round of the AWS SDK's set-up)."""
    from include.endpoints import S3Endpoint

    return S3Endpoint.from_aws_env(endpoint).pyarrow_filesystem()


def _rows(kind: str, count: int = 1, **columns: Any) -> pa.RecordBatch:
    """``count`` result rows of ``kind`` (:data:`RESULT_SCHEMA`; columns not given are null)."""
    data = {f.name: columns.get(f.name, [None] * count) for f in RESULT_SCHEMA}
    data["kind"] = [kind] * count
    return pa.RecordBatch.from_pydict(data, schema=RESULT_SCHEMA)


def _quarantined(
    topic: str, partition: int, offsets: np.ndarray, ranges: Sequence[tuple[str, int, int, int]]
) -> np.ndarray:
    out = np.zeros(len(offsets), bool)
    for t, p, lo, hi in ranges:
        if t == topic and p == partition:
            out |= (offsets >= lo) & (offsets <= hi)
    return out


def check(plan: Plan) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The check's function (a Spark job, ``mapInArrow``): one Kafka partition's records of
    the batch -> its keys, its dead letters' file, its valid events cached on local disk."""

    def run(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        received = list(batches)
        if not received or not any(b.num_rows for b in received):
            return
        records = pa.Table.from_batches(received).combine_chunks()
        by_partition = records.group_by(["topic", "partition"], use_threads=False).aggregate([])
        for topic, partition in zip(
            by_partition["topic"].to_pylist(), by_partition["partition"].to_pylist(), strict=True
        ):
            mine = records.filter(
                pc.and_(
                    pc.equal(records["topic"], topic), pc.equal(records["partition"], partition)
                )
            )
            yield from _check_partition(plan, topic, partition, mine)

    return run


def _check_partition(
    plan: Plan, topic: str, partition: int, records: pa.Table
) -> Iterator[pa.RecordBatch]:
    offsets = records["offset"].to_numpy()
    held = _quarantined(topic, partition, offsets, plan.quarantine)
    judged = records.filter(pa.array(~held))
    checked = columnar.check_block(judged["value"], plan.now_us)
    dead_rows = np.array([i for i, _ in checked.dead], np.int64)
    reasons = [r for _, r in checked.dead]
    quarantined = records.filter(pa.array(held))
    dead = _ours(
        plan,
        "dead_letter",
        topic,
        partition,
        pa.concat_tables(
            [
                _dead_letters(plan, quarantined, [QUARANTINED] * quarantined.num_rows),
                _dead_letters(plan, judged.take(pa.array(dead_rows, pa.int64())), reasons),
            ]
        ),
    )
    if dead.num_rows and plan.write_dead:
        path = f"{plan.dead}/{pipeline.DEAD_LETTER_DAY_PARTITION}={plan.detected_date}/"
        path += plan.file_name(topic, partition, "contract")
        yield _rows("dead", path=[path], size=[_write(plan, path, dead)], n=[dead.num_rows])
    elif dead.num_rows:
        yield _rows("count", name=["dead_lettered"], n=[dead.num_rows])
    rows = pa.array(checked.valid["row"].to_numpy())
    valid = checked.valid.drop_columns(["row"])
    lineage = judged.select(["key", "value", "partition", "offset", "timestamp"]).take(rows)
    valid = valid.append_column("kafka_partition", lineage["partition"].cast(pa.int32()))
    valid = valid.append_column("kafka_offset", lineage["offset"])
    valid = valid.append_column("kafka_timestamp", lineage["timestamp"].cast(columnar.TIMESTAMP))
    valid = valid.append_column("raw_key", lineage["key"])
    valid = valid.append_column("raw_value", lineage["value"])
    os.makedirs(plan.cache, exist_ok=True)
    with (
        pa.OSFile(_cached(plan, topic, partition), "wb") as f,
        pa.ipc.new_file(f, valid.schema) as w,
    ):
        w.write_table(valid)
    hi, lo = S.keys(valid["event_id"])
    keys = pa.table(
        {
            "hi": pa.array(hi.view(np.int64)),
            "lo": pa.array(lo.view(np.int64)),
            "digest": pa.array(S.digests(valid).view(np.int64)),
            "kafka_offset": valid["kafka_offset"],
        }
    )
    yield _rows("keys", name=[topic], kafka_partition=[partition], payload=[_ipc(keys)])


def _ours(plan: Plan, output: str, topic: str, partition: int, rows: pa.Table) -> pa.Table:
    """The rows (of one Kafka partition) that ``output`` writes (:meth:`Plan.ours`)."""
    keep = plan.ours(output, topic, partition, rows["kafka_offset"]) if plan.floors else None
    return rows if keep is None else rows.filter(keep)


def _ipc(table: pa.Table) -> bytes:
    """A table as one value (Arrow's IPC stream): a task's many small rows cross Spark's
    row conversion as one."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as w:
        w.write_table(table)
    return sink.getvalue().to_pybytes()


def _cached(plan: Plan, topic: str, partition: int) -> str:
    return os.path.join(plan.cache, f"{topic}-{partition}.arrow")


def _dead_letters(plan: Plan, records: pa.Table, reasons: Sequence[str]) -> pa.Table:
    n = records.num_rows
    return pa.table(
        {
            "reason": pa.array(reasons, pa.string()),
            "raw_key": records["key"],
            "raw_value": records["value"],
            "kafka_topic": records["topic"],
            "kafka_partition": records["partition"].cast(pa.int32()),
            "kafka_offset": records["offset"],
            "kafka_timestamp": records["timestamp"].cast(columnar.TIMESTAMP),
            "detected_at": pa.array(np.full(n, plan.now_us, np.int64)).cast(columnar.TIMESTAMP),
        },
        schema=DEAD_SCHEMA,
    )


def _write(plan: Plan, path: str, table: pa.Table) -> int:
    """Write one Parquet object (replacing one a failed attempt left); its size."""
    s3 = plan.s3()
    pq.write_table(table, path, filesystem=s3, compression="snappy")
    return s3.get_file_info(path).size


@dataclass(frozen=True)
class Kept:
    """The driver's decision for one Kafka partition: offsets of the identical repeats
    (dropped) and of the conflicting versions (dead-lettered)."""

    topic: str
    partition: int
    dropped: np.ndarray
    conflicts: np.ndarray


def resolve(aggregates: Mapping[str, str]) -> dict[str, Callable]:
    """The aggregates' Arrow transforms (table -> ``module:function``) as functions."""
    import importlib

    functions = {}
    for table, name in aggregates.items():
        module, _, function = name.partition(":")
        functions[table] = getattr(importlib.import_module(module), function)
    return functions


def write(
    plan: Plan,
    kept: Sequence[Kept],
    catalog: pa.Table,
    window_ms: int,
    functions: Mapping[str, Callable],
    pool: ThreadPoolExecutor,
) -> pa.Table:
    """The write step, in the driver's process (the cached events are on this machine: a
    local master): one thread of ``pool`` per kept partition writes its events (Arrow's
    compute and Parquet writer, and S3, run without Python's lock). Its result rows; every
    thread is waited for before a failure is raised, so none of a failed batch still writes
    when the batch is run again."""

    def one(k: Kept) -> list[pa.RecordBatch]:
        return list(_write_partition(plan, k, catalog, window_ms, functions))

    futures = [pool.submit(one, k) for k in kept]
    wait(futures)  # every partition's thread is done before a failure is raised
    return pa.Table.from_batches([b for f in futures for b in f.result()], schema=RESULT_SCHEMA)


def _write_partition(
    plan: Plan, kept: Kept, catalog: pa.Table, window_ms: int, functions: Mapping[str, Callable]
) -> Iterator[pa.RecordBatch]:
    path = _cached(plan, kept.topic, kept.partition)
    if not os.path.exists(path):
        raise CacheMiss(
            f"batch {plan.batch_id}: the valid events of {kept.topic}/{kept.partition} are not "
            f"on this executor ({path}): the columnar engine runs on a local master only"
        )
    with pa.memory_map(path) as source:
        events = pa.ipc.open_file(source).read_all()
    offsets = events["kafka_offset"]
    conflict = pc.is_in(offsets, value_set=pa.array(kept.conflicts, pa.int64()))
    dropped = pc.or_(conflict, pc.is_in(offsets, value_set=pa.array(kept.dropped, pa.int64())))
    conflicts = _ours(plan, "dead_letter", kept.topic, kept.partition, events.filter(conflict))
    if conflicts.num_rows and plan.write_dead:
        dead = _dead_letters(
            plan,
            pa.table(
                {
                    "key": conflicts["raw_key"],
                    "value": conflicts["raw_value"],
                    "topic": pa.array([kept.topic] * conflicts.num_rows, pa.string()),
                    "partition": conflicts["kafka_partition"],
                    "offset": conflicts["kafka_offset"],
                    "timestamp": conflicts["kafka_timestamp"],
                }
            ),
            [contract.CONFLICTING_DUPLICATE] * conflicts.num_rows,
        )
        file = f"{plan.dead}/{pipeline.DEAD_LETTER_DAY_PARTITION}={plan.detected_date}/"
        file += plan.file_name(kept.topic, kept.partition, "conflicts")
        yield _rows("dead", path=[file], size=[_write(plan, file, dead)], n=[dead.num_rows])
    elif conflicts.num_rows:
        yield _rows("count", name=["dead_lettered"], n=[conflicts.num_rows])
    valid = lake_rows(events.filter(pc.invert(dropped)), catalog)
    lake = _ours(plan, "lake", kept.topic, kept.partition, valid)
    relevant = int(pc.sum(lake["is_relevant"]).as_py() or 0)
    yield _rows("count", name=["landed"], n=[lake.num_rows])
    yield _rows("count", name=["irrelevant"], n=[lake.num_rows - relevant])
    if plan.write_lake and lake.num_rows:
        yield from _write_lake(plan, kept, lake)
    for table, function in functions.items():
        rows = _ours(plan, table, kept.topic, kept.partition, valid)
        yield _rows("partial", name=[table], payload=[_ipc(function(rows, window_ms))])
    os.unlink(path)


def lake_rows(events: pa.Table, catalog: pa.Table) -> pa.Table:
    """Valid events -> the lake's rows: the contract's fields, relevance, lineage and the
    catalog's ``list_price`` and ``popularity_rank`` (null for an event without a product or
    with one the catalog lacks), in :data:`LAKE_SCHEMA`'s order; the partition columns
    ``event_date`` and ``event_hour`` last."""
    irrelevant_traffic = pc.is_in(
        events["traffic_type"],
        value_set=pa.array([contract.TrafficType.BOT.value, contract.TrafficType.INTERNAL.value]),
    )
    relevant = pc.and_(
        pc.not_equal(events["event_type"], contract.EventType.HEARTBEAT.value),
        pc.invert(pc.fill_null(irrelevant_traffic, False)),
    )
    at = pc.index_in(events["product_id"], value_set=catalog["product_id"])
    columns = {f.name: events[f.name] for f in columnar.SCHEMA}
    columns["is_relevant"] = relevant
    for name in ("kafka_partition", "kafka_offset", "kafka_timestamp"):
        columns[name] = events[name]
    columns["list_price"] = catalog["list_price"].take(at)
    columns["popularity_rank"] = catalog["popularity_rank"].take(at)
    table = pa.table(columns, schema=LAKE_SCHEMA)
    table = table.append_column("event_date", pc.strftime(events["event_time"], "%Y-%m-%d"))
    return table.append_column("event_hour", pc.hour(events["event_time"]).cast(pa.int32()))


def _write_lake(plan: Plan, kept: Kept, lake: pa.Table) -> Iterator[pa.RecordBatch]:
    parts = lake.group_by(["event_date", "event_hour"], use_threads=False).aggregate([])
    for day, hour in zip(
        parts["event_date"].to_pylist(), parts["event_hour"].to_pylist(), strict=True
    ):
        rows = lake.filter(
            pc.and_(pc.equal(lake["event_date"], day), pc.equal(lake["event_hour"], hour))
        ).drop_columns(["event_date", "event_hour"])
        path = f"{plan.lake}/event_date={day}/event_hour={hour}/"
        path += plan.file_name(kept.topic, kept.partition, "events")
        yield _rows("lake", path=[path], size=[_write(plan, path, rows)], n=[rows.num_rows])


class CacheMiss(RuntimeError):
    """The write found no cached events: the check ran on another machine."""


def batch_time_ms(spark, checkpoint: str, batch_id: int) -> int:
    """The processing time Spark fixed for a micro-batch (its offset log's
    ``batchTimestampMs``: the same when the batch is replayed)."""
    jvm = spark._jvm
    path = jvm.org.apache.hadoop.fs.Path(f"{checkpoint.rstrip('/')}/offsets/{batch_id}")
    fs = path.getFileSystem(spark._jsc.hadoopConfiguration())
    stream = fs.open(path)
    try:
        text = jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
    finally:
        stream.close()
    for line in text.splitlines()[1:2]:
        return int(json.loads(line)["batchTimestampMs"])
    raise ValueError(f"{path}: no batch metadata")


@dataclass
class SinkLog:
    """A file sink's ``_spark_metadata`` (Spark's ``FileStreamSinkLog``): the columnar engine's
    writes are committed there under the batch id, as Spark's file sink commits its own. The
    log keeps the archiver's retention of entries; older ones are archived before each commit
    that could drop them (spark_apps/sink_log.py)."""

    spark: Any
    path: str  # s3a://bucket/prefix
    archiver: sink_log.Archiver
    _log: Any = field(default=None, init=False)

    def __post_init__(self) -> None:
        jvm = self.spark._jvm
        sinks = jvm.org.apache.spark.sql.execution.streaming.sinks
        self._sinks = sinks
        self._log = sinks.FileStreamSinkLog(
            sinks.FileStreamSinkLog.VERSION(),
            self.spark._jsparkSession,
            f"{self.path.rstrip('/')}/{sink_log.SINK_LOG}",
            retention_option(jvm, self.archiver.retention_ms),
        )

    def latest(self) -> int:
        latest = self._log.getLatestBatchId()
        return int(latest.get()) if latest.isDefined() else -1

    def add(self, batch_id: int, files: Sequence[tuple[str, int]]) -> bool:
        """Commit ``files`` (object path without the scheme, size) as batch ``batch_id``;
        False when the log already holds that batch."""
        scheme = self.path.split("://", 1)[0]
        gateway = self.spark.sparkContext._gateway
        statuses = gateway.new_array(self._sinks.SinkFileStatus, len(files))
        now = int(time.time() * 1000)
        for i, (path, size) in enumerate(files):
            statuses[i] = self._sinks.SinkFileStatus(
                f"{scheme}://{path}", int(size), False, now, 1, 32 * 1024 * 1024, "add"
            )
        self.archiver.before_commit()
        return bool(self._log.add(batch_id, statuses))


def retention_option(jvm: Any, retention_ms: int) -> Any:
    """Scala's ``Some(retention_ms)`` as a ``Long`` (``FileStreamSinkLog``'s retention). Py4J
    passes a Python int that fits 32 bits as an ``Integer``, which Scala cannot unbox as a
    ``Long``: the option is made in the JVM from the number's text."""
    ops = getattr(getattr(jvm.scala.collection, "StringOps$"), "MODULE$")
    return getattr(ops, "toLongOption$extension")(str(int(retention_ms)))


# A cache directory of another application untouched for this long is a killed driver's.
STALE_CACHE_S = 86_400


def cache_root(app_id: str) -> str:
    """Where this application's executors keep a batch's valid events for the driver's write
    (one directory per batch, removed when the batch ends)."""
    return os.path.join(tempfile.gettempdir(), "rtap-columnar", app_id)


def clear_cache(root: str) -> None:
    shutil.rmtree(root, ignore_errors=True)


def clear_stale_caches(root: str, now: float | None = None) -> list[str]:
    """Remove the cache directories beside ``root`` that no application touched for
    :data:`STALE_CACHE_S` (a driver killed mid-batch leaves its batch's events behind);
    the ones removed."""
    parent = os.path.dirname(root)
    now = time.time() if now is None else now
    removed = []
    for name in os.listdir(parent) if os.path.isdir(parent) else []:
        path = os.path.join(parent, name)
        if path != root and now - os.path.getmtime(path) > STALE_CACHE_S:
            clear_cache(path)
            removed.append(path)
    return removed


CATALOG_SQL = "SELECT product_id, price::float8, popularity_rank::int4 FROM products"


def read_catalog(conn) -> pa.Table:
    """The product catalog the lake's rows are enriched from (``product_id``, ``list_price``,
    ``popularity_rank``). Ends its read-only transaction."""
    with conn.cursor() as cur:
        cur.execute(CATALOG_SQL)
        rows = cur.fetchall()
    conn.rollback()
    return pa.table(
        {
            "product_id": pa.array([r[0] for r in rows], pa.string()),
            "list_price": pa.array([r[1] for r in rows], pa.float64()),
            "popularity_rank": pa.array([r[2] for r in rows], pa.int32()),
        }
    )


@dataclass
class Outcome:
    """What the driver learns of one batch: the dead letters' and the lake's files, the
    aggregates' partials per table, and the counts (:meth:`observed`)."""

    lake: list[tuple[str, int]] = field(default_factory=list)
    dead: list[tuple[str, int]] = field(default_factory=list)
    partials: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)

    def take(self, results: pa.Table) -> None:
        for row in results.filter(pc.not_equal(results["kind"], "keys")).to_pylist():
            kind = row["kind"]
            if kind in ("lake", "dead"):
                getattr(self, kind).append((row["path"], row["size"]))
                if kind == "dead":
                    self.count("dead_lettered", row["n"])
            elif kind == "count":
                self.count(row["name"], row["n"])
            elif kind == "partial":
                partial = pa.ipc.open_stream(row["payload"]).read_all()
                self.partials.setdefault(row["name"], []).extend(partial.to_pylist())

    def count(self, name: str, n: int) -> None:
        self.counts[name] = self.counts.get(name, 0) + int(n)

    def observed(self) -> dict[str, dict[str, int]]:
        """The batch's counts as the row-based stream's observed metrics name them
        (``stream_progress.observed``)."""
        c = self.counts
        return {
            "lake": {"landed": c.get("landed", 0), "irrelevant": c.get("irrelevant", 0)},
            "dead_letter": {
                "dead_lettered": c.get("dead_lettered", 0),
                "conflicting_duplicates": c.get("conflicting_duplicates", 0),
            },
        }


def decide(state: S.FirstSeenState, results: pa.Table, now_ms: int) -> tuple[list[Kept], int, int]:
    """The check's ``keys`` rows -> per Kafka partition the offsets to drop and to
    dead-letter, the number of identical copies and of conflicts."""
    parts = results.filter(pc.equal(results["kind"], "keys")).to_pylist()
    tables = [pa.ipc.open_stream(p["payload"]).read_all() for p in parts]
    sizes = np.array([t.num_rows for t in tables], np.int64)
    slot = np.repeat(np.arange(len(tables)), sizes)
    keys = pa.concat_tables(tables) if tables else None
    if keys is None or not keys.num_rows:
        state.decide(*(np.zeros(0, np.uint64),) * 3, np.zeros(0, np.int64), now_ms)
        return [], 0, 0
    partition = np.array([p["kafka_partition"] for p in parts], np.int64)[slot]
    offset = keys["kafka_offset"].to_numpy()
    decision = state.decide(
        keys["hi"].to_numpy().view(np.uint64),
        keys["lo"].to_numpy().view(np.uint64),
        keys["digest"].to_numpy().view(np.uint64),
        (partition << 40) + offset,  # the batch's order: Kafka partition, then offset
        now_ms,
    )
    rejected = np.ones(len(offset), bool)
    rejected[decision.first] = False
    conflict = np.zeros(len(offset), bool)
    conflict[decision.conflicts] = True
    out = [
        Kept(
            p["name"],
            p["kafka_partition"],
            offset[(slot == i) & rejected & ~conflict],
            offset[(slot == i) & conflict],
        )
        for i, p in enumerate(parts)
        if sizes[i]
    ]
    return out, decision.copies, len(decision.conflicts)
