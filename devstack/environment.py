"""The process environment every component of the local stack runs with.

Airflow reads its configuration from ``AIRFLOW__*`` variables built here from the settings:
nothing is written into Airflow's config file or metadata database, and the DAGs only name
connection ids. Its services get no secret value in their environment: each reads the secrets
its role needs from private files (``AIRFLOW__*_CMD``), and only the API server reads the
connections, which it serves to each task on request (:func:`airflow_component_env`). The
developer's own commands (``airflow dags test``, the CLIs) get the values directly
(:func:`stack_env`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from devstack.secrets import Secrets
from devstack.settings import ROOT, Settings
from include import connections, pipeline
from include.airflow_users import ADMIN_USER, users_setting
from include.endpoints import KafkaEndpoint, PostgresEndpoint, S3Endpoint, airflow_connection_env
from include.private_file import write_private

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
    """The connector jars and the stream's own operators (``devstack install`` builds both).
    The operators' jar is named even before it is built: ``make up`` on a new state dir builds
    it after the stack's environment (which the scheduler passes to the drivers) was made."""
    connectors = (
        sorted(str(p) for p in settings.spark_jars_dir.glob("*.jar"))
        if settings.spark_jars_dir.is_dir()
        else []
    )
    return [*connectors, str(settings.operators_jar)]


# The S3 role (include/lake/provision.py ROLES) behind each pipeline S3 connection.
S3_ROLES = {connections.S3: "stream", connections.WAREHOUSE_S3: "warehouse"}


def s3_user(secrets: Secrets, conn_id: str, sandbox: bool = False) -> tuple[str, str]:
    """The access key and secret of the S3 user behind a pipeline S3 connection (the per-service
    users `make up` creates; never MinIO's root user); ``sandbox``: its twin that writes only
    under the tests' and benchmarks' sandboxes (``it/*/``)."""
    if conn_id not in S3_ROLES:
        raise ValueError(f"no S3 user for connection {conn_id!r}; known: {', '.join(S3_ROLES)}")
    return secrets.s3_keys(S3_ROLES[conn_id], sandbox)


def s3_endpoint(
    settings: Settings, secrets: Secrets, conn_id: str, sandbox: bool = False
) -> S3Endpoint:
    """The local S3 server as the user behind ``conn_id`` (:func:`s3_user`)."""
    access_key, secret_key = s3_user(secrets, conn_id, sandbox)
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


def dashboard_s3(settings: Settings, secrets: Secrets, sandbox: bool = False) -> S3Endpoint:
    """The local S3 server as the dashboard's read-only user (``sandbox``: its twin, which reads
    only the sandboxes' warehouses)."""
    return S3Endpoint(settings.s3_endpoint, *secrets.s3_keys("dashboard", sandbox))


def connection_env(settings: Settings, secrets: Secrets, sandbox: bool = False) -> dict[str, str]:
    """``AIRFLOW_CONN_*`` variables for the connections the DAGs use (``sandbox``: with the S3
    users of the tests' and benchmarks' sandboxes)."""
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
            settings.stream_s3_endpoint, *s3_user(secrets, connections.S3, sandbox)
        ).airflow_connection(),
        connections.WAREHOUSE_S3: s3_endpoint(
            settings, secrets, connections.WAREHOUSE_S3, sandbox
        ).airflow_connection(),
        connections.POSTGRES: analytics_db(settings, secrets).airflow_connection(),
    }
    return airflow_connection_env(conns)


def airflow_db(settings: Settings, secrets: Secrets) -> PostgresEndpoint:
    """Airflow's metadata database, as its owner (Airflow's components only)."""
    return _postgres(settings, AIRFLOW_DB, AIRFLOW_DB_USER, secrets.airflow_db_password)


