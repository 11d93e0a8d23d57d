"""The scale-out path on real processes (devstack/scaleout.py): the same DAGs and apps on a
Spark standalone cluster (a master and two workers), on a three-broker KRaft Kafka with one
broker killed mid-stream, and through a SASL/SCRAM-over-TLS listener with a SCRAM user for the
stream. Only connections change; the code is the one the local stack runs."""

from __future__ import annotations

import json
import os
import secrets
import shutil
import time
from datetime import UTC, datetime, timedelta

import pytest

from devstack import process
from devstack.scaleout import KafkaCluster, SparkStandalone, scaleout_ports
from devstack.spark import submit_argv, submit_env
from include import pipeline
from include.analytics import store
from include.events.catalog import build_catalog
from include.events.generator import generate
from include.events.producer import produce
from tests.integration.conftest import airflow_dags_run, airflow_dags_test, spawn, stop_group
from tests.integration.lake_checks import (
    assert_sales_match,
    lake_report,
    postgres_sales,
    query,
    reconcile_sandbox,
)

# Yesterday (UTC): a whole day the compaction can take, within the contract's 7 days.
DAY = (datetime.now(UTC) - timedelta(days=1)).date().isoformat()


@pytest.fixture(scope="module")
def spark_cluster(ctx):
    cluster = SparkStandalone(ctx, scaleout_ports(os.environ), workers=2, cores=1)
    cluster.stop()  # leftovers of an interrupted run
    cluster.start()
    try:
        cluster.wait_healthy()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def kafka_cluster(ctx):
    cluster = KafkaCluster(ctx, scaleout_ports(os.environ), brokers=3)
    cluster.stop()
    shutil.rmtree(cluster.dir, ignore_errors=True)  # a fresh cluster every run
    cluster.start()
    try:
        cluster.wait_healthy()
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.dir, ignore_errors=True)


def seed_catalog(ctx, pg_schema: str) -> None:
    conn = store.connect(ctx.analytics_db, schema=pg_schema)
    store.publish_catalog(conn, build_catalog())
    conn.close()


def record(ctx, pg_schema: str, run) -> None:
    conn = store.connect(ctx.analytics_db, schema=pg_schema)
    store.record_run(conn, run)  # what the reconciliation accounts for
    conn.close()


def lake(ctx, sandbox) -> dict:
    b = ctx.settings.bucket
    return lake_report(
        ctx,
        pipeline.s3a(b, sandbox.lake_prefix),
        pipeline.s3a(b, sandbox.dead_letter_prefix),
    )


def create_topic(bootstrap: str, topic: str, replicas: int, config: dict | None = None) -> None:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    new = NewTopic(topic, num_partitions=3, replication_factor=replicas, config=config or {})
    admin.create_topics([new])[topic].result(30)


def test_stream_and_compaction_run_on_a_spark_standalone_cluster(ctx, sandbox, spark_cluster):
    start = datetime.fromisoformat(f"{DAY}T10:00:00+00:00")
    batch = generate(3_000, seed=808, start=start, bad_share=0.03, duplicate_share=0.02)
    run = produce(batch, topic=sandbox.topic, bootstrap_servers=ctx.settings.kafka_bootstrap)
    seed_catalog(ctx, sandbox.pg_schema)
    # The only difference from the local stack: the spark_default connection, whose password
    # is the cluster's shared secret (spark.authenticate: a driver without it is refused).
    spark_conn = {
        "AIRFLOW_CONN_SPARK_DEFAULT": json.dumps(
            {
                "conn_type": "spark",
                "host": spark_cluster.master_url,
                "password": spark_cluster.secret,
                "extra": {"deploy-mode": "client", "spark-binary": "spark-submit"},
            }
        )
    }
    b = ctx.settings.bucket
    conf = sandbox.stream_conf(b)
    assert airflow_dags_test(ctx, "stream_events", conf, env=spark_conn) == "success"

    report = lake(ctx, sandbox)
    assert report["rows"] == report["distinct_ids"] == run.valid
    assert report["purchases"] == run.purchases and abs(report["revenue"] - run.revenue) < 0.01
    assert report["dead_letter_rows"] == sum(
        n for k, n in run.by_kind.items() if k not in ("valid", "irrelevant", "duplicate")
    )
    assert_sales_match(postgres_sales(ctx, sandbox.pg_schema), batch)

    warehouse_prefix = f"{sandbox.prefix}/warehouse"
    compaction = {
        "bucket": b,
        "lake_prefix": sandbox.lake_prefix,
        "warehouse_prefix": warehouse_prefix,
        "pg_schema": sandbox.pg_schema,
        "day": DAY,
    }
    assert airflow_dags_test(ctx, "compact_warehouse", compaction, env=spark_conn) == "success"
    status, rows = query(
        ctx, sandbox.pg_schema, "SELECT status, rows FROM compaction_runs WHERE day = %s", (DAY,)
    )[0]
    assert (status, rows) == ("verified", run.valid)

    # Both apps ran on the cluster, with executors on both workers.
    apps = {a["id"]: a["name"] for a in spark_cluster.state()["completedapps"]}
    stream_ids = {i for i, name in apps.items() if name == "stream_events"}
    compact_ids = {i for i, name in apps.items() if name == f"compact_events {DAY}"}
    assert stream_ids and compact_ids, apps
    for worker in (1, 2):
        ran = {e["appid"] for e in spark_cluster.worker_state(worker)["finishedexecutors"]}
        assert ran & stream_ids and ran & compact_ids, (worker, ran, apps)

    # Master, workers and their web UIs listen on loopback only; each authenticates its RPC
    # peers, with the secret from its private properties file, not its command line.
    for name in spark_cluster.procs():
        proc = process.find(ctx.pid_file(name))
        assert proc is not None, name
        log = ctx.log_file(name).read_text()
        assert "authentication enabled" in log, (name, log[-2000:])
        assert spark_cluster.secret not in " ".join(proc.cmdline()), name
        assert oct(spark_cluster.auth_file.stat().st_mode & 0o777) == "0o600"
        listening = {
            c.laddr.ip.removeprefix("::ffff:")  # IPv4-mapped on a dual-stack socket
            for c in proc.net_connections(kind="inet")
            if c.status == "LISTEN"
        }
        assert listening == {"127.0.0.1"}, (name, listening)


