"""Airflow connection ids the platform uses. Only ids live in code; credentials come from
``AIRFLOW_CONN_*`` variables, a secrets backend or the metadata database.

The factories below turn a connection into the client our tasks use; they run inside tasks
(never at DAG parse time)."""

from __future__ import annotations

from typing import Any

KAFKA = "kafka_default"
SPARK = "spark_default"
S3 = "lake_s3"  # the stream's S3 user: writes raw events, dead letters, checkpoints
WAREHOUSE_S3 = "warehouse_s3"  # compaction's S3 user: reads the lake, writes the warehouse
POSTGRES = "analytics_db"


def kafka_admin() -> Any:
    from airflow.providers.apache.kafka.hooks.client import KafkaAdminClientHook

    return KafkaAdminClientHook(kafka_config_id=KAFKA).get_conn


def s3_settings() -> dict[str, str]:
    """endpoint_url, access_key, secret_key, region of the lake's S3 connection."""
    from airflow.sdk import BaseHook

    conn = BaseHook.get_connection(S3)
    extra = conn.extra_dejson
    return {
        "endpoint_url": extra.get("endpoint_url") or "",
        "access_key": conn.login or "",
        "secret_key": conn.password or "",
        "region": extra.get("region_name", "us-east-1"),
    }


def s3_client() -> Any:
    from include.lake.s3 import s3_client as client

    s = s3_settings()
    return client(
        endpoint_url=s["endpoint_url"] or None,
        access_key=s["access_key"],
        secret_key=s["secret_key"],
        region=s["region"],
    )


def postgres_params() -> dict[str, Any]:
    from airflow.sdk import BaseHook

    from include.analytics import store

    return store.params_from_connection(BaseHook.get_connection(POSTGRES))


# Supervision and maintenance tasks: a statement waiting longer than this on a lock fails the
# task (and alerts) instead of hanging it.
TASK_STATEMENT_TIMEOUT_S = 120


def postgres(schema: str) -> Any:
    """A psycopg2 connection to the analytics database, tables in ``schema``."""
    from include.analytics import store

    return store.connect(
        postgres_params(), schema=schema, statement_timeout_s=TASK_STATEMENT_TIMEOUT_S
    )
