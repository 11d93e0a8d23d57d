"""Each service of the stack answers and does its job (no fakes)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
import uuid

import pytest
from confluent_kafka import Consumer

from devstack import environment
from devstack.airflow_api import AirflowApi, AirflowApiError
from include.analytics import store
from include.events import contract
from include.events.generator import generate
from include.events.producer import produce
from tests.integration.conftest import pg_params, s3


def test_kafka_round_trip_keeps_every_event_and_key(ctx, sandbox):
    events = generate(2_000, seed=11)
    record = produce(events, topic=sandbox.topic, bootstrap_servers=ctx.settings.kafka_bootstrap)
    assert record.events == 2_000 and sum(record.by_partition.values()) == 2_000
    consumer = Consumer(
        {
            "bootstrap.servers": ctx.settings.kafka_bootstrap,
            "group.id": f"it-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([sandbox.topic])
    seen = {}
    try:
        for _ in range(200):
            for msg in consumer.consume(1000, timeout=1.0):
                assert msg.error() is None
                body = json.loads(msg.value())
                assert msg.key().decode() == body["user_id"]
                seen[body["event_id"]] = body
            if len(seen) >= 2_000:
                break
    finally:
        consumer.close()
    assert set(seen) == {e.event_id for e in events}
    for body in seen.values():
        missing = set(contract.required_fields(contract.EventType(body["event_type"]))) - set(body)
        assert not missing


def test_s3_server_stores_and_lists_objects(ctx, sandbox):
    client = s3(ctx)
    key = f"{sandbox.prefix}/hello.txt"
    client.put_object(Bucket=ctx.settings.bucket, Key=key, Body=b"hello")
    assert client.get_object(Bucket=ctx.settings.bucket, Key=key)["Body"].read() == b"hello"


def test_postgres_databases_and_roles(ctx):
    conn = store.connect(pg_params(ctx))
    with conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database ORDER BY 1")
        dbs = {r[0] for r in cur.fetchall()}
    conn.close()
    assert {environment.AIRFLOW_DB, environment.ANALYTICS_DB} <= dbs


def test_airflow_login_works_and_wrong_password_is_refused(ctx):
    api = AirflowApi(
        ctx.settings.airflow_url, environment.AIRFLOW_ADMIN_USER, ctx.secrets.airflow_admin_password
    )
    api.login()
    assert {"kafka_topics", "stream_events"} <= {
        d["dag_id"] for d in api.get("/api/v2/dags")["dags"]
    }
    with pytest.raises(AirflowApiError, match="HTTP 401"):
        AirflowApi(
            ctx.settings.airflow_url, environment.AIRFLOW_ADMIN_USER, "wrong-password"
        ).login()
    with urllib.request.urlopen(
        ctx.settings.airflow_url + "/api/v2/monitor/health", timeout=10
    ) as resp:
        health = json.loads(resp.read())
    assert health["scheduler"]["status"] == "healthy"
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(ctx.settings.airflow_url + "/api/v2/dags", timeout=10)
