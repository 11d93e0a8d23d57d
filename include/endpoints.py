"""Where the platform's services are and who a process is to them: one typed object per
endpoint and role, and every rendering a client needs.

A process gets an endpoint once (from an Airflow connection, the libpq / AWS environment a
Spark driver is started with, the dashboard's settings, or devstack's settings and secrets) and
hands it on; nothing else assembles a connection string, a libpq environment, a JDBC URL, an
s3a setting or pyiceberg's properties from parts. The renderings:

==============  ================================================================================
Postgres        psycopg2 keyword arguments, libpq's ``PG*`` environment, a JDBC URL, an SQLAlchemy
                URL, an Airflow connection
S3              a boto3 client, the ``AWS_*`` environment, Spark's ``fs.s3a`` settings, Hadoop
                credentials for a running session, pyiceberg's properties, a pyarrow
                filesystem, an Airflow connection
Kafka           a librdkafka client config, an Airflow connection
==============  ================================================================================

Passwords never appear in ``repr`` (logs, tracebacks) nor in :attr:`PostgresEndpoint.where`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

DEFAULT_REGION = "us-east-1"  # MinIO's, and any region a local S3 server accepts
POSTGRES_PORT = 5432


def _identifier(schema: str) -> str:
    if not schema.isidentifier():
        raise ValueError(f"Postgres schema {schema!r} is not a plain identifier")
    return schema


@dataclass(frozen=True)
class PostgresEndpoint:
    """A Postgres database as one role sees it."""

    host: str = "127.0.0.1"
    port: int = POSTGRES_PORT
    dbname: str = "postgres"
    user: str = ""
    password: str = field(default="", repr=False)

    @classmethod
    def from_connection(cls, conn: Any) -> PostgresEndpoint:
        """From an Airflow connection (host, port, login, password, schema = the database)."""
        return cls(
            host=conn.host or "127.0.0.1",
            port=int(conn.port or POSTGRES_PORT),
            dbname=conn.schema or "postgres",
            user=conn.login or "",
            password=conn.password or "",
        )

    @classmethod
    def from_libpq_env(cls, env: Mapping[str, str] | None = None) -> PostgresEndpoint:
        """From libpq's ``PG*`` variables (what a Spark driver is started with; default: this
        process's environment)."""
        env = os.environ if env is None else env
        return cls(
            host=env.get("PGHOST") or "127.0.0.1",
            port=int(env.get("PGPORT") or POSTGRES_PORT),
            dbname=env.get("PGDATABASE") or "postgres",
            user=env.get("PGUSER", ""),
            password=env.get("PGPASSWORD", ""),
        )

    @property
    def where(self) -> str:
        """host:port/db for messages (no credentials)."""
        return f"{self.host}:{self.port}/{self.dbname}"

    def psycopg2_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"host": self.host, "port": self.port, "dbname": self.dbname}
        if self.user:
            kwargs["user"] = self.user
        if self.password:
            kwargs["password"] = self.password
        return kwargs

    def libpq_env(self) -> dict[str, str]:
        env = {"PGHOST": self.host, "PGPORT": str(self.port), "PGDATABASE": self.dbname}
        if self.user:
            env["PGUSER"] = self.user
        if self.password:
            env["PGPASSWORD"] = self.password
        return env

    def jdbc_url(self, schema: str) -> str:
        """Without credentials (Spark's JDBC options and Iceberg's catalog take them apart)."""
        return (
            f"jdbc:postgresql://{self.host}:{self.port}/{self.dbname}"
            f"?currentSchema={_identifier(schema)}"
        )

    def sqlalchemy_url(self, schema: str | None = None) -> str:
        """A psycopg2 SQLAlchemy URL (credentials quoted), tables in ``schema``."""
        from sqlalchemy import URL

        query = {"options": f"-csearch_path={_identifier(schema)}"} if schema else {}
        url = URL.create(
            "postgresql+psycopg2",
            username=self.user or None,
            password=self.password or None,
            host=self.host,
            port=self.port,
            database=self.dbname,
            query=query,
        )
        return url.render_as_string(hide_password=False)

    def airflow_connection(self) -> dict[str, Any]:
        return {
            "conn_type": "postgres",
            "host": self.host,
            "port": self.port,
            "login": self.user,
            "password": self.password,
            "schema": self.dbname,
        }


