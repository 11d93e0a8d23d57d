"""Re-inject dead-lettered events into the events topic after a fix, once each.

Reads the dead-letter path through the file sink's metadata (committed rows only), selects by
reason prefix and detection time, and produces each record's original key and value bytes
back to ``--topic`` (idempotent producer, acks=all), with headers naming where it came from and
its digest. Every replayed record is remembered in Postgres ``dlq_replays`` by the SHA-256 of
its key and value, so running the same replay again sends nothing twice, and a record that
fails again (back in the dead letters at new coordinates) is not replayed in a loop.

Exactly once across crashes: a chunk is recorded as ``pending`` before it is produced and
``sent`` once the broker acknowledged it, and the pending rows keep the topic's end offsets
from just before the produce. A run that finds ``pending`` records (an earlier run died
between the two) reads the topic from those offsets and marks the ones whose digest header is
there as sent instead of sending them again; no clock is involved, and whatever the stream's
dedupe horizon, nothing lands twice. Records without a value (tombstones, empty values) are
counted as ``not_replayable`` and left alone: replayed, they would only be dead-lettered again.
So are second versions of an event (``conflicting_duplicate``) unless ``--reason-prefix`` names
that reason: replayed after the stream's dedupe horizon, one would land beside the first version.

Usage::

    spark-submit ... spark_apps/replay_dead_letters.py --dead-letter-path s3a://lake/dead_letter/events \\
        --bootstrap-servers 127.0.0.1:9092 --topic events --reason-prefix missing_field \\
        [--since 2026-11-25T00:00Z] [--until ...] [--dry-run true]

Writes its counts as JSON to ``--report``: selected, already replayed, replayed, not replayable,
recovered (pending records found delivered).
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from include.analytics import migrations, store
from include.endpoints import KafkaEndpoint, PostgresEndpoint
from include.events.contract import CONFLICTING_DUPLICATE
from include.events.producer import producer_config
from include.kafka import security as kafka_security
from include.spark.jobs import ReplayJob
from spark_apps.file_sinks import read_sink
from spark_apps.reports import write_report

log = logging.getLogger("replay_dead_letters")

DIGEST_HEADER = "rtap-replay-digest"
CHUNK = 5_000


def select(dead: DataFrame, reason_prefix: str, since, until) -> DataFrame:
    """The dead letters to replay, one per distinct (key, value), with their content digest."""
    rows = dead
    if reason_prefix:
        rows = rows.where(F.col("reason").startswith(reason_prefix))
    if since is not None:
        rows = rows.where(F.col("detected_at") >= F.lit(since))
    if until is not None:
        rows = rows.where(F.col("detected_at") < F.lit(until))
    # A null key or value must still digest (concat of a null is null): null and empty differ.
    digest = F.sha2(
        F.concat(
            F.coalesce(F.col("raw_key"), F.lit(b"")),
            F.when(F.col("raw_key").isNull(), F.lit(b"\x01")).otherwise(F.lit(b"\x00")),
            F.coalesce(F.col("raw_value"), F.lit(b"")),
            F.when(F.col("raw_value").isNull(), F.lit(b"\x01")).otherwise(F.lit(b"\x00")),
        ),
        256,
    )
    return (
        rows.withColumn("digest", digest)
        .dropDuplicates(["digest"])
        .select(
            "digest",
            "raw_key",
            "raw_value",
            "reason",
            "kafka_topic",
            "kafka_partition",
            "kafka_offset",
        )
    )


def is_replayable(raw_value: bytes | None, reason: str, reason_prefix: str) -> bool:
    """Whether a dead letter may go back to the topic: it has a value, and a second version of
    an event (``conflicting_duplicate``) only when the operator selected that reason by name."""
    if not raw_value:
        return False
    return reason != CONFLICTING_DUPLICATE or reason_prefix.startswith(CONFLICTING_DUPLICATE)


def replayed_digests(conn, digests: list[str]) -> dict[str, str]:
    """``digest -> state`` (``pending`` or ``sent``) of the digests already replayed."""
    with conn.cursor() as cur:
        cur.execute("SELECT digest, state FROM dlq_replays WHERE digest = ANY(%s)", (digests,))
        found = dict(cur.fetchall())
    conn.commit()
    return found


def record(
    conn, rows: list, topic: str, state: str, scan_from: dict[int, int] | None = None
) -> None:
    """Remember ``rows`` as ``pending`` (about to be produced; ``scan_from``: the topic's end
    offsets before the produce) or ``sent`` (acknowledged)."""
    from psycopg2.extras import execute_values

    offsets = json.dumps({str(p): o for p, o in scan_from.items()}) if scan_from else None
    with conn.cursor() as cur:
        execute_values(
            cur,
            "INSERT INTO dlq_replays (digest, source_topic, source_partition, source_offset, "
            "reason, replayed_to, state, scan_from) VALUES %s ON CONFLICT (digest) DO UPDATE SET "
            "state = EXCLUDED.state, replayed_at = now(), "
            "scan_from = COALESCE(EXCLUDED.scan_from, dlq_replays.scan_from)",
            [
                (
                    r.digest,
                    r.kafka_topic,
                    r.kafka_partition,
                    r.kafka_offset,
                    r.reason,
                    topic,
                    state,
                    offsets,
                )
                for r in rows
            ],
        )
    conn.commit()


def pending_scan_from(conn, digests: list[str]) -> dict[int, int]:
    """Per partition, the lowest end offset recorded before a still-pending produce."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT scan_from FROM dlq_replays WHERE digest = ANY(%s) AND state = 'pending'",
            (digests,),
        )
        rows = [r[0] for r in cur.fetchall()]
    conn.commit()
    out: dict[int, int] = {}
    for offsets in rows:
        for p, o in (offsets or {}).items():
            out[int(p)] = min(int(o), out.get(int(p), int(o)))
    return out