# Airflow's own secrets, by (section, option): sensitive options, which Airflow also reads
# through ``AIRFLOW__<SECTION>__<OPTION>_CMD`` (how each service gets them:
# :func:`airflow_component_env`).
AIRFLOW_DB_OPTION = ("database", "sql_alchemy_conn")
FERNET_OPTION = ("core", "fernet_key")  # encrypts connections and variables kept in its database
API_KEY_OPTION = ("api", "secret_key")  # the UI's sessions, the log server's requests
JWT_OPTION = ("api_auth", "jwt_secret")  # signs the tasks' tokens for the Execution API
AIRFLOW_SECRET_OPTIONS = (AIRFLOW_DB_OPTION, FERNET_OPTION, API_KEY_OPTION, JWT_OPTION)

# What each Airflow service holds, and why. Connections: the API server only - it serves each
# task the connections the task asks for, through the Execution API and the task's token.
# The scheduler signs those tokens (its LocalExecutor's workers run the tasks as its children,
# so they inherit its environment: which therefore holds no secret value, see below) and serves
# task logs; the DAG processor and the triggerer use the database (and the Fernet key for what
# Airflow encrypts in it).
AIRFLOW_COMPONENT_SECRETS: dict[str, tuple[tuple[str, str], ...]] = {
    "airflow-api-server": AIRFLOW_SECRET_OPTIONS,
    "airflow-scheduler": AIRFLOW_SECRET_OPTIONS,
    "airflow-dag-processor": (AIRFLOW_DB_OPTION, FERNET_OPTION),
    "airflow-triggerer": (AIRFLOW_DB_OPTION, FERNET_OPTION),
}
CONNECTIONS_HOLDER = "airflow-api-server"


def airflow_var(section: str, option: str) -> str:
    return f"AIRFLOW__{section.upper()}__{option.upper()}"


def airflow_secrets(settings: Settings, secrets: Secrets) -> dict[tuple[str, str], str]:
    """Airflow's own secret options and their values."""
    return {
        AIRFLOW_DB_OPTION: airflow_db(settings, secrets).sqlalchemy_url(),
        FERNET_OPTION: secrets.airflow_fernet_key,
        API_KEY_OPTION: secrets.airflow_secret_key,
        JWT_OPTION: secrets.airflow_jwt_secret,
    }


def airflow_config(settings: Settings) -> dict[str, str]:
    """Airflow's configuration as environment variables (no airflow.cfg edits), nothing secret."""
    home = settings.airflow_home
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(ROOT / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__CORE__PARALLELISM": "8",
        "AIRFLOW__CORE__AUTH_MANAGER": (
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
        ),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": users_setting(),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{settings.airflow_url}/execution/",
        "AIRFLOW__API__HOST": settings.host,
        "AIRFLOW__API__PORT": str(settings.ports.airflow),
        "AIRFLOW__API__BASE_URL": settings.airflow_url,
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "15",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "True",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST": settings.host,
        "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT": str(
            settings.ports.airflow_scheduler_health
        ),
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(settings.ports.airflow_worker_logs),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(settings.ports.airflow_trigger_logs),
        **{f"AIRFLOW__SCHEDULER__{k.upper()}": v for k, v in pipeline.SCHEDULER_SETTINGS.items()},
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        # plugins/dashboard_link.py: the dashboard's entry in the Airflow UI's navigation.
        "RTAP_DASHBOARD_URL": settings.dashboard_url,
    }


def airflow_env(settings: Settings, secrets: Secrets) -> dict[str, str]:
    """Airflow's configuration with its secrets as values: for the developer's own Airflow
    commands (``airflow db migrate``, ``airflow dags test`` in the tests), never a service."""
    env = airflow_config(settings)
    env.update({airflow_var(*o): v for o, v in airflow_secrets(settings, secrets).items()})
    return env


def airflow_secrets_dir(settings: Settings) -> Path:
    return settings.airflow_home / "secrets"


def connections_file(settings: Settings) -> Path:
    """The connections the API server serves (Airflow's local-filesystem secrets backend)."""
    return airflow_secrets_dir(settings) / "connections.json"


