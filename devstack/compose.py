"""Checks of ``docker-compose.yaml`` that need no Docker engine (``make test`` runs them).

* The file validates against the **Compose Specification's JSON schema** — the one Docker
  Compose itself loads, taken from the ``compose-go`` module (pinned, through the Go module
  proxy, checksum-verified by ``go``) and cached — with the ``jsonschema`` validator.
* Every image is **pinned** (an explicit version tag or a digest, never ``latest``); an image
  built from our Dockerfile is exempt.
* **No default credential**: every password, secret or key in an environment block comes from
  ``.env`` as a required variable (``${NAME:?message}``), never a literal or a ``:-default``;
  ``.env.example`` leaves them empty.
* **Hosts and ports**: every connection an Airflow ``AIRFLOW_CONN_*`` variable or the dashboard
  names points at a service of the file and a port that service listens on — with the
  variables' defaults (the services without a profile) and with the scale-out variables
  (:data:`SCALE_OUT`: the ``kafka-cluster`` and ``spark-cluster`` profiles).
* **The same settings as the no-Docker stack**: the connection ids the DAGs use, the database
  names and roles, the bucket, the dashboard's settings.

:func:`problems` returns the findings (empty: the file passes); each names the service and key.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import yaml

from devstack.install import InstallError
from devstack.settings import ROOT, Settings

COMPOSE_FILE = ROOT / "docker-compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
SCHEMA_MODULE = "github.com/compose-spec/compose-go/v2"
SCHEMA_VERSION = "v2.16.2"  # Docker Compose 2.4x loads this schema
SCHEMA_PATH_IN_MODULE = "schema/compose-spec.json"

SECRET_WORDS = ("PASSWORD", "SECRET", "_KEY", "TOKEN", "ROOT_USER", "ACCESS_KEY")
REQUIRED_VAR = re.compile(r"^\$\{[A-Z0-9_]+:\?[^}]*\}$")
VAR_REF = re.compile(r"\$\{([A-Z0-9_]+)(:?[-?+])?([^}]*)\}")
# Ports each image listens on inside the compose network (no port mapping needed there).
LISTENS: dict[str, set[int]] = {
    "postgres": {5432},
    "minio": {9000, 9001},
    "kafka": {9092, 9093},
    "kafka-2": {9092, 9093},
    "kafka-3": {9092, 9093},
    "spark-master": {7077, 8080},
    "airflow-api-server": {8080},
    "dashboard": {8501},
}


# The variables that switch the file to its scale-out profiles (its header, docs/deployment.md).
SCALE_OUT: dict[str, str] = {
    "COMPOSE_PROFILES": "kafka-cluster,spark-cluster",
    "KAFKA_BOOTSTRAP": "kafka:9092,kafka-2:9092,kafka-3:9092",
    "KAFKA_VOTERS": "1@kafka:9093,2@kafka-2:9093,3@kafka-3:9093",
    "KAFKA_REPLICATION_FACTOR": "3",
    "KAFKA_MIN_ISR": "2",
    "SPARK_MASTER": "spark://spark-master:7077",
    "SPARK_DRIVER_HOST": "airflow-scheduler",
}
# The one-shot service that migrates the databases and writes the Airflow users' passwords file.
AIRFLOW_INIT = "airflow-init"
DEFAULTED = re.compile(r"\$\{([A-Z0-9_]+):?-([^}]*)\}")


class ComposeError(InstallError):
    """The Compose schema could not be fetched."""


def schema(settings: Settings) -> dict[str, Any]:
    """The Compose Specification schema of ``compose-go`` (cached under the download cache)."""
    cached = settings.cache_dir / f"compose-spec-{SCHEMA_VERSION}.json"
    if not cached.exists():
        go = shutil.which("go")
        if not go:
            raise ComposeError("Go is required to fetch the Compose schema from the Go proxy")
        settings.cache_dir.mkdir(parents=True, exist_ok=True)
        gopath = settings.cache_dir / "gopath"
        env = dict(os.environ, GOPATH=str(gopath), GOFLAGS="-modcacherw")
        proc = subprocess.run(
            [go, "mod", "download", "-json", f"{SCHEMA_MODULE}@{SCHEMA_VERSION}"],
            capture_output=True,
            text=True,
            env=env,
            cwd=settings.cache_dir,
        )
        if proc.returncode != 0:
            raise ComposeError(
                f"fetching {SCHEMA_MODULE}@{SCHEMA_VERSION} through the Go module proxy "
                f"failed: {(proc.stdout + proc.stderr).strip()[-400:]}"
            )
        source = Path(json.loads(proc.stdout)["Dir"]) / SCHEMA_PATH_IN_MODULE
        cached.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, cached)
    return json.loads(cached.read_text())


def load(path: Path = COMPOSE_FILE) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def problems(
    compose: Mapping[str, Any], spec: Mapping[str, Any], env_example: str | None = None
) -> list[str]:
    found = schema_errors(compose, spec)
    if found:  # the rest assumes the structure the schema guarantees
        return found
    found += unpinned_images(compose)
    found += default_credentials(compose)
    default = dangling_endpoints(resolve(compose, {}))
    scaled = dangling_endpoints(resolve(compose, SCALE_OUT))
    found += default + [f"scale-out: {p}" for p in scaled if p not in default]
    found += unsupervised(compose)
    found += secrets_on_command_lines(compose)
    found += public_ports(compose)
    found += unauthenticated_spark(resolve(compose, SCALE_OUT))
    found += unauthenticated_kafka(resolve(compose, SCALE_OUT))
    found += disagreements(compose)
    if env_example is not None:
        found += filled_examples(env_example)
    return found


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """``value`` with every ``${NAME:-default}`` replaced by ``env``'s value or the default (as
    Compose does); required variables (``${NAME:?...}``) are left as they are."""
    if isinstance(value, str):
        return DEFAULTED.sub(lambda m: env.get(m[1]) or m[2], value)
    if isinstance(value, Mapping):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    return value


def resolve(compose: Mapping[str, Any], env: Mapping[str, str]) -> dict[str, Any]:
    """The file as ``docker compose`` would run it with ``env``: variables interpolated and only
    the services without a profile or with a profile in ``COMPOSE_PROFILES``."""
    active = {p for p in env.get("COMPOSE_PROFILES", "").split(",") if p}
    out = interpolate(compose, env)
    out["services"] = {
        name: svc
        for name, svc in out.get("services", {}).items()
        if not svc.get("profiles") or active & set(svc["profiles"])
    }
    return out


def schema_errors(compose: Mapping[str, Any], spec: Mapping[str, Any]) -> list[str]:
    from jsonschema.validators import validator_for

    validator = validator_for(spec)(spec)
    return [
        f"schema: {'/'.join(str(p) for p in e.absolute_path) or '(top)'}: {e.message}"
        for e in sorted(validator.iter_errors(compose), key=lambda e: list(e.absolute_path))
    ]


def unpinned_images(compose: Mapping[str, Any]) -> list[str]:
    services = compose.get("services", {})
    built = {svc.get("image") for svc in services.values() if "build" in svc}
    out = []
    for name, svc in services.items():
        image = svc.get("image")
        if image is None:
            if "build" not in svc:
                out.append(f"service {name}: no image and nothing to build")
            continue
        if "@sha256:" in image or image in built:
            continue  # a digest, or our own image built from the Dockerfile in this file
        last = image.rsplit("/", 1)[-1]
        tag = last.split(":", 1)[1] if ":" in last else ""
        if not tag or tag == "latest" or not re.search(r"\d", tag):
            out.append(f"service {name}: image {image!r} is not pinned to a version or digest")
    return out


RESTARTS = ("always", "unless-stopped")  # what a long-running service of the platform may use


def one_shots(compose: Mapping[str, Any]) -> set[str]:
    """Services that run to completion: others wait for them with
    ``condition: service_completed_successfully``."""
    return {
        dep
        for svc in compose.get("services", {}).values()
        for dep, cond in (svc.get("depends_on") or {}).items()
        if isinstance(cond, Mapping) and cond.get("condition") == "service_completed_successfully"
    }


def unsupervised(compose: Mapping[str, Any]) -> list[str]:
    """Long-running services without a restart policy or a healthcheck: the Docker engine is
    their supervisor (as supervisord is the no-Docker stack's, devstack/supervisor.py)."""
    found = []
    done = one_shots(compose)
    for name, svc in compose.get("services", {}).items():
        if name in done:
            continue
        if svc.get("restart") not in RESTARTS:
            found.append(f"service {name}: no restart policy (restart: {' or '.join(RESTARTS)})")
        check = svc.get("healthcheck") or {}
        if not check.get("test") or check.get("disable"):
            found.append(f"service {name}: no healthcheck")
    return found


def _environment(svc: Mapping[str, Any]) -> dict[str, str]:
    env = svc.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) if "=" in item else (item, "") for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def _is_secret(key: str) -> bool:
    return any(word in key.upper() for word in SECRET_WORDS)


