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

from include.endpoints import PostgresEndpoint, S3Endpoint

CATALOG = "lake"  # the Spark catalog name; also the catalog_name column of the JDBC tables
EVENTS_TABLE = "events"


# The options every warehouse Spark app takes (include/spark/jobs.py), as DAG templates of
# the shared params.
WAREHOUSE_TEMPLATES = {
    "warehouse": "s3a://{{ params.bucket }}/{{ params.warehouse_prefix }}",
    "namespace": "{{ params.namespace }}",
    "marts_namespace": "{{ params.marts_namespace }}",
    "pg_schema": "{{ params.pg_schema }}",
}


def spark_conf(
    warehouse: str, pg_schema: str, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """Session settings of the Iceberg catalog ``lake`` (set by the app when it builds its
    session, so the password never appears on a command line)."""
    pg = PostgresEndpoint.from_libpq_env(os.environ if env is None else env)
    prefix = f"spark.sql.catalog.{CATALOG}"
    return {
        "spark.sql.extensions": "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions",
        prefix: "org.apache.iceberg.spark.SparkCatalog",
        f"{prefix}.type": "jdbc",
        f"{prefix}.uri": pg.jdbc_url(pg_schema),
        f"{prefix}.jdbc.user": pg.user,
        f"{prefix}.jdbc.password": pg.password,
        f"{prefix}.warehouse": warehouse.rstrip("/"),
        # S3 through Hadoop's S3A, configured like every other job (endpoint, credentials).
        f"{prefix}.io-impl": "org.apache.iceberg.hadoop.HadoopFileIO",
    }


def load_pyiceberg(pg: PostgresEndpoint, pg_schema: str, warehouse: str, s3: S3Endpoint) -> Any:
    """pyiceberg's view of the same catalog, as the role of ``pg`` and the user of ``s3``.

    The catalog's tables are the migrations' (``0003_warehouse.sql``): pyiceberg is told not
    to create them (it could not with a read-only role anyway)."""
    from pyiceberg.catalog.sql import SqlCatalog

    props = {
        "uri": pg.sqlalchemy_url(pg_schema),
        "warehouse": warehouse,
        **s3.pyiceberg_properties(),
        "init_catalog_tables": "false",
    }
    return SqlCatalog(CATALOG, **props)