def _secret_file(settings: Settings, section: str, option: str) -> Path:
    return airflow_secrets_dir(settings) / f"{section}__{option}"


def write_airflow_secrets(
    settings: Settings, secrets: Secrets, base: Mapping[str, str] | None = None
) -> None:
    """Airflow's secrets and connections as private files (0600 in a 0700 directory), read by
    the services named in :data:`AIRFLOW_COMPONENT_SECRETS` through Airflow's ``_CMD`` options
    and its local-filesystem secrets backend. The connections are the stack's, plus any
    ``AIRFLOW_CONN_*`` of ``base`` (the developer's environment: ``alerts_webhook``, say), as
    JSON or as a URI."""
    for (section, option), value in airflow_secrets(settings, secrets).items():
        write_private(_secret_file(settings, section, option), value)
    bodies: dict[str, Any] = {}
    for var, body in {**(base or {}), **connection_env(settings, secrets)}.items():
        if var.startswith("AIRFLOW_CONN_"):
            text = body.strip()
            bodies[var.removeprefix("AIRFLOW_CONN_").lower()] = (
                json.loads(text) if text.startswith("{") else text
            )
    write_private(connections_file(settings), json.dumps(bodies))


def airflow_component_env(
    settings: Settings, secrets: Secrets, component: str, base: dict[str, str]
) -> dict[str, str]:
    """The environment of one Airflow service: ``base`` without any connection or variable
    holding a credential (the developer may have exported one), Airflow's configuration, and
    for each secret the service needs (:data:`AIRFLOW_COMPONENT_SECRETS`) the command reading
    its private file; the API server also the connections file. Nothing in it is a
    credential: what a task inherits from the scheduler, and what ``/proc/<pid>/environ``
    shows, names files, not secrets."""
    held = [v for v in dataclasses.asdict(secrets).values() if v]
    env = {
        k: v
        for k, v in base.items()
        if not k.startswith(("AIRFLOW_CONN_", "AIRFLOW__SECRETS__"))
        and not any(secret in v for secret in held)
    }
    env.update(airflow_config(settings))
    for section, option in AIRFLOW_COMPONENT_SECRETS[component]:
        path = _secret_file(settings, section, option)
        env[f"{airflow_var(section, option)}_CMD"] = f"cat {shlex.quote(str(path))}"
    if component == CONNECTIONS_HOLDER:
        env["AIRFLOW__SECRETS__BACKEND"] = "airflow.secrets.local_filesystem.LocalFilesystemBackend"
        env["AIRFLOW__SECRETS__BACKEND_KWARGS"] = json.dumps(
            {"connections_file_path": str(connections_file(settings))}
        )
    return env


def dashboard_env(
    settings: Settings,
    secrets: Secrets,
    pg_schema: str = "public",
    warehouse: str | None = None,
    sandbox: bool = False,
) -> dict[str, str]:
    """``RTAP_DASHBOARD_*`` settings of the dashboard: read-only credentials only (its Postgres
    role has SELECT, its S3 user a read-only policy), nothing else of the stack's secrets."""
    from include import pipeline
    from include.dashboard import config

    return config.to_env(
        dashboard_db(settings, secrets),
        dashboard_s3(settings, secrets, sandbox),
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
    settings: Settings,
    secrets: Secrets,
    base: dict[str, str] | None = None,
    sandbox: bool = False,
) -> dict[str, str]:
    """The environment of the developer's commands (our CLIs, spark-submit, ``airflow dags
    test``), Airflow's services' base (:func:`airflow_component_env` takes the secrets out);
    ``sandbox``: the connections of the tests' and benchmarks' sandbox users."""
    env = dict(os.environ if base is None else base)
    env.update(airflow_env(settings, secrets))
    env.update(connection_env(settings, secrets, sandbox))
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
