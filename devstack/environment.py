"""The process environment every component of the local stack runs with.

Airflow reads its configuration and its connections from ``AIRFLOW__*`` / ``AIRFLOW_CONN_*``
variables built here from the settings and the generated credentials: nothing secret is
written into Airflow's config file or metadata database, and the DAGs only name connection ids.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from devstack.secrets import Secrets
from devstack.settings import ROOT, Settings
from include import connections, pipeline
from include.airflow_users import ADMIN_USER, users_setting
from include.endpoints import KafkaEndpoint, PostgresEndpoint, S3Endpoint, airflow_connection_env

AIRFLOW_ADMIN_USER = ADMIN_USER  # include/airflow_users.py
AIRFLOW_DB = "airflow"
AIRFLOW_DB_USER = "airflow"
ANALYTICS_DB = "analytics"
ANALYTICS_DB_USER = "rtap"
DASHBOARD_DB_USER = "rtap_dashboard"  # SELECT only (devstack/services.py grants it)
PG_SUPERUSER = "postgres"


def venv_bin() -> Path:
    return Path(sys.executable).parent


def java_home() -> str | None:
    if os.environ.get("JAVA_HOME"):
        return os.environ["JAVA_HOME"]
    for candidate in sorted(Path("/usr/lib/jvm").glob("java-17-openjdk*")):
        if (candidate / "bin" / "java").exists():
            return str(candidate)
    return None


def spark_jars(settings: Settings) -> list[str]:
    """The connector jars and the stream's own operators (``devstack install`` builds both)."""
    connectors = (
        sorted(str(p) for p in settings.spark_jars_dir.glob("*.jar"))
        if settings.spark_jars_dir.is_dir()
        else []
    )
    own = [str(settings.operators_jar)] if settings.operators_jar.exists() else []
    return connectors + own


def s3_user(secrets: Secrets, conn_id: str) -> tuple[str, str]:
    """The access key and secret of the S3 user behind a pipeline S3 connection (the per-service
    users `make up` creates; never MinIO's root user)."""
    users = {
        connections.S3: (secrets.stream_s3_access_key, secrets.stream_s3_secret_key),
        connections.WAREHOUSE_S3: (
            secrets.warehouse_s3_access_key,
            secrets.warehouse_s3_secret_key,
        ),
    }
    if conn_id not in users:
        raise ValueError(f"no S3 user for connection {conn_id!r}; known: {', '.join(users)}")
    return users[conn_id]


def s3_endpoint(settings: Settings, secrets: Secrets, conn_id: str) -> S3Endpoint:
    """The local S3 server as the user behind ``conn_id`` (:func:`s3_user`)."""
    access_key, secret_key = s3_user(secrets, conn_id)
    return S3Endpoint(settings.s3_endpoint, access_key, secret_key)


def s3_root(settings: Settings, secrets: Secrets) -> S3Endpoint:
    """MinIO's root user: `make up` (users, policies, the bucket) and the tests' own checks."""
    return S3Endpoint(settings.s3_endpoint, secrets.s3_access_key, secrets.s3_secret_key)


def _postgres(settings: Settings, dbname: str, user: str, password: str) -> PostgresEndpoint:
    return PostgresEndpoint(settings.host, settings.ports.postgres, dbname, user, password)


def analytics_db(settings: Settings, secrets: Secrets) -> PostgresEndpoint:
    """The analytics database, as its owner (the pipeline's role)."""
    return _postgres(settings, ANALYTICS_DB, ANALYTICS_DB_USER, secrets.pg_password)


def superuser_db(
    settings: Settings, secrets: Secrets, dbname: str = "postgres"
) -> PostgresEndpoint:
    """Postgres's superuser: `make up` creates the roles and databases with it, nothing else."""
    return _postgres(settings, dbname, PG_SUPERUSER, secrets.pg_superuser_password)


def dashboard_db(settings: Settings, secrets: Secrets) -> PostgresEndpoint:
    """The analytics database as the dashboard's role (SELECT only)."""
    return _postgres(settings, ANALYTICS_DB, DASHBOARD_DB_USER, secrets.dashboard_db_password)


def dashboard_s3(settings: Settings, secrets: Secrets) -> S3Endpoint:
    """The local S3 server as the dashboard's read-only user."""
    return S3Endpoint(
        settings.s3_endpoint, secrets.dashboard_s3_access_key, secrets.dashboard_s3_secret_key
    )


