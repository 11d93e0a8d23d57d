"""Airflow connection ids the platform uses. Only ids live in code; credentials come from
``AIRFLOW_CONN_*`` variables, a secrets backend or the metadata database.

The factories below turn a connection into an endpoint (``include/endpoints.py``) or the client
our tasks use; they run inside tasks (never at DAG parse time)."""

from __future__ import annotations

from typing import Any

from include.endpoints import PostgresEndpoint, S3Endpoint

KAFKA = "kafka_default"
SPARK = "spark_default"
S3 = "lake_s3"  # the stream's S3 user: writes raw events, dead letters, checkpoints
WAREHOUSE_S3 = "warehouse_s3"  # compaction's S3 user: reads the lake, writes the warehouse
POSTGRES = "analytics_db"


def kafka_admin() -> Any:
    from airflow.providers.apache.kafka.hooks.client import KafkaAdminClientHook

    return KafkaAdminClientHook(kafka_config_id=KAFKA).get_conn


def s3(conn_id: str = S3) -> S3Endpoint:
    """The S3 endpoint and user of an Airflow ``aws`` connection (the lake's by default)."""
    from airflow.sdk import BaseHook

    return S3Endpoint.from_connection(BaseHook.get_connection(conn_id))


def s3_client(conn_id: str = S3) -> Any:
    return s3(conn_id).client()


def postgres_endpoint(conn_id: str = POSTGRES) -> PostgresEndpoint:
    from airflow.sdk import BaseHook

    return PostgresEndpoint.from_connection(BaseHook.get_connection(conn_id))


# Supervision and maintenance tasks: a statement waiting longer than this on a lock fails the
# task (and alerts) instead of hanging it.
TASK_STATEMENT_TIMEOUT_S = 120


def postgres(schema: str) -> Any:
    """A psycopg2 connection to the analytics database, tables in ``schema``."""
    from include.analytics import store

    return store.connect(
        postgres_endpoint(), schema=schema, statement_timeout_s=TASK_STATEMENT_TIMEOUT_S
    )