def default_credentials(compose: Mapping[str, Any]) -> list[str]:
    out = []
    for name, svc in compose.get("services", {}).items():
        for key, value in _environment(svc).items():
            defaulted = [
                (var, op + rest)
                for var, op, rest in VAR_REF.findall(value)
                if op in (":-", "-", ":+", "+") and (_is_secret(var) or _is_secret(key))
            ]
            for var, default in defaulted:
                out.append(f"service {name}: {key} gives {var} a default ({default})")
            secret = _is_secret(key) and not key.endswith("_FILE")  # a path, not a secret
            if secret and not defaulted and not REQUIRED_VAR.match(value.strip()):
                out.append(
                    f"service {name}: {key} must be a required variable from .env "
                    f"(${{NAME:?message}}), not {'a literal' if '${' not in value else value!r}"
                )
        for key, value in _environment(svc).items():
            if key.startswith("AIRFLOW_CONN_"):
                conn = json.loads(value)
                extra = conn.get("extra") or {}
                for field, password in (
                    ("password", conn.get("password")),
                    ("extra.sasl.password", extra.get("sasl.password")),
                ):
                    if password and not REQUIRED_VAR.match(str(password)):
                        out.append(f"service {name}: {key} has a literal or defaulted {field}")
    return out


def endpoints(compose: Mapping[str, Any]) -> Iterator[tuple[str, str, str, int]]:
    """(service, setting, host, port) of every endpoint a connection or setting names."""
    for name, svc in compose.get("services", {}).items():
        env = _environment(svc)
        for key, value in env.items():
            if key.startswith("AIRFLOW_CONN_"):
                conn = json.loads(value)
                extra = conn.get("extra") or {}
                if conn.get("host") and conn.get("port"):
                    yield name, key, conn["host"], int(conn["port"])
                elif str(conn.get("host", "")).startswith("spark://"):
                    host, port = _host_port(conn["host"])
                    yield name, key, host, port
                for url_key in ("endpoint_url", "bootstrap.servers"):
                    if url_key in extra:
                        for hostport in str(extra[url_key]).split(","):
                            host, port = _host_port(hostport)
                            yield name, f"{key}.{url_key}", host, port
        if "RTAP_DASHBOARD_PG_HOST" in env:
            port = int(env.get("RTAP_DASHBOARD_PG_PORT") or 5432)
            yield name, "RTAP_DASHBOARD_PG_HOST", env["RTAP_DASHBOARD_PG_HOST"], port
        if env.get("RTAP_DASHBOARD_S3_ENDPOINT"):
            host, port = _host_port(env["RTAP_DASHBOARD_S3_ENDPOINT"])
            yield name, "RTAP_DASHBOARD_S3_ENDPOINT", host, port