def test_three_brokers_one_killed_mid_stream_loses_nothing(ctx, sandbox, kafka_cluster):
    topic = sandbox.topic
    create_topic(kafka_cluster.bootstrap, topic, 3, {"min.insync.replicas": "2"})
    seed_catalog(ctx, sandbox.pg_schema)
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    batches = [
        generate(4_000, seed=seed, start=start + timedelta(seconds=i), bad_share=0.02)
        for i, seed in enumerate((901, 902, 903))
    ]
    job = sandbox.stream_job(
        ctx, mode="continuous", trigger="2 seconds", max_offsets_per_trigger=2000
    ).replace(bootstrap_servers=kafka_cluster.bootstrap)
    driver = spawn(
        ctx,
        submit_argv(ctx, job),
        submit_env(ctx, job),
        f"3brokers-{sandbox.id}.log",
    )
    runs = []

    def send(events) -> None:
        run = produce(events, topic=topic, bootstrap_servers=kafka_cluster.bootstrap)
        record(ctx, sandbox.pg_schema, run)
        runs.append(run)

    def read_by_stream(total: int, timeout: float = 300) -> None:
        deadline = time.monotonic() + timeout
        while True:
            rows = query(
                ctx,
                sandbox.pg_schema,
                "SELECT query_name, sum(input_rows) FROM stream_progress GROUP BY query_name",
            )
            got = min([n for _, n in rows if n is not None] or [0]) if rows else 0
            if got >= total:  # the stream's query read it
                return
            assert driver.poll() is None, "the stream exited; see its log"
            assert time.monotonic() < deadline, f"the stream read {got} of {total} events"
            time.sleep(1)

    try:
        send(batches[0])
        read_by_stream(len(batches[0]))
        # Crash the broker that leads partition 0 (a SIGKILL, no controlled shutdown).
        victim = kafka_cluster.admin().list_topics(topic, timeout=10).topics[topic].partitions[0]
        kafka_cluster.kill_node(victim.leader)
        send(batches[1])  # acks=all with 2 of 3 replicas in sync: accepted
        read_by_stream(len(batches[0]) + len(batches[1]))
        kafka_cluster.start_node(victim.leader)
        send(batches[2])
        read_by_stream(sum(len(x) for x in batches))
    finally:
        stop_group(driver)

    def replicas_in_sync() -> bool:
        md = kafka_cluster.admin().list_topics(topic, timeout=10).topics[topic]
        return all(len(p.isrs) == 3 for p in md.partitions.values())

    deadline = time.monotonic() + 120
    while not replicas_in_sync():
        assert time.monotonic() < deadline, "the restarted broker did not rejoin the ISR"
        time.sleep(1)

    valid = sum(r.valid for r in runs)
    final = lake(ctx, sandbox)
    assert final["rows"] == final["distinct_ids"] == valid
    assert final["purchases"] == sum(r.purchases for r in runs)
    assert_sales_match(postgres_sales(ctx, sandbox.pg_schema), [e for b in batches for e in b])
    report = reconcile_sandbox(ctx, sandbox, start, topic=topic)
    assert report["ok"], report["problems"]
    assert (report["produced"], report["landed"], report["missing"]) == (
        sum(r.events for r in runs),
        valid,
        0,
    )


def test_stream_through_a_sasl_scram_tls_listener(ctx, sandbox, kafka_cluster):
    from confluent_kafka import KafkaError, KafkaException, Producer
    from confluent_kafka.admin import AdminClient

    user, password = "rtap-stream", secrets.token_urlsafe(24)
    kafka_cluster.add_scram_user(user, password)
    client = kafka_cluster.client_config(user, password)
    topic = sandbox.topic
    create_topic(kafka_cluster.bootstrap, topic, 3)
    seed_catalog(ctx, sandbox.pg_schema)

    # A wrong password is refused by the listener.
    errors: list = []
    wrong = Producer(
        {**client, "sasl.password": "not-it", "log_level": 0, "error_cb": errors.append}
    )
    deadline = time.monotonic() + 30
    while not any(e.code() == KafkaError._AUTHENTICATION for e in errors):
        assert time.monotonic() < deadline, f"no authentication error: {errors}"
        wrong.poll(1)
    with pytest.raises(KafkaException):
        AdminClient({**client, "sasl.password": "not-it", "log_level": 0}).list_topics(timeout=10)

    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    events = generate(2_000, seed=909, start=start, bad_share=0.02)
    run = produce(events, topic=topic, config=client)  # the producer over SCRAM + TLS too
    # Airflow's kafka_default holds the SCRAM client settings: the preflight and retention
    # checks use them as they are; the operator hands them to the stream's Kafka source.
    kafka_conn = {"AIRFLOW_CONN_KAFKA_DEFAULT": json.dumps({"conn_type": "kafka", "extra": client})}
    state, output = airflow_dags_run(
        ctx, "stream_events", sandbox.stream_conf(ctx.settings.bucket), env=kafka_conn
    )
    assert state == "success", output[-3000:]
    assert password not in output, "the SCRAM password is not in the task's log"
    report = lake(ctx, sandbox)
    assert report["rows"] == report["distinct_ids"] == run.valid
    assert report["purchases"] == run.purchases
