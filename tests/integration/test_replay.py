"""Replay of dead letters on the real stack: a dry run counts, a replay re-injects each selected
record once (the broker's topic grows by exactly those), and a second replay sends nothing -
even though the replayed records failed again and are back in the dead letters."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from devstack.spark import lake_report
from include import pipeline
from include.events.generator import generate
from include.events.producer import produce
from tests.integration.conftest import airflow_dags_run, airflow_dags_test


def topic_end(ctx, topic: str) -> int:
    admin = AdminClient({"bootstrap.servers": ctx.settings.kafka_bootstrap})
    parts = admin.list_topics(topic, timeout=10).topics[topic].partitions
    futures = admin.list_offsets({TopicPartition(topic, p): OffsetSpec.latest() for p in parts})
    return sum(f.result().offset for f in futures.values())


def replay(ctx, conf: dict) -> dict:
    state, output = airflow_dags_run(ctx, "replay_dead_letters", conf)
    assert state == "success"
    found = re.findall(r"REPLAY (\{.*?\})", output)
    assert found, "the replay printed no REPLAY line"
    return json.loads(found[-1])


def test_replay_reinjects_each_dead_letter_once(ctx, sandbox):
    bucket = ctx.settings.bucket
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    produce(
        generate(2_000, seed=51, start=start, bad_share=0.1),
        topic=sandbox.topic,
        bootstrap_servers=ctx.settings.kafka_bootstrap,
    )
    assert airflow_dags_test(ctx, "stream_events", sandbox.stream_conf(bucket)) == "success"
    paths = (
        pipeline.s3a(bucket, sandbox.lake_prefix),
        pipeline.s3a(bucket, sandbox.dead_letter_prefix),
    )
    before = lake_report(ctx, *paths)
    chosen = sum(
        n
        for reason, n in before["dead_letter_reasons"].items()
        if reason.startswith("missing_field")
    )
    assert chosen > 0

    conf = {
        "reason_prefix": "missing_field",
        "dry_run": True,
        "topic": sandbox.topic,
        "bucket": bucket,
        "dead_letter_prefix": sandbox.dead_letter_prefix,
        "pg_schema": sandbox.pg_schema,
    }
    end = topic_end(ctx, sandbox.topic)
    dry = replay(ctx, conf)
    assert (dry["selected"], dry["would_replay"], dry["replayed"]) == (chosen, chosen, 0)
    assert topic_end(ctx, sandbox.topic) == end, "a dry run sends nothing"

    done = replay(ctx, {**conf, "dry_run": False})
    assert (done["selected"], done["replayed"]) == (chosen, chosen)
    assert topic_end(ctx, sandbox.topic) == end + chosen

    # Still invalid (nothing was fixed here): they are dead-lettered again, and not replayed again.
    assert airflow_dags_test(ctx, "stream_events", sandbox.stream_conf(bucket)) == "success"
    after = lake_report(ctx, *paths)
    assert after["dead_letter_rows"] == before["dead_letter_rows"] + chosen
    assert after["rows"] == before["rows"]
    again = replay(ctx, {**conf, "dry_run": False})
    assert (again["replayed"], again["already_replayed"]) == (0, chosen)
    assert topic_end(ctx, sandbox.topic) == end + chosen
