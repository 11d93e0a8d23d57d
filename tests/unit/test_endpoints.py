"""include/endpoints.py: each endpoint built once, rendered for every client; no password in a
repr or a message; and nothing else in the project assembles one from parts."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest

from include.endpoints import (
    DEFAULT_REGION,
    KafkaEndpoint,
    PostgresEndpoint,
    S3Endpoint,
    airflow_connection_env,
)
from tests.conftest import ROOT

PG = PostgresEndpoint("db", 5433, "analytics", "rtap", "p@ss:/word")
S3 = S3Endpoint("http://127.0.0.1:9000", "AKIA-test", "s3cret-key-value")


def airflow_conn(body: dict) -> SimpleNamespace:
    """What Airflow hands a task for an ``AIRFLOW_CONN_*`` JSON body."""
    return SimpleNamespace(
        host=body.get("host"),
        port=body.get("port"),
        login=body.get("login"),
        password=body.get("password"),
        schema=body.get("schema"),
        extra_dejson=body.get("extra", {}),
    )


def test_postgres_renderings():
    assert PG.psycopg2_kwargs() == {
        "host": "db",
        "port": 5433,
        "dbname": "analytics",
        "user": "rtap",
        "password": "p@ss:/word",
    }
    assert PG.libpq_env() == {
        "PGHOST": "db",
        "PGPORT": "5433",
        "PGDATABASE": "analytics",
        "PGUSER": "rtap",
        "PGPASSWORD": "p@ss:/word",
    }
    assert PG.jdbc_url("it_1") == "jdbc:postgresql://db:5433/analytics?currentSchema=it_1"
    # The password is quoted: '@', ':' and '/' do not break the URL.
    url = PG.sqlalchemy_url("it_1")
    assert url.startswith("postgresql+psycopg2://rtap:p%40ss%3A%2Fword@db:5433/analytics?")
    assert "search_path%3Dit_1" in url or "search_path=it_1" in url
    with pytest.raises(ValueError, match="plain identifier"):
        PG.jdbc_url("x; drop")


def test_postgres_round_trips_through_airflow_and_libpq():
    assert PostgresEndpoint.from_connection(airflow_conn(PG.airflow_connection())) == PG
    assert PostgresEndpoint.from_libpq_env(PG.libpq_env()) == PG
    # libpq's defaults where the environment says nothing
    assert PostgresEndpoint.from_libpq_env({}) == PostgresEndpoint()


def test_s3_renderings():
    assert S3.aws_env() == {
        "AWS_ACCESS_KEY_ID": "AKIA-test",
        "AWS_SECRET_ACCESS_KEY": "s3cret-key-value",
        "AWS_REGION": DEFAULT_REGION,
    }
    conf = S3.s3a_conf()
    assert conf == {
        "spark.hadoop.fs.s3a.endpoint.region": DEFAULT_REGION,
        "spark.hadoop.fs.s3a.endpoint": "http://127.0.0.1:9000",
        "spark.hadoop.fs.s3a.connection.ssl.enabled": "false",
    }, "no credential in spark-submit's settings"
    assert S3.hadoop_credentials()["fs.s3a.secret.key"] == "s3cret-key-value"
    aws = S3Endpoint(region="eu-west-1").s3a_conf()
    assert aws == {"spark.hadoop.fs.s3a.endpoint.region": "eu-west-1"}
    props = S3.pyiceberg_properties()
    assert props["s3.endpoint"] == "http://127.0.0.1:9000"
    assert props["s3.force-virtual-addressing"] == "false"
    assert props["s3.secret-access-key"] == "s3cret-key-value"
    assert S3Endpoint.from_connection(airflow_conn(S3.airflow_connection())) == S3


def test_s3_client_and_filesystem_point_at_the_endpoint():
    client = S3.client()
    assert client.meta.endpoint_url == "http://127.0.0.1:9000"
    assert client.meta.region_name == DEFAULT_REGION
    assert client.meta.config.s3["addressing_style"] == "path"
    fs = S3.pyarrow_filesystem()
    assert fs.region == DEFAULT_REGION
    # Without keys (an instance profile, IRSA): AWS's default chain, not empty credentials.
    aws = S3Endpoint(region="eu-west-1").pyarrow_filesystem()
    assert aws.region == "eu-west-1" and aws.__reduce__()[1][0]["access_key"] is None
    assert S3.pyarrow_filesystem().__reduce__()[1][0]["access_key"] == S3.access_key


def test_kafka_renderings():
    kafka = KafkaEndpoint(
        "b1:9092,b2:9092", {"security.protocol": "SASL_SSL", "sasl.password": "x"}
    )
    body = kafka.airflow_connection()
    assert body["extra"]["bootstrap.servers"] == "b1:9092,b2:9092"
    assert KafkaEndpoint.from_connection(airflow_conn(body)) == kafka
    assert kafka.client_config(**{"group.id": "g"})["group.id"] == "g"


def test_no_secret_in_a_repr_or_a_message():
    kafka = KafkaEndpoint("b:9092", {"sasl.password": "kafka-secret"})
    for endpoint, secret in ((PG, "p@ss"), (S3, "s3cret"), (kafka, "kafka-secret")):
        assert secret not in repr(endpoint)
    assert PG.where == "db:5433/analytics"


def test_airflow_connection_env():
    env = airflow_connection_env({"analytics_db": PG.airflow_connection()})
    assert json.loads(env["AIRFLOW_CONN_ANALYTICS_DB"])["schema"] == "analytics"


# Renderings of an endpoint that only include/endpoints.py may write (issue: "no credential or
# endpoint is assembled outside the endpoint module"). Compose's YAML and the shell scripts are
# configuration for other processes, not Python clients.
ASSEMBLED = {
    "a JDBC URL": re.compile(r"jdbc:postgresql://"),
    "an SQLAlchemy URL": re.compile(r"postgresql\+psycopg2://"),
    "a boto3 client": re.compile(r"boto3\.client\(\s*[\"']s3"),
    "a pyarrow S3 filesystem": re.compile(r"S3FileSystem\("),
    "libpq variables": re.compile(r"[\"']PGPASSWORD[\"']\s*:"),
    "AWS variables": re.compile(r"[\"']AWS_SECRET_ACCESS_KEY[\"']\s*:|AWS_SECRET_ACCESS_KEY="),
    "psycopg2 keywords": re.compile(r"psycopg2\.connect\([^)]*password="),
    "s3a keys": re.compile(r"fs\.s3a\.(access|secret)\.key[\"']\s*:"),
    "the default region": re.compile(r"[\"']us-east-1[\"']"),
}
SOURCES = ("include", "dags", "plugins", "spark_apps", "devstack", "dashboard", "bench")


def test_no_endpoint_is_assembled_outside_the_endpoint_module():
    found = []
    for top in SOURCES:
        for path in sorted((ROOT / top).rglob("*.py")):
            if path == ROOT / "include" / "endpoints.py":
                continue
            text = path.read_text()
            found += [
                f"{path.relative_to(ROOT)}: {what}"
                for what, pattern in ASSEMBLED.items()
                if pattern.search(text)
            ]
    assert not found, found
