"""Re-inject dead-lettered events into the events topic after a fix, once each.

Reads the dead-letter path through the file sink's metadata (committed rows only), selects by
reason prefix and detection time, and produces each record's original key and value bytes
back to ``--topic`` (idempotent producer, acks=all), with a header naming where it came from.
Every replayed record is remembered in Postgres ``dlq_replays`` by the SHA-256 of its key and
value, so running the same replay again sends nothing twice, and a record that fails again
(back in the dead letters at new coordinates) is not replayed in a loop.

Usage::

    spark-submit ... spark_apps/replay_dead_letters.py --dead-letter-path s3a://lake/dead_letter/events \\
        --bootstrap-servers 127.0.0.1:9092 --topic events --reason-prefix missing_field \\
        [--since 2026-11-25T00:00Z] [--until ...] [--dry-run true]

Prints one line ``REPLAY {json}``: selected, already replayed, replayed. A crash between a
produce and its record may send a chunk again on the next run; the stream's deduplication
(by event id, 10 minutes of ingestion time) drops such copies.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Sequence
from datetime import datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from include.analytics import store
from include.events.producer import producer_config
from include.kafka import security as kafka_security
from spark_apps.lake_report import read_sink

log = logging.getLogger("replay_dead_letters")

DDL = """
CREATE TABLE IF NOT EXISTS dlq_replays (
    digest            text PRIMARY KEY,
    source_topic      text NOT NULL,
    source_partition  integer NOT NULL,
    source_offset     bigint NOT NULL,
    reason            text NOT NULL,
    replayed_to       text NOT NULL,
    replayed_at       timestamptz NOT NULL DEFAULT now()
);
"""
CHUNK = 5_000


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="replay_dead_letters", description=__doc__.splitlines()[0])
    p.add_argument("--dead-letter-path", required=True)
    p.add_argument("--bootstrap-servers", required=True)
    p.add_argument("--topic", required=True, help="where to re-inject (the events topic)")
    p.add_argument("--reason-prefix", default="", help="only reasons starting with this")
    p.add_argument("--since", default=None, help="ISO time: dead-lettered at or after")
    p.add_argument("--until", default=None, help="ISO time: dead-lettered before")
    p.add_argument("--pg-schema", default="public")
    p.add_argument(
        "--dry-run", choices=("true", "false"), default="false", help="count what would be replayed"
    )
    args = p.parse_args(list(argv))
    args.dry_run = args.dry_run == "true"
    for name in ("since", "until"):
        value = getattr(args, name) or None  # an empty value (from a template) means no bound
        setattr(args, name, value)
        if value:
            try:
                setattr(args, name, datetime.fromisoformat(value.replace("Z", "+00:00")))
            except ValueError:
                p.error(f"--{name}={value!r}: expected an ISO time, e.g. 2026-11-25T00:00Z")
    return args


def select(dead: DataFrame, reason_prefix: str, since, until) -> DataFrame:
    """The dead letters to replay, one per distinct (key, value), with their content digest."""
    rows = dead
    if reason_prefix:
        rows = rows.where(F.col("reason").startswith(reason_prefix))
    if since is not None:
        rows = rows.where(F.col("detected_at") >= F.lit(since))
    if until is not None:
        rows = rows.where(F.col("detected_at") < F.lit(until))
    digest = F.sha2(
        F.concat(F.coalesce(F.col("raw_key"), F.lit(b"")), F.lit(b"\x00"), "raw_value"), 256
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


def replayed_digests(conn, digests: list[str]) -> set[str]:
    with conn.cursor() as cur:
        cur.execute("SELECT digest FROM dlq_replays WHERE digest = ANY(%s)", (digests,))
        found = {r[0] for r in cur.fetchall()}
    conn.commit()
    return found


def record(conn, rows: list, topic: str) -> None:
    from psycopg2.extras import execute_values

    with conn.cursor() as cur:
        execute_values(
            cur,
            "INSERT INTO dlq_replays (digest, source_topic, source_partition, source_offset, "
            "reason, replayed_to) VALUES %s ON CONFLICT (digest) DO NOTHING",
            [
                (r.digest, r.kafka_topic, r.kafka_partition, r.kafka_offset, r.reason, topic)
                for r in rows
            ],
        )
    conn.commit()


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = parse_args(sys.argv[1:] if argv is None else argv)
    conn = store.connect({}, schema=args.pg_schema)
    with conn.cursor() as cur:
        cur.execute(DDL)
    conn.commit()
    spark = SparkSession.builder.appName("replay_dead_letters").getOrCreate()
    dead = read_sink(spark, args.dead_letter_path)
    counts = {"selected": 0, "already_replayed": 0, "replayed": 0, "would_replay": 0}
    producer = None
    if not args.dry_run:
        from confluent_kafka import Producer

        producer = Producer(
            producer_config(args.bootstrap_servers, **kafka_security.client_config(os.environ))
        )
    chunk: list = []

    def flush(rows: list) -> None:
        done = replayed_digests(conn, [r.digest for r in rows])
        todo = [r for r in rows if r.digest not in done]
        counts["already_replayed"] += len(rows) - len(todo)
        if args.dry_run:
            counts["would_replay"] += len(todo)
            return
        if not todo:
            return
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
                ],
                on_delivery=lambda err, _msg: errors.append(str(err)) if err else None,
            )
            producer.poll(0)
        left = producer.flush(60)
        if left or errors:
            raise RuntimeError(f"{left} undelivered, {len(errors)} failed replays ({errors[:1]})")
        record(conn, todo, args.topic)  # only after the broker acknowledged them
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
    spark.stop()
    log.info("replay: %s", counts)
    print("REPLAY " + json.dumps({**counts, "dry_run": args.dry_run}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