def _host_port(text: str) -> tuple[str, int]:
    text = re.sub(r"^[a-z]+://", "", text.strip()).split("/", 1)[0]
    host, _, port = text.rpartition(":")
    return host, int(port)


def dangling_endpoints(compose: Mapping[str, Any]) -> list[str]:
    services = compose.get("services", {})
    out = []
    for name, key, host, port in endpoints(compose):
        if host not in services:
            out.append(f"service {name}: {key} names host {host!r}, which is not a service")
        elif port not in LISTENS.get(host, set()):
            out.append(f"service {name}: {key} names {host}:{port}, a port {host} does not serve")
    return out


# A variable a command line expands: compose's ${VAR} and the container shell's $$VAR / $${VAR}.
COMMAND_REF = re.compile(r"\$\$\{?([A-Za-z_][A-Za-z0-9_]*)|\$\{([A-Za-z_][A-Za-z0-9_]*)")


def _command_lines(svc: Mapping[str, Any]) -> Iterator[tuple[str, str]]:
    for key in ("command", "entrypoint"):
        value = svc.get(key)
        if value:
            yield key, value if isinstance(value, str) else " ".join(map(str, value))
    test = (svc.get("healthcheck") or {}).get("test")
    if test:
        yield "healthcheck", test if isinstance(test, str) else " ".join(map(str, test))


def secrets_on_command_lines(compose: Mapping[str, Any]) -> list[str]:
    """A secret expanded into a ``command``/``entrypoint``/healthcheck is in the process's argv,
    which every process of the container (and ``docker inspect``/``ps`` on the host) can read:
    secrets go through the environment or files."""
    out = []
    for name, svc in compose.get("services", {}).items():
        for key, text in _command_lines(svc):
            refs = {a or b for a, b in COMMAND_REF.findall(text)}
            leaked = sorted(r for r in refs if _is_secret(r))
            if leaked:
                out.append(
                    f"service {name}: {key} puts {', '.join(leaked)} on a command line "
                    "(pass it in the environment or a file)"
                )
    return out