def _consumer(consumer_config: dict):
    from confluent_kafka import Consumer

    return Consumer(
        {**consumer_config, "group.id": "rtap-replay-check", "enable.auto.commit": False}
    )


def end_offsets(consumer_config: dict, topic: str) -> dict[int, int]:
    """The topic's log-end offset per partition."""
    from confluent_kafka import TopicPartition

    consumer = _consumer(consumer_config)
    try:
        parts = consumer.list_topics(topic, timeout=30).topics[topic].partitions
        return {
            p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1]
            for p in parts
        }
    finally:
        consumer.close()


def delivered(
    consumer_config: dict, topic: str, scan_from: dict[int, int], digests: set[str]
) -> set[str]:
    """Which of ``digests`` are in ``topic`` (by their replay header) from the offsets
    ``scan_from`` on: the records an earlier run produced but died before marking as sent."""
    from confluent_kafka import TopicPartition

    ends = end_offsets(consumer_config, topic)
    todo = [
        TopicPartition(topic, p, scan_from.get(p, 0))
        for p, end in ends.items()
        if scan_from.get(p, 0) < end
    ]
    found: set[str] = set()
    if not todo:
        return found
    consumer = _consumer(consumer_config)
    try:
        consumer.assign(todo)
        remaining = {tp.partition for tp in todo}
        while remaining:
            msg = consumer.poll(10)
            if msg is None:
                raise TimeoutError(f"reading {topic} to check pending replays timed out")
            if msg.error():
                raise RuntimeError(f"reading {topic}: {msg.error()}")
            for name, value in msg.headers() or []:
                if name == DIGEST_HEADER and value is not None and value.decode() in digests:
                    found.add(value.decode())
            if msg.offset() >= ends[msg.partition()] - 1:
                remaining.discard(msg.partition())
    finally:
        consumer.close()
    return found


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = ReplayJob.from_argv(sys.argv[1:] if argv is None else argv)
    conn = store.connect(PostgresEndpoint.from_libpq_env(), schema=args.pg_schema)
    try:
        migrations.check(conn, args.pg_schema)
    except migrations.SchemaNotReady as exc:
        log.error("%s", exc)
        return 2
    spark = SparkSession.builder.appName("replay_dead_letters").getOrCreate()
    dead = read_sink(spark, args.dead_letter_path)
    counts = {
        "selected": 0,
        "already_replayed": 0,
        "replayed": 0,
        "would_replay": 0,
        "not_replayable": 0,
        "recovered": 0,
    }
    kafka = KafkaEndpoint(args.bootstrap_servers, kafka_security.client_config(os.environ))
    client_config = kafka.client_config()
    producer = None
    if not args.dry_run:
        from confluent_kafka import Producer

        producer = Producer(producer_config(kafka.bootstrap_servers, **kafka.security))
    chunk: list = []

    def flush(rows: list) -> None:
        replayable = [r for r in rows if is_replayable(r.raw_value, r.reason, args.reason_prefix)]
        counts["not_replayable"] += len(rows) - len(replayable)
        done = replayed_digests(conn, [r.digest for r in replayable])
        pending = {d for d, state in done.items() if state == "pending"}
        if pending and not args.dry_run:
            scan_from = pending_scan_from(conn, sorted(pending))
            arrived = delivered(client_config, args.topic, scan_from, pending)
            record(conn, [r for r in replayable if r.digest in arrived], args.topic, "sent")
            counts["recovered"] += len(arrived)
            for d in pending - arrived:
                del done[d]  # never arrived: send it now
        todo = [r for r in replayable if r.digest not in done]
        counts["already_replayed"] += len(replayable) - len(todo)
        if args.dry_run:
            counts["would_replay"] += len(todo)
            return
        if not todo:
            return
        # Before producing, with where to look: a crash between here and "sent" is found next run.
        record(conn, todo, args.topic, "pending", end_offsets(client_config, args.topic))
        errors: list[str] = []
        for r in todo:
            origin = f"{r.kafka_topic}/{r.kafka_partition}/{r.kafka_offset}".encode()
            producer.produce(
                args.topic,
                key=bytes(r.raw_key) if r.raw_key is not None else None,
                value=bytes(r.raw_value),
                headers=[
                    ("rtap-replayed-from", origin),
                    ("rtap-dead-letter-reason", r.reason.encode()),
                    (DIGEST_HEADER, r.digest.encode()),
                ],
                on_delivery=lambda err, _msg: errors.append(str(err)) if err else None,
            )
            producer.poll(0)
        left = producer.flush(60)
        if left or errors:
            raise RuntimeError(f"{left} undelivered, {len(errors)} failed replays ({errors[:1]})")
        record(conn, todo, args.topic, "sent")  # the broker acknowledged them
        counts["replayed"] += len(todo)

    if dead is not None:
        for row in select(dead, args.reason_prefix, args.since, args.until).toLocalIterator():
            counts["selected"] += 1
            chunk.append(row)
            if len(chunk) >= CHUNK:
                flush(chunk)
                chunk = []
        if chunk:
            flush(chunk)
    conn.close()
    write_report(spark, args.report, "replay", {**counts, "dry_run": args.dry_run})
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
