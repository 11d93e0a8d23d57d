"""The stream's deduplication (``first_seen``): the JVM operator on a real micro-batch stream
(local Spark, a file source of Kafka-shaped rows, state in a checkpoint across restarts) and
the same rules on a batch DataFrame."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from pyspark.sql import functions as F
from pyspark.sql import types as T

from include.events import contract
from spark_apps.transforms import events as tx
from tests.bad_inputs import purchase

CONFLICT = tx.CONFLICTING_DUPLICATE
NOW = datetime.now(UTC)  # one event time for every version of an event


def record(event_id: str, price: float = 10.0, sent: int = 0) -> bytes:
    """A valid purchase; ``sent`` re-stamps ``ingestion_time``, which is not part of the content."""
    stamp = f"2026-12-01T00:00:0{sent}Z"
    return json.dumps(purchase(NOW, event_id=event_id, price=price, ingestion_time=stamp)).encode()


class Stream:
    """Kafka-shaped rows appended to a directory, drained by ``availableNow`` runs of one query
    (a fresh start from the checkpoint each time, as after a driver restart)."""

    def __init__(
        self,
        spark,
        root,
        horizon: str,
        state: tx.DedupeState = tx.DedupeState.KEY_BYTES,
        rereads=None,
    ) -> None:
        self.spark, self.root, self.horizon, self.state = spark, root, horizon, state
        self.batches: list[list[tuple]] = []
        self.ingested: set[datetime] = set()
        # With a counter, the stream's own path: valid records lose their bytes before the
        # operator, which counts the dead letters it makes without them.
        self.rereads = rereads
        self.without_bytes = 0

    def send(self, rows: list[tuple[int, int, bytes]]) -> None:
        kafka = [(b"k", v, "events", p, o, None) for p, o, v in rows]
        df = self.spark.createDataFrame(kafka, tx.KAFKA_SCHEMA)
        df.coalesce(1).write.mode("append").parquet(str(self.root / "in"))

    def drain(self) -> list[tuple]:
        raw = self.spark.readStream.schema(tx.KAFKA_SCHEMA).parquet(str(self.root / "in"))
        seen: list[tuple] = []

        def collect(batch, _batch_id):
            batch.persist()  # as the stream does: the operator runs once per batch
            rows = batch.select("event_id", "price", "kafka_partition", "kafka_offset", tx.ERROR)
            seen.extend(tuple(r) for r in rows.collect())
            self.ingested.update(r[0] for r in batch.select(tx.INGESTED_AT).distinct().collect())
            self.without_bytes += tx.dead_letters(batch).where(tx.without_bytes()).count()
            batch.unpersist()

        checked = tx.parse(raw)
        if self.rereads is not None:
            checked = tx.without_raw_bytes_of_valid_events(checked)
        query = (
            tx.first_seen(checked, self.horizon, state=self.state, rereads=self.rereads)
            .writeStream.foreachBatch(collect)
            .option("checkpointLocation", str(self.root / "checkpoint"))
            .trigger(availableNow=True)
            .start()
        )
        query.awaitTermination()
        self.last_batch_ms = int(
            datetime.fromisoformat(
                query.lastProgress["timestamp"].replace("Z", "+00:00")
            ).timestamp()
            * 1000
        )
        return sorted(seen, key=lambda r: (r[2], r[3]))


# Every state layout: the current one (transformWithState, keys that expire, ids as bytes), the
# same operator keyed by id strings, and the earlier releases' (flatMapGroupsWithState,
# processing-time timeouts); a checkpoint keeps the one that wrote it.
OPERATORS = pytest.mark.parametrize("state", list(tx.DedupeState), ids=lambda s: s.name.lower())


@OPERATORS
def test_the_stream_keeps_the_first_drops_copies_and_dead_letters_conflicts(spark, tmp_path, state):
    stream = Stream(spark, tmp_path, "20 seconds", state)
    stream.send(
        [
            (0, 0, record("e1")),
            (0, 1, record("e1", sent=1)),  # a copy, re-stamped by the producer: dropped
            (0, 2, record("e1", price=99.0)),  # same id, other content: dead-lettered
            (0, 3, record("e3", price=1.0)),
            (0, 4, b"{not json"),
            (1, 0, record("e2")),
            (1, 1, record("e3", price=2.0)),  # within a batch the lowest (partition, offset) wins
        ]
    )
    assert stream.drain() == [
        ("e1", 10.0, 0, 0, None),
        ("e1", 99.0, 0, 2, CONFLICT),
        ("e3", 1.0, 0, 3, None),
        (None, None, 0, 4, "malformed_json"),
        ("e2", 10.0, 1, 0, None),
        ("e3", 2.0, 1, 1, CONFLICT),
    ]
    first_ms = stream.last_batch_ms

    # A restarted query, within the horizon: the state holds the first contents.
    stream.send(
        [
            (0, 5, record("e1", sent=2)),  # copy: dropped
            (0, 6, record("e1", price=98.0)),  # conflicts with the first, not the last
            (1, 2, record("e3", price=2.0)),  # the dead-lettered content is not "first"
            (1, 3, record("e4")),
        ]
    )
    assert stream.drain() == [
        ("e1", 98.0, 0, 6, CONFLICT),
        ("e3", 2.0, 1, 2, CONFLICT),
        ("e4", 10.0, 1, 3, None),
    ]

    # Past the horizon (20 s of the platform's clock since e1's first sighting): e1 is new
    # again, whatever its content.
    while time.time() * 1000 <= first_ms + 20_500:
        time.sleep(0.1)
    stream.send([(0, 7, record("e1", price=97.0))])
    assert stream.drain() == [("e1", 97.0, 0, 7, None)]


@OPERATORS
def test_the_operator_counts_the_dead_letters_it_makes_without_bytes(spark, tmp_path, state):
    """The stream reads a dead letter's bytes again from the topic only when the operator
    counted one without them: a conflicting version and an event time out of bounds that the
    hint missed (here no Kafka timestamp, so no hint) are counted; the contract's own dead
    letters keep their bytes and are not."""
    rereads = tx.reread_counter(spark)
    stream = Stream(spark, tmp_path, "10 minutes", state, rereads=rereads)
    future = datetime.now(UTC) + timedelta(seconds=contract.MAX_FUTURE_SKEW_SECONDS, minutes=5)
    stream.send(
        [
            (0, 0, record("e1")),
            (0, 1, record("e1", price=99.0)),  # a conflicting version: counted
            (0, 2, b"{not json"),  # the contract's dead letter, with its bytes
            (0, 3, at(future, "future")),  # out of bounds: counted
            (1, 0, record("e2")),
        ]
    )
    stream.drain()
    assert rereads.value() == stream.without_bytes == 2
    stream.send([(1, 1, record("e2")), (1, 2, record("e3"))])  # a copy (dropped), a new id
    stream.drain()
    assert rereads.value() == stream.without_bytes == 2


def test_a_batch_gets_the_same_rules(spark):
    values = [
        (0, 0, record("e1")),
        (0, 1, record("e1", sent=1)),
        (0, 2, record("e1", price=99.0)),
        (0, 3, b"[1]"),
        (1, 0, record("e1", price=10.0)),
    ]
    kafka = spark.createDataFrame(
        [(b"k", v, "events", p, o, None) for p, o, v in values], tx.KAFKA_SCHEMA
    )
    out = tx.first_seen(tx.parse(kafka), "10 minutes")
    rows = sorted(
        tuple(r) for r in out.select("kafka_partition", "kafka_offset", tx.ERROR).collect()
    )
    assert rows == [(0, 0, None), (0, 2, CONFLICT), (0, 3, "not_an_object")]


def test_the_digest_tells_contents_apart_and_ignores_the_send_stamp(spark):
    """A re-stamped copy, a changed price, and one value moved between two neighbouring
    columns with a null left behind: the digest hashes the fields' JSON because Spark's
    ``xxhash64`` of the columns skips a null, so it cannot tell those two apart."""
    values = [record("e1"), record("e1", sent=1), record("e1", price=99.0)]
    kafka = spark.createDataFrame(
        [(b"k", v, "events", 0, o, None) for o, v in enumerate(values)], tx.KAFKA_SCHEMA
    )
    parsed = tx.parse(kafka)
    first = parsed.where("kafka_offset = 0")
    text = T.StringType()
    moved = first.withColumn("device", F.lit(None).cast(text)).withColumn("channel", F.lit("x"))
    moved_back = first.withColumn("device", F.lit("x")).withColumn(
        "channel", F.lit(None).cast(text)
    )
    rows = [
        df.select(
            tx.content_digest().alias("digest"),
            F.xxhash64(*tx.CONTENT_FIELDS).alias("columns"),
        ).first()
        for df in (
            first,
            parsed.where("kafka_offset = 1"),
            parsed.where("kafka_offset = 2"),
            moved,
            moved_back,
        )
    ]
    digests = [r.digest for r in rows]
    assert digests[0] == digests[1]
    assert len({digests[0], *digests[2:]}) == 4
    assert rows[3].columns == rows[4].columns  # why the digest is of the JSON


def at(event_time: datetime, event_id: str) -> bytes:
    return json.dumps(purchase(event_time, event_id=event_id)).encode()


@OPERATORS
def test_the_stream_judges_event_times_against_its_batch_time(spark, tmp_path, state):
    """On a stream the contract's event-time bounds are applied by the operator, at the
    micro-batch's processing time (Spark's batch timestamp), which it also stamps as
    ``ingested_at``: one instant for every row of the batch."""
    stream = Stream(spark, tmp_path, "10 minutes", state)
    now = datetime.now(UTC)
    ahead = timedelta(seconds=contract.MAX_FUTURE_SKEW_SECONDS)
    age = timedelta(days=contract.MAX_PAST_AGE_DAYS)
    # purchase() sets event_time 30 s before the time it is given
    stream.send(
        [
            (0, 0, at(now + ahead + timedelta(minutes=5), "future")),
            (0, 1, at(now + ahead - timedelta(minutes=1), "soon")),
            (0, 2, at(now - age + timedelta(hours=1), "old")),
            (0, 3, at(now - age - timedelta(hours=1), "too-old")),
            (0, 4, at(now + ahead + timedelta(minutes=5), "future")),  # every copy dead-lettered
            (0, 5, b"{not json"),
        ]
    )
    reason = contract.ABSURD_TIMESTAMP
    assert [(r[3], r[4]) for r in stream.drain()] == [
        (0, reason),
        (1, None),
        (2, None),
        (3, reason),
        (4, reason),
        (5, "malformed_json"),
    ]
    (ingested,) = stream.ingested  # one processing time for the whole batch, dead letters too
    assert abs(ingested.replace(tzinfo=UTC) - datetime.now(UTC)) < timedelta(minutes=2)

    # A dead-lettered future event keeps no state: once its time has come, it lands.
    stream.send([(1, 0, at(now, "future"))])
    assert [(r[0], r[4]) for r in stream.drain()] == [("future", None)]


@OPERATORS
def test_a_micro_batch_compiles_no_new_code(spark, tmp_path, state):
    """Nothing batch-specific (a ``current_timestamp()`` literal, a watermark) is in the
    stream's generated code: Spark's code cache serves every batch after the first, instead of
    generating and compiling the classes again (a third of a small batch's CPU, measured)."""
    metrics = spark._jvm.org.apache.spark.metrics.source.CodegenMetrics
    stream = Stream(spark, tmp_path, "10 minutes", state)
    compiled = []
    for i in range(3):
        stream.send([(0, i, record(f"c{i}")), (0, 100 + i, b"{not json")])
        stream.drain()
        compiled.append(metrics.METRIC_COMPILATION_TIME().getCount())
    assert compiled[2] == compiled[1], compiled


UUID = "3f2b8c1e-9d4a-4b6e-a1c2-0e5f7d9b8a61"


def test_ids_as_bytes_keep_every_id_apart(spark, tmp_path):
    """The current layout keys the state by the id's bytes (a canonical UUID in 16 bytes, any
    other id tagged): ids that differ stay apart, whatever their shape, and a UUID's copies and
    conflicts are found as before."""
    ids = [
        UUID,
        UUID.upper(),  # another id: only lower-case UUIDs take 16 bytes
        UUID.replace("-", ""),
        "x" * 15,  # 1 + 15 bytes would be 16: a second tag makes it 17
        "x" * 16,
        "é" * 8,  # 16 bytes of UTF-8
        "e1",
    ]
    stream = Stream(spark, tmp_path, "10 minutes")
    stream.send([(0, i, record(event_id)) for i, event_id in enumerate(ids)])
    assert [r[0] for r in stream.drain()] == ids  # every one a first sighting
    stream.send(
        [
            (0, 10, record(UUID, sent=1)),  # a copy: dropped
            (0, 11, record(UUID, price=99.0)),  # a conflict
            (0, 12, record(UUID.upper(), sent=1)),
            (0, 13, record("x" * 15, price=99.0)),
            (0, 14, record("3f2b8c1e-9d4a-4b6e-a1c2-0e5f7d9b8a62")),  # a new UUID
        ]
    )
    assert stream.drain() == [
        (UUID, 99.0, 0, 11, CONFLICT),
        ("x" * 15, 99.0, 0, 13, CONFLICT),
        ("3f2b8c1e-9d4a-4b6e-a1c2-0e5f7d9b8a62", 10.0, 0, 14, None),
    ]
    encode = spark._jvm.rtap.spark.FirstSeen.keyBytes
    assert bytes(encode(UUID)) == bytes.fromhex(UUID.replace("-", ""))
    encoded = [bytes(encode(i)) for i in ids]
    assert len(set(encoded)) == len(ids)
    assert [len(e) for e in encoded] == [16, 37, 33, 17, 17, 17, 3]


def test_the_layouts_are_named_as_the_operator_names_them(spark):
    first_seen = spark._jvm.rtap.spark.FirstSeen
    for state in tx.DedupeState:
        assert getattr(first_seen, state.name) == state.value


def test_a_checkpoints_layout_is_read_from_its_state_metadata():
    def tws(*variables: str) -> tuple[str, str]:
        names = [{"stateName": v, "stateVariableType": "ValueState"} for v in variables]
        return tx.TRANSFORM_WITH_STATE, json.dumps({"stateVariables": names})

    timers = "$procTimers_keyToTimestamp"
    assert tx.dedupe_state_of([]) is tx.DedupeState.KEY_BYTES  # a new checkpoint
    assert tx.dedupe_state_of([tws(timers, "first_digest")]) is tx.DedupeState.STRING_KEY
    assert tx.dedupe_state_of([tws(timers, "first_digest_by_id_bytes")]) is (
        tx.DedupeState.KEY_BYTES
    )
    legacy = ("flatMapGroupsWithState", None)
    assert tx.dedupe_state_of([legacy]) is tx.DedupeState.LEGACY
    with pytest.raises(ValueError, match=r"none of the known layouts.*'other'"):
        tx.dedupe_state_of([tws(timers, "other")])
    with pytest.raises(ValueError, match="none of the known layouts"):
        tx.dedupe_state_of([(tx.TRANSFORM_WITH_STATE, None)])


@pytest.mark.parametrize(
    "old", [tx.DedupeState.LEGACY, tx.DedupeState.STRING_KEY], ids=["legacy", "string_key"]
)
def test_a_checkpoint_keeps_the_operator_that_wrote_it(spark, tmp_path, old):
    """The stream reads which deduplication state a checkpoint holds (Spark's state
    metadata): a checkpoint of an earlier layout goes on with it and its state, and a new
    checkpoint gets the current one."""
    from spark_apps.stream_events import dedupe_state

    checkpoint = str(tmp_path / "checkpoint")
    assert dedupe_state(spark, checkpoint) is tx.DedupeState.KEY_BYTES  # a new checkpoint

    earlier = Stream(spark, tmp_path, "10 minutes", state=old)
    earlier.send([(0, 0, record(UUID))])
    assert [r[0] for r in earlier.drain()] == [UUID]
    assert dedupe_state(spark, checkpoint) is old

    # A restart as the stream makes it: the layout chosen from the checkpoint, the state kept.
    restarted = Stream(spark, tmp_path, "10 minutes", state=dedupe_state(spark, checkpoint))
    restarted.send([(0, 1, record(UUID, sent=1)), (0, 2, record(UUID, price=99.0))])
    assert restarted.drain() == [(UUID, 99.0, 0, 2, CONFLICT)]

    new = Stream(spark, tmp_path / "new", "10 minutes")
    new.send([(0, 0, record(UUID))])
    new.drain()
    assert dedupe_state(spark, str(tmp_path / "new" / "checkpoint")) is tx.DedupeState.KEY_BYTES