def public_ports(compose: Mapping[str, Any]) -> list[str]:
    """Every published port binds the host's loopback: none of the services authenticates
    every request (Spark's UI, MinIO's console login aside), so a user opens a port to the
    network on purpose, behind their own proxy (docs/deployment.md)."""
    out = []
    for name, svc in compose.get("services", {}).items():
        for port in svc.get("ports") or []:
            host = port.get("host_ip") if isinstance(port, dict) else None
            if not isinstance(port, dict):
                parts = str(port).split(":")
                host = parts[0] if len(parts) == 3 else None
            if host not in (*LOOPBACK, "[::1]"):
                out.append(f"service {name}: port {port} is published beyond 127.0.0.1")
    return out


LOOPBACK = ("127.0.0.1", "::1", "localhost")


def unauthenticated_spark(compose: Mapping[str, Any]) -> list[str]:
    """Spark listening beyond loopback authenticates its peers: a driver whose bind address is
    not loopback needs the cluster's secret (the Spark connection's password), and each
    standalone daemon starts through ``include.spark.daemon`` (secret from the environment
    into a private properties file) with ``SPARK_AUTH_SECRET`` set. Checked on the scale-out
    resolution, where the driver binds the containers' network. The connection is read where
    tasks get it from: the API server."""
    from devstack.environment import CONNECTIONS_HOLDER

    out = []
    services = compose.get("services", {})
    connections = _environment(services.get(CONNECTIONS_HOLDER, {}))
    for name, svc in services.items():
        env = _environment(svc)
        bind = env.get("RTAP_SPARK_DRIVER_BIND_ADDRESS")
        if bind and bind not in LOOPBACK:
            conn = json.loads(connections.get("AIRFLOW_CONN_SPARK_DEFAULT") or "{}")
            if not conn.get("password"):
                out.append(
                    f"service {name}: the Spark driver binds {bind} but spark_default has no "
                    "password (the cluster's spark.authenticate secret)"
                )
        command = " ".join(map(str, svc.get("command") or []))
        if "org.apache.spark.deploy." in command and (
            "include.spark.daemon" not in command or not env.get("SPARK_AUTH_SECRET")
        ):
            out.append(
                f"service {name}: a Spark daemon not started by include.spark.daemon with "
                "SPARK_AUTH_SECRET (it would accept unauthenticated peers)"
            )
    return out


KAFKA_ENTRYPOINT = "/rtap/kafka-entrypoint.sh"  # docker/kafka-entrypoint.sh, mounted there
KAFKA_SECRETS = ("RTAP_KAFKA_BROKER_PASSWORD", "RTAP_KAFKA_CLIENT_PASSWORD")


def unauthenticated_kafka(compose: Mapping[str, Any]) -> list[str]:
    """Kafka authenticates every connection: each listener of each broker maps to a ``SASL_*``
    protocol, the broker starts through docker/kafka-entrypoint.sh (which creates the SCRAM
    users and the broker's JAAS file) with both passwords, and the ``kafka_default``
    connection the platform's clients use speaks SASL. Checked on the scale-out resolution
    (three brokers)."""
    from devstack.environment import CONNECTIONS_HOLDER

    out = []
    services = compose.get("services", {})
    for name, svc in services.items():
        env = _environment(svc)
        if "KAFKA_LISTENERS" not in env:
            continue
        protocols = dict(
            item.split(":", 1)
            for item in env.get("KAFKA_LISTENER_SECURITY_PROTOCOL_MAP", "").split(",")
            if ":" in item
        )
        for listener in env["KAFKA_LISTENERS"].split(","):
            label = listener.split("://", 1)[0]
            protocol = protocols.get(label, label)  # unmapped: the name is the protocol
            if not protocol.startswith("SASL_"):
                out.append(
                    f"service {name}: listener {label} is {protocol}, which accepts "
                    "unauthenticated connections (use SASL_PLAINTEXT or SASL_SSL)"
                )
        entrypoint = " ".join(map(str, svc.get("entrypoint") or []))
        if KAFKA_ENTRYPOINT not in entrypoint:
            out.append(f"service {name}: Kafka does not start through {KAFKA_ENTRYPOINT}")
        for var in KAFKA_SECRETS:
            if not env.get(var):
                out.append(f"service {name}: lacks {var}")
    holder = _environment(services.get(CONNECTIONS_HOLDER, {}))
    kafka = json.loads(holder.get("AIRFLOW_CONN_KAFKA_DEFAULT") or "{}").get("extra") or {}
    if not str(kafka.get("security.protocol", "")).startswith("SASL_"):
        out.append(
            f"service {CONNECTIONS_HOLDER}: AIRFLOW_CONN_KAFKA_DEFAULT has no SASL "
            "security.protocol (the brokers refuse other clients)"
        )
    return out