@dataclass(frozen=True)
class S3Endpoint:
    """An S3 service (or an S3-compatible one such as MinIO) as one user sees it."""

    endpoint_url: str = ""  # empty: AWS
    access_key: str = ""
    secret_key: str = field(default="", repr=False)
    region: str = DEFAULT_REGION

    @classmethod
    def from_connection(cls, conn: Any) -> S3Endpoint:
        """From an Airflow ``aws`` connection (login, password, extra endpoint_url/region_name)."""
        extra = conn.extra_dejson
        return cls(
            endpoint_url=extra.get("endpoint_url") or "",
            access_key=conn.login or "",
            secret_key=conn.password or "",
            region=extra.get("region_name") or DEFAULT_REGION,
        )

    @classmethod
    def from_aws_env(cls, endpoint_url: str, env: Mapping[str, str] | None = None) -> S3Endpoint:
        """From a process's ``AWS_*`` environment (:meth:`aws_env`: how a Spark driver gets its
        keys) and the endpoint its s3a settings name."""
        env = os.environ if env is None else env
        return cls(
            endpoint_url=endpoint_url,
            access_key=env.get("AWS_ACCESS_KEY_ID", ""),
            secret_key=env.get("AWS_SECRET_ACCESS_KEY", ""),
            region=env.get("AWS_REGION") or DEFAULT_REGION,
        )

    def client(self) -> Any:
        """A boto3 client with path-style addressing (which local S3 servers need)."""
        import boto3
        from botocore.config import Config

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url or None,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
            config=Config(
                s3={"addressing_style": "path"}, retries={"max_attempts": 5, "mode": "standard"}
            ),
        )

    def aws_env(self) -> dict[str, str]:
        """The credentials as the environment of a process (never its command line)."""
        return {
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_REGION": self.region,
        }

    def s3a_conf(self) -> dict[str, str]:
        """Spark's ``fs.s3a`` endpoint settings (no credentials: a spark-submit gets them by
        :meth:`aws_env`, a session already running by :meth:`hadoop_credentials`)."""
        conf = {"spark.hadoop.fs.s3a.endpoint.region": self.region}
        if self.endpoint_url:
            conf["spark.hadoop.fs.s3a.endpoint"] = self.endpoint_url
            conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(
                self.endpoint_url.startswith("https")
            ).lower()
        return conf

    def hadoop_credentials(self) -> dict[str, str]:
        """The credentials as Hadoop settings, to set on a running session's Hadoop
        configuration (a PySpark session's builder settings become its JVM's command line)."""
        return {
            "fs.s3a.aws.credentials.provider": "org.apache.hadoop.fs.s3a.SimpleAWSCredentialsProvider",
            "fs.s3a.access.key": self.access_key,
            "fs.s3a.secret.key": self.secret_key,
        }

    def pyarrow_filesystem(self) -> Any:
        from pyarrow import fs

        scheme, _, host = self.endpoint_url.partition("://")
        keys = {"access_key": self.access_key, "secret_key": self.secret_key}
        return fs.S3FileSystem(
            region=self.region,
            # No keys: AWS's default chain (an instance profile, IRSA), as Spark's S3A.
            **(keys if self.access_key else {}),
            **({"endpoint_override": host, "scheme": scheme} if self.endpoint_url else {}),
        )

    def pyiceberg_properties(self) -> dict[str, str]:
        props = {
            "s3.access-key-id": self.access_key,
            "s3.secret-access-key": self.secret_key,
            "s3.region": self.region,
        }
        if self.endpoint_url:
            props["s3.endpoint"] = self.endpoint_url
            props["s3.force-virtual-addressing"] = "false"
        return props

    def airflow_connection(self) -> dict[str, Any]:
        extra = {"region_name": self.region}
        if self.endpoint_url:
            extra["endpoint_url"] = self.endpoint_url
        return {
            "conn_type": "aws",
            "login": self.access_key,
            "password": self.secret_key,
            "extra": extra,
        }


@dataclass(frozen=True)
class KafkaEndpoint:
    """A Kafka cluster: its bootstrap servers and the client's security settings, if any
    (librdkafka names: ``security.protocol``, ``sasl.*``, ``ssl.*``)."""

    bootstrap_servers: str
    security: Mapping[str, str] = field(default_factory=dict, repr=False)

    @classmethod
    def from_connection(cls, conn: Any) -> KafkaEndpoint:
        """From an Airflow ``kafka`` connection (its extra is a librdkafka config)."""
        extra = dict(conn.extra_dejson)
        return cls(bootstrap_servers=str(extra.pop("bootstrap.servers", "")), security=extra)

    def client_config(self, **extra: Any) -> dict[str, Any]:
        return {"bootstrap.servers": self.bootstrap_servers, **self.security, **extra}

    def airflow_connection(self) -> dict[str, Any]:
        return {"conn_type": "kafka", "extra": self.client_config()}


def airflow_connection_env(connections: Mapping[str, Mapping[str, Any]]) -> dict[str, str]:
    """``AIRFLOW_CONN_<ID>`` variables for connections given as Airflow's JSON bodies."""
    return {f"AIRFLOW_CONN_{cid.upper()}": json.dumps(body) for cid, body in connections.items()}
