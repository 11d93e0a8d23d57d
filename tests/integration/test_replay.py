"""Replay of dead letters on the real stack: a dry run counts (tombstones and empty values as
not replayable, never a crash), a replay re-injects each selected record once (the broker's
topic grows by exactly those), and a second replay sends nothing - even though the replayed
records failed again and are back in the dead letters, and some were left pending by a run
that died between producing and recording (they are recovered from the topic: nothing is
sent twice)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient, OffsetSpec

from devstack.demo import api as airflow_api
from include import pipeline
from include.analytics import store
from include.events.generator import generate
from include.events.producer import produce, producer_config
from tests.integration.conftest import airflow_dags_run, airflow_dags_test, run_id_of
from tests.integration.lake_checks import lake_report


def topic_end(ctx, topic: str) -> int:
    admin = AdminClient({"bootstrap.servers": ctx.settings.kafka_bootstrap})
    parts = admin.list_topics(topic, timeout=10).topics[topic].partitions
    futures = admin.list_offsets({TopicPartition(topic, p): OffsetSpec.latest() for p in parts})
    return sum(f.result().offset for f in futures.values())


def replay(ctx, conf: dict) -> dict:
    """Run the replay DAG; its report, as the task returned it (XCom, through Airflow's API)."""
    state, output = airflow_dags_run(ctx, "replay_dead_letters", conf)
    assert state == "success"
    run_id = run_id_of(output, "replay_dead_letters")
    return airflow_api(ctx).task_result("replay_dead_letters", run_id, "replay")


def test_replay_reinjects_each_dead_letter_once(ctx, sandbox):
    bucket = ctx.settings.bucket
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    produce(
        generate(2_000, seed=51, start=start, bad_share=0.1),
        topic=sandbox.topic,
        bootstrap_servers=ctx.settings.kafka_bootstrap,
    )
    from confluent_kafka import Producer

    raw = Producer(producer_config(ctx.settings.kafka_bootstrap))
    raw.produce(sandbox.topic, key=b"u1", value=None)  # a tombstone
    raw.produce(sandbox.topic, key=b"u2", value=b"")  # an empty value
    assert raw.flush(30) == 0
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
        "dry_run": False,
        "topic": sandbox.topic,
        "bucket": bucket,
        "dead_letter_prefix": sandbox.dead_letter_prefix,
        "pg_schema": sandbox.pg_schema,
    }
    end = topic_end(ctx, sandbox.topic)
    # A dry run over every reason (the DAG's default) counts; the tombstone and the empty value
    # are dead letters that cannot be replayed: counted, never a crash.
    dry = replay(ctx, {**conf, "reason_prefix": "", "dry_run": True})
    # (one per distinct key and value: identical bad records are selected once)
    assert chosen < dry["selected"] <= before["dead_letter_rows"]
    assert dry["not_replayable"] == 2
    assert (dry["would_replay"], dry["replayed"]) == (dry["selected"] - 2, 0)
    assert topic_end(ctx, sandbox.topic) == end, "a dry run sends nothing"

    done = replay(ctx, conf)
    assert (done["selected"], done["replayed"]) == (chosen, chosen)
    assert topic_end(ctx, sandbox.topic) == end + chosen

    # Still invalid (nothing was fixed here): they are dead-lettered again, and not replayed again.
    assert airflow_dags_test(ctx, "stream_events", sandbox.stream_conf(bucket)) == "success"
    after = lake_report(ctx, *paths)
    assert after["dead_letter_rows"] == before["dead_letter_rows"] + chosen
    assert after["rows"] == before["rows"]
    # ... even where a replay died after the broker acknowledged its records but before it
    # recorded them as sent (half of them here): the next run finds those in the topic by
    # their digest header, records them, and sends nothing.
    half = chosen // 2 or 1
    conn = store.connect(ctx.analytics_db, schema=sandbox.pg_schema)
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE dlq_replays SET state = 'pending' WHERE digest IN "
            "(SELECT digest FROM dlq_replays WHERE scan_from IS NOT NULL ORDER BY digest LIMIT %s)",
            (half,),
        )
        assert cur.rowcount == half, "each replayed record kept where to look for it"
    conn.commit()
    again = replay(ctx, conf)
    assert (again["replayed"], again["already_replayed"], again["recovered"]) == (0, chosen, half)
    assert topic_end(ctx, sandbox.topic) == end + chosen, "nothing was sent twice"
    with conn.cursor() as cur:
        cur.execute("SELECT state, count(*) FROM dlq_replays GROUP BY state")
        assert dict(cur.fetchall()) == {"sent": chosen}
    conn.close()