def disagreements(compose: Mapping[str, Any]) -> list[str]:
    """Settings that must be the same as in the no-Docker stack (devstack/environment.py)."""
    from devstack import environment
    from include import connections, pipeline
    from include.airflow_users import PASSWORD_VARIABLES

    services = compose.get("services", {})
    out = []
    airflow = {
        name: _environment(svc) for name, svc in services.items() if name.startswith("airflow-")
    }
    ids = (
        connections.KAFKA,
        connections.SPARK,
        connections.S3,
        connections.WAREHOUSE_S3,
        connections.POSTGRES,
    )
    wanted = {f"AIRFLOW_CONN_{cid.upper()}" for cid in ids}
    # Connections and the users' passwords: the API server (it serves the tasks) and the
    # one-shot init; each service's own secrets: environment.AIRFLOW_COMPONENT_SECRETS.
    holders = {environment.CONNECTIONS_HOLDER, AIRFLOW_INIT}
    for name, env in airflow.items():
        held = {k for k in env if k.startswith("AIRFLOW_CONN_")}
        if name in holders:
            missing = sorted(wanted - held)
            if missing:
                out.append(f"service {name}: missing connection(s) {', '.join(missing)}")
        elif held:
            out.append(
                f"service {name}: holds connection(s) {', '.join(sorted(held))}; only "
                f"{environment.CONNECTIONS_HOLDER} holds them (tasks get theirs from it)"
            )
        passwords = sorted(set(PASSWORD_VARIABLES.values()) & set(env))
        if passwords and name not in holders:
            out.append(f"service {name}: holds the Airflow users' {', '.join(passwords)}")
        needs = environment.AIRFLOW_COMPONENT_SECRETS.get(name)
        if needs is not None:
            has = {
                o for o in environment.AIRFLOW_SECRET_OPTIONS if environment.airflow_var(*o) in env
            }
            for o in sorted(has - set(needs)):
                out.append(
                    f"service {name}: holds {environment.airflow_var(*o)}, which its role does not need"
                )
            for o in sorted(set(needs) - has):
                out.append(f"service {name}: lacks {environment.airflow_var(*o)}")
        for key, value in pipeline.SCHEDULER_SETTINGS.items():
            var = f"AIRFLOW__SCHEDULER__{key.upper()}"
            if env.get(var) != value:
                out.append(f"service {name}: {var}={env.get(var)!r}, devstack uses {value}")
        db = env.get(f"AIRFLOW_CONN_{connections.POSTGRES.upper()}")
        if db:
            conn = json.loads(db)
            if (conn.get("schema"), conn.get("login")) != (
                environment.ANALYTICS_DB,
                environment.ANALYTICS_DB_USER,
            ):
                out.append(f"service {name}: the analytics connection differs from devstack's")
    init = services.get("minio-init", {}).get("entrypoint") or []
    if f"--bucket {pipeline.BUCKET}" not in " ".join(map(str, init)):
        out.append(f"service minio-init: does not provision the bucket {pipeline.BUCKET!r}")
    dash = _environment(services.get("dashboard", {}))
    if not dash:
        out.append("service dashboard is missing")
    else:
        expected = {
            "RTAP_DASHBOARD_PG_DB": environment.ANALYTICS_DB,
            "RTAP_DASHBOARD_PG_USER": environment.DASHBOARD_DB_USER,
            "RTAP_DASHBOARD_MARTS_NAMESPACE": pipeline.MARTS_NAMESPACE,
            "RTAP_DASHBOARD_WAREHOUSE": f"s3://{pipeline.BUCKET}/{pipeline.WAREHOUSE_PREFIX}",
        }
        for key, value in expected.items():
            if dash.get(key, value) != value:
                out.append(f"service dashboard: {key}={dash.get(key)!r}, devstack uses {value!r}")
        required = {f"RTAP_DASHBOARD_{k}" for k in ("PG_HOST", "PG_DB", "PG_USER", "PG_PASSWORD")}
        missing = sorted(required - set(dash))
        if missing:
            out.append(f"service dashboard: missing {', '.join(missing)}")
    return out


def filled_examples(env_example: str) -> list[str]:
    out = []
    for line in env_example.splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            if value.strip():
                out.append(f".env.example: {key} has a value; leave credentials empty")
    return out
