"""One Iceberg catalog for Spark and Python: Iceberg's JDBC catalog on the analytics Postgres.

Spark uses ``org.apache.iceberg.jdbc.JdbcCatalog`` (in the Iceberg Spark runtime jar); Python
readers (tests, dashboard) use pyiceberg's ``SqlCatalog``, which reads and writes the same two
tables (``iceberg_tables``, ``iceberg_namespace_properties``), so both see every commit with no
JVM on the Python side and no extra catalog service to run. The catalog tables live in the
analytics database, in the Postgres schema the pipeline uses (``pg_schema``), so a test's
sandbox has its own catalog. Table data and metadata live under the warehouse location in S3.

Credentials come from the environment only (libpq's ``PG*`` for the catalog database,
``AWS_*`` for S3), set by the Airflow operator from the connections.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

CATALOG = "lake"  # the Spark catalog name; also the catalog_name column of the JDBC tables
EVENTS_TABLE = "events"
SALES_MART = "daily_sales_by_category"
FUNNEL_MART = "daily_funnel"


# The options every warehouse Spark app takes (include/spark/jobs.py), as DAG templates of
# the shared params.
WAREHOUSE_TEMPLATES = {
    "warehouse": "s3a://{{ params.bucket }}/{{ params.warehouse_prefix }}",
    "namespace": "{{ params.namespace }}",
    "marts_namespace": "{{ params.marts_namespace }}",
    "pg_schema": "{{ params.pg_schema }}",
}


def jdbc_url(env: Mapping[str, str], pg_schema: str) -> str:
    if not pg_schema.isidentifier():
        raise ValueError(f"pg_schema {pg_schema!r} is not a plain identifier")
    return (
        f"jdbc:postgresql://{env.get('PGHOST', '127.0.0.1')}:{env.get('PGPORT', '5432')}/"
        f"{env.get('PGDATABASE', 'postgres')}?currentSchema={pg_schema}"
    )


def spark_conf(
    warehouse: str, pg_schema: str, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Session settings of the Iceberg catalog ``lake`` (set by the app when it builds its
    session, so the password never appears on a command line)."""
    env = os.environ if env is None else env
    prefix = f"spark.sql.catalog.{CATALOG}"
    return {
        "spark.sql.extensions": "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
        prefix: "org.apache.iceberg.spark.SparkCatalog",
        f"{prefix}.type": "jdbc",
        f"{prefix}.uri": jdbc_url(env, pg_schema),
        f"{prefix}.jdbc.user": env.get("PGUSER", ""),
        f"{prefix}.jdbc.password": env.get("PGPASSWORD", ""),
        f"{prefix}.warehouse": warehouse.rstrip("/"),
        # S3 through Hadoop's S3A, configured like every other job (endpoint, credentials).
        f"{prefix}.io-impl": "org.apache.iceberg.hadoop.HadoopFileIO",
    }


def load_pyiceberg(
    pg: Mapping[str, Any],
    pg_schema: str,
    warehouse: str,
    s3: Mapping[str, str],
) -> Any:
    """pyiceberg's view of the same catalog.

    ``pg``: host, port, user, password, dbname; ``s3``: endpoint_url, access_key, secret_key,
    region. The catalog's tables are the migrations' (``0003_warehouse.sql``): pyiceberg is
    told not to create them (it could not with a read-only role anyway)."""
    from pyiceberg.catalog.sql import SqlCatalog
    from sqlalchemy import URL

    if not pg_schema.isidentifier():
        raise ValueError(f"pg_schema {pg_schema!r} is not a plain identifier")
    uri = URL.create(
        "postgresql+psycopg2",
        username=pg.get("user"),
        password=pg.get("password"),
        host=pg.get("host"),
        port=int(pg.get("port") or 5432),
        database=pg.get("dbname"),
        query={"options": f"-csearch_path={pg_schema}"},
    )
    props = {
        "uri": uri.render_as_string(hide_password=False),
        "warehouse": warehouse,
        "s3.access-key-id": s3.get("access_key", ""),
        "s3.secret-access-key": s3.get("secret_key", ""),
        "s3.region": s3.get("region", "us-east-1"),
        "init_catalog_tables": "false",
    }
    if s3.get("endpoint_url"):
        props["s3.endpoint"] = s3["endpoint_url"]
        props["s3.force-virtual-addressing"] = "false"
    return SqlCatalog(CATALOG, **props)