def connection_env(settings: Settings, secrets: Secrets) -> dict[str, str]:
    """``AIRFLOW_CONN_*`` variables for the connections the DAGs use."""
    conns = {
        connections.KAFKA: KafkaEndpoint(settings.kafka_bootstrap).airflow_connection(),
        connections.SPARK: {
            "conn_type": "spark",
            "host": settings.spark_master,
            "extra": {"deploy-mode": "client", "spark-binary": "spark-submit"},
        },
        # Per-service S3 users (created by `make up`): never MinIO's root user. The stream's
        # goes through its own link (Toxiproxy), the one path the chaos soak can cut.
        connections.S3: S3Endpoint(
            settings.stream_s3_endpoint, *s3_user(secrets, connections.S3)
        ).airflow_connection(),
        connections.WAREHOUSE_S3: s3_endpoint(
            settings, secrets, connections.WAREHOUSE_S3
        ).airflow_connection(),
        connections.POSTGRES: analytics_db(settings, secrets).airflow_connection(),
    }
    return airflow_connection_env(conns)


def airflow_db(settings: Settings, secrets: Secrets) -> PostgresEndpoint:
    """Airflow's metadata database, as its owner (Airflow's components only)."""
    return _postgres(settings, AIRFLOW_DB, AIRFLOW_DB_USER, secrets.airflow_db_password)


def airflow_env(settings: Settings, secrets: Secrets) -> dict[str, str]:
    """Airflow configuration as environment variables (no airflow.cfg edits)."""
    db_url = airflow_db(settings, secrets).sqlalchemy_url()
    home = settings.airflow_home
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "8",
        "AIRFLOW__CORE__FERNET_KEY": secrets.airflow_fernet_key,
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": users_setting(),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{settings.airflow_url}/execution/",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": db_url,
        "AIRFLOW__API__HOST": settings.host,
        "AIRFLOW__API__PORT": str(settings.ports.airflow),
        "AIRFLOW__API__BASE_URL": settings.airflow_url,
        "AIRFLOW__API__SECRET_KEY": secrets.airflow_secret_key,
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.airflow_jwt_secret,
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "15",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        **{f"AIRFLOW__SCHEDULER__{k.upper()}": v for k, v in pipeline.SCHEDULER_SETTINGS.items()},
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        # plugins/dashboard_link.py: the dashboard's entry in the Airflow UI's navigation.
        "RTAP_DASHBOARD_URL": settings.dashboard_url,
    }


def dashboard_env(
    settings: Settings,
    secrets: Secrets,
    pg_schema: str = "public",
    warehouse: str | None = None,
) -> dict[str, str]:
    """``RTAP_DASHBOARD_*`` settings of the dashboard: read-only credentials only (its Postgres
    role has SELECT, its S3 user a read-only policy), nothing else of the stack's secrets."""
    from include import pipeline
    from include.dashboard import config

    return config.to_env(
        dashboard_db(settings, secrets),
        dashboard_s3(settings, secrets),
        pg_schema=pg_schema,
        warehouse=warehouse or f"s3://{settings.bucket}/{pipeline.WAREHOUSE_PREFIX}",
        marts_namespace=pipeline.MARTS_NAMESPACE,
        airflow_url=settings.airflow_url,
    )


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a service that needs none of the stack's settings or credentials
    (Postgres, Kafka): a search path, a home, the locale, and the state directory that marks
    this stack's processes (`make stop` finds leftovers by it). ``extra``: what the service
    itself needs (its own credentials, ``JAVA_HOME``)."""
    env = {
        "PATH": f"{venv_bin()}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": os.environ.get("HOME", "/tmp"),
        "RTAP_STATE_DIR": str(settings.state_dir),
    }
    env.update({k: v for k, v in os.environ.items() if k == "LANG" or k.startswith("LC_")})
    env.update(extra)
    return env


def stack_env(
    settings: Settings, secrets: Secrets, base: dict[str, str] | None = None
) -> dict[str, str]:
    """The full environment for Airflow components, spark-submit and our CLIs."""
    env = dict(os.environ if base is None else base)
    env.update(airflow_env(settings, secrets))
    env.update(connection_env(settings, secrets))
    env["PATH"] = f"{venv_bin()}{os.pathsep}{env.get('PATH', '')}"
    jhome = java_home()
    if jhome:
        env["JAVA_HOME"] = jhome
    env["PYSPARK_PYTHON"] = sys.executable
    env["PYSPARK_DRIVER_PYTHON"] = sys.executable
    env["SPARK_LOCAL_IP"] = settings.host
    env["SPARK_LOCAL_DIRS"] = str(settings.spark_local_dir)  # not /tmp: see the setting
    env["RTAP_SPARK_JARS"] = ",".join(spark_jars(settings))
    env["RTAP_STATE_DIR"] = str(settings.state_dir)
    env["RTAP_KAFKA_BOOTSTRAP"] = settings.kafka_bootstrap  # the events CLI's default broker
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env
