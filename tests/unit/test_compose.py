"""docker-compose.yaml, checked without a Docker engine: the Compose Specification's schema,
pinned images, no default credential, endpoints that exist, settings that agree with the
no-Docker stack. Each rule is also shown to fail on a broken copy of the file."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from devstack import compose, settings


@pytest.fixture(scope="module")
def spec():
    return compose.schema(settings.load())


@pytest.fixture
def doc():
    return compose.load()


def test_the_compose_file_passes_every_check(doc, spec):
    assert compose.problems(doc, spec, compose.ENV_EXAMPLE.read_text()) == []


def test_it_has_the_platform_services(doc):
    assert {
        "postgres",
        "minio",
        "minio-init",
        "kafka",
        "airflow-api-server",
        "airflow-scheduler",
        "airflow-dag-processor",
        "airflow-triggerer",
        "dashboard",
    } <= set(doc["services"])


def test_the_schema_rejects_a_malformed_service(doc, spec):
    broken = copy.deepcopy(doc)
    broken["services"]["kafka"]["healthcheck"]["interval"] = ["10s"]
    broken["services"]["postgres"]["restart_policy"] = "always"
    found = compose.problems(broken, spec)
    assert any(p.startswith("schema: services/kafka/healthcheck/interval") for p in found)
    assert any("restart_policy" in p for p in found), found


@pytest.mark.parametrize("image", ["minio/minio", "minio/minio:latest", "minio/minio:stable"])
def test_an_unpinned_image_fails(doc, spec, image):
    doc["services"]["minio"]["image"] = image
    assert compose.problems(doc, spec) == [
        f"service minio: image {image!r} is not pinned to a version or digest"
    ]


def test_a_digest_pins_an_image(doc, spec):
    doc["services"]["minio"]["image"] = "minio/minio@sha256:" + "a" * 64
    assert compose.problems(doc, spec) == []


@pytest.mark.parametrize(
    ("service", "key", "value", "expected"),
    [
        ("postgres", "POSTGRES_PASSWORD", "postgres", "must be a required variable"),
        ("minio", "MINIO_ROOT_PASSWORD", "${MINIO_ROOT_PASSWORD:-minioadmin}", "a default"),
        ("dashboard", "RTAP_DASHBOARD_PG_PASSWORD", "${X:-}", "a default"),
    ],
)
def test_a_default_credential_fails(doc, spec, service, key, value, expected):
    doc["services"][service]["environment"][key] = value
    found = compose.problems(doc, spec)
    assert found and all(f"service {service}: {key}" in p for p in found), found
    assert any(expected in p for p in found), found


@pytest.mark.parametrize(
    ("var", "path", "value"),
    [
        ("AIRFLOW_CONN_ANALYTICS_DB", ("password",), "hunter22"),
        ("AIRFLOW_CONN_KAFKA_DEFAULT", ("extra", "sasl.password"), "hunter22"),
        ("AIRFLOW_CONN_KAFKA_DEFAULT", ("extra", "sasl.password"), "${KAFKA_CLIENT_PASSWORD:-x}"),
    ],
)
def test_a_literal_password_in_a_connection_fails(doc, spec, var, path, value):
    env = doc["services"]["airflow-api-server"]["environment"]
    conn = json.loads(env[var])
    (conn["extra"] if len(path) == 2 else conn)[path[-1]] = value
    env[var] = json.dumps(conn)
    field = ".".join(path)
    assert f"service airflow-api-server: {var} has a literal or defaulted {field}" in (
        compose.problems(doc, spec)
    )


def test_kafka_refuses_unauthenticated_connections(doc, spec):
    """Every broker listener is SASL, the brokers start through the SCRAM entrypoint and the
    platform's connection speaks SASL (tests/integration/test_compose_kafka.py runs them)."""
    kafka = compose._environment(doc["services"]["kafka"])
    assert set(kafka["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")) == {
        "CONTROLLER:SASL_PLAINTEXT",
        "SASL_PLAINTEXT:SASL_PLAINTEXT",
    }
    env = doc["services"]["kafka"]["environment"]
    env["KAFKA_LISTENERS"] = "SASL_PLAINTEXT://:9092,CONTROLLER://:9093,PLAINTEXT://:9094"
    env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"] = (
        "CONTROLLER:PLAINTEXT,SASL_PLAINTEXT:SASL_PLAINTEXT"
    )
    del doc["services"]["kafka-3"]["entrypoint"]
    del doc["services"]["kafka-2"]["environment"]["RTAP_KAFKA_CLIENT_PASSWORD"]
    api = doc["services"]["airflow-api-server"]["environment"]
    conn = json.loads(api["AIRFLOW_CONN_KAFKA_DEFAULT"])
    del conn["extra"]["security.protocol"]
    api["AIRFLOW_CONN_KAFKA_DEFAULT"] = json.dumps(conn)
    found = compose.problems(doc, spec)
    for problem in (
        "service kafka: listener CONTROLLER is PLAINTEXT, which accepts unauthenticated "
        "connections (use SASL_PLAINTEXT or SASL_SSL)",
        "service kafka: listener PLAINTEXT is PLAINTEXT, which accepts unauthenticated "
        "connections (use SASL_PLAINTEXT or SASL_SSL)",
        "service kafka-3: Kafka does not start through /rtap/kafka-entrypoint.sh",
        "service kafka-2: lacks RTAP_KAFKA_CLIENT_PASSWORD",
        "service airflow-api-server: AIRFLOW_CONN_KAFKA_DEFAULT has no SASL security.protocol "
        "(the brokers refuse other clients)",
    ):
        assert problem in found, found


def test_a_filled_env_example_fails():
    assert compose.filled_examples("# comment\nPOSTGRES_PASSWORD=\nMINIO_ROOT_PASSWORD=x\n") == [
        ".env.example: MINIO_ROOT_PASSWORD has a value; leave credentials empty"
    ]


def test_a_missing_service_fails(doc, spec):
    del doc["services"]["kafka"]
    for svc in doc["services"].values():  # keep the file valid otherwise
        (svc.get("depends_on") or {}).pop("kafka", None)
    found = compose.problems(doc, spec)
    assert any("names host 'kafka', which is not a service" in p for p in found), found


def test_a_wrong_port_fails(doc, spec):
    env = doc["services"]["dashboard"]["environment"]
    env["RTAP_DASHBOARD_S3_ENDPOINT"] = "http://minio:9999"
    assert compose.problems(doc, spec) == [
        "service dashboard: RTAP_DASHBOARD_S3_ENDPOINT names minio:9999, a port minio does not serve"
    ]


def test_settings_that_differ_from_the_no_docker_stack_fail(doc, spec):
    doc["services"]["dashboard"]["environment"]["RTAP_DASHBOARD_PG_USER"] = "rtap"
    del doc["services"]["airflow-api-server"]["environment"]["AIRFLOW_CONN_KAFKA_DEFAULT"]
    doc["services"]["airflow-scheduler"]["environment"][
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT"
    ] = "300"
    found = compose.problems(doc, spec)
    assert (
        "service dashboard: RTAP_DASHBOARD_PG_USER='rtap', devstack uses 'rtap_dashboard'" in found
    )
    assert "service airflow-api-server: missing connection(s) AIRFLOW_CONN_KAFKA_DEFAULT" in found
    assert (
        "service airflow-scheduler: AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT='300', "
        "devstack uses 90" in found
    )


def test_an_airflow_service_holding_what_its_role_does_not_need_fails(doc, spec):
    """The split of devstack/environment.py AIRFLOW_COMPONENT_SECRETS: connections and the
    users' passwords on the API server (and the init) only, the signing keys not on the DAG
    processor, the database on every service."""
    services = doc["services"]
    api = services["airflow-api-server"]["environment"]
    services["airflow-scheduler"]["environment"]["AIRFLOW_CONN_LAKE_S3"] = api[
        "AIRFLOW_CONN_LAKE_S3"
    ]
    services["airflow-triggerer"]["environment"]["AIRFLOW_ADMIN_PASSWORD"] = api[
        "AIRFLOW_ADMIN_PASSWORD"
    ]
    services["airflow-dag-processor"]["environment"]["AIRFLOW__API_AUTH__JWT_SECRET"] = api[
        "AIRFLOW__API_AUTH__JWT_SECRET"
    ]
    del services["airflow-scheduler"]["environment"]["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert sorted(compose.problems(doc, spec)) == [
        "service airflow-dag-processor: holds AIRFLOW__API_AUTH__JWT_SECRET, which its role "
        "does not need",
        "service airflow-scheduler: holds connection(s) AIRFLOW_CONN_LAKE_S3; only "
        "airflow-api-server holds them (tasks get theirs from it)",
        "service airflow-scheduler: lacks AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
        "service airflow-triggerer: holds the Airflow users' AIRFLOW_ADMIN_PASSWORD",
    ]


def test_the_scale_out_profiles_resolve_to_a_cluster(doc):
    default = compose.resolve(doc, {})
    assert not {"kafka-2", "kafka-3", "spark-master", "spark-worker"} & set(default["services"])
    scaled = compose.resolve(doc, compose.SCALE_OUT)
    assert {"kafka-2", "kafka-3", "spark-master", "spark-worker"} <= set(scaled["services"])
    env = compose._environment(scaled["services"]["airflow-api-server"])
    kafka = json.loads(env["AIRFLOW_CONN_KAFKA_DEFAULT"])["extra"]["bootstrap.servers"]
    assert kafka.split(",") == ["kafka:9092", "kafka-2:9092", "kafka-3:9092"]
    assert json.loads(env["AIRFLOW_CONN_SPARK_DEFAULT"])["host"] == "spark://spark-master:7077"
    for broker in ("kafka", "kafka-2", "kafka-3"):
        benv = compose._environment(scaled["services"][broker])
        assert benv["KAFKA_DEFAULT_REPLICATION_FACTOR"] == "3"
        assert benv["KAFKA_MIN_INSYNC_REPLICAS"] == "2"
        assert benv["KAFKA_CONTROLLER_QUORUM_VOTERS"].count("@") == 3
    ids = {
        compose._environment(scaled["services"][b])["KAFKA_NODE_ID"]
        for b in ("kafka", "kafka-2", "kafka-3")
    }
    assert ids == {"1", "2", "3"}


def test_a_scale_out_endpoint_without_its_service_fails(doc, spec):
    del doc["services"]["kafka-3"]
    assert sorted(compose.problems(doc, spec)) == [
        "scale-out: service airflow-api-server: AIRFLOW_CONN_KAFKA_DEFAULT.bootstrap.servers "
        "names host 'kafka-3', which is not a service",
        "scale-out: service airflow-init: AIRFLOW_CONN_KAFKA_DEFAULT.bootstrap.servers "
        "names host 'kafka-3', which is not a service",
    ]


@pytest.mark.parametrize(
    ("name", "writes"),
    [("stream-writer", "STREAM_WRITES"), ("warehouse-writer", "WAREHOUSE_WRITES")],
)
def test_compose_policies_are_the_no_docker_stacks(name, writes):
    from include import pipeline
    from include.lake import s3

    path = compose.ROOT / "docker" / "policies" / f"{name}.json"
    assert json.loads(path.read_text()) == s3.writer_policy(pipeline.BUCKET, getattr(s3, writes))


def test_the_compose_dashboard_reads_only_the_warehouse_as_in_the_no_docker_stack():
    from include import pipeline
    from include.lake import s3

    path = compose.ROOT / "docker" / "policies" / "dashboard-reader.json"
    policy = json.loads(path.read_text())
    assert policy == s3.read_only_policy(pipeline.BUCKET, s3.DASHBOARD_READS)
    assert policy["Statement"][1]["Resource"] == ["arn:aws:s3:::lake/warehouse/*"]


CHECK = compose.ROOT / "docker" / "check-credentials.sh"


def _check(env: dict[str, str]):
    import subprocess

    return subprocess.run(
        ["bash", str(CHECK)], env={"PATH": "/usr/bin:/bin", **env}, capture_output=True, text=True
    )


# (name, value, why it is refused or None): one table for both stacks' checks.
CREDENTIAL_CASES = (
    ("POSTGRES_PASSWORD", "x7Vq2mLr9PzT4kWd", None),
    ("MINIO_ROOT_USER", "lake-root", None),  # an identifier: no minimum length
    ("STREAM_S3_ACCESS_KEY", "stream-1", None),
    ("MINIO_ROOT_PASSWORD", "minioadmin", "is a well-known default"),
    ("AIRFLOW_ADMIN_PASSWORD", "Admin", "is a well-known default"),
    ("MINIO_ROOT_USER", "minioadmin", "is a well-known default"),
    ("POSTGRES_PASSWORD", "short-pw", "is shorter than 12 characters"),
    ("ANALYTICS_DB_PASSWORD", "elevenchars", "is shorter than 12 characters"),
    ("STREAM_S3_SECRET_KEY", "", "is empty"),
)


@pytest.mark.parametrize(("name", "value", "says"), CREDENTIAL_CASES)
def test_compose_and_the_local_stack_apply_one_weak_credential_rule(name, value, says):
    from devstack import secrets

    shell = _check({name: value})
    local = secrets.Rule.load().problem(name, value)
    if says is None:
        assert shell.returncode == 0 and local is None, shell.stderr
        return
    assert shell.returncode == 1 and f"{name} {says}" in shell.stderr
    assert local == f"{name} {says}"
    if value:
        assert value not in shell.stderr.replace(name, ""), "the value is never printed"


def test_every_credential_goes_through_the_check(doc):
    env = compose._environment(doc["services"]["credentials-check"])
    names = {
        line.split("=", 1)[0]
        for line in compose.ENV_EXAMPLE.read_text().splitlines()
        if line and not line.startswith("#")
    }
    assert names == set(env)
    mounted = doc["services"]["credentials-check"]["volumes"]
    assert "./docker/credential-rules.env:/credential-rules.env:ro" in mounted
    for name in ("postgres", "minio", "kafka"):
        assert doc["services"][name]["depends_on"]["credentials-check"] == {
            "condition": "service_completed_successfully"
        }


def test_a_long_running_service_needs_a_restart_policy_and_a_healthcheck(doc, spec):
    assert {"credentials-check", "minio-init", "airflow-init"} == compose.one_shots(doc)
    del doc["services"]["airflow-scheduler"]["restart"]
    del doc["services"]["airflow-triggerer"]["healthcheck"]
    assert compose.problems(doc, spec) == [
        "service airflow-scheduler: no restart policy (restart: always or unless-stopped)",
        "service airflow-triggerer: no healthcheck",
    ]
    assert "restart" not in doc["services"]["minio-init"]  # a one-shot runs once


def test_the_airflow_passwords_file_is_private_json_whatever_the_password(tmp_path, doc):
    import os
    import subprocess
    import sys

    path = tmp_path / "passwords.json"
    path.write_text("{}")
    os.chmod(path, 0o644)  # an old, readable file is replaced by a private one
    from include.airflow_users import PASSWORD_VARIABLES, users_setting

    password = 'a"quote\\back$lash and spaces'
    env = {var: f"{password} {user}" for user, var in PASSWORD_VARIABLES.items()}

    def write(**override):
        return subprocess.run(
            [sys.executable, "-m", "include.airflow_users", str(path)],
            cwd=compose.ROOT,
            env={"PATH": os.environ["PATH"], **env, **override},
            capture_output=True,
            text=True,
        )

    refused = write(AIRFLOW_VIEWER_PASSWORD="")
    assert refused.returncode == 2 and "AIRFLOW_VIEWER_PASSWORD" in refused.stderr
    done = write()
    assert done.returncode == 0, done.stderr
    assert json.loads(path.read_text()) == {u: f"{password} {u}" for u in PASSWORD_VARIABLES}
    assert path.stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.glob(".*partial"))
    for name in ("airflow-init", "airflow-api-server"):
        command = " ".join(doc["services"][name]["command"])
        assert "python -m include.airflow_users /opt/airflow/passwords.json" in command
        assert "printf" not in command and "PASSWORD" not in command
    airflow_env = compose._environment(doc["services"]["airflow-api-server"])
    assert airflow_env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS"] == users_setting()
    assert set(PASSWORD_VARIABLES.values()) <= set(airflow_env)


def test_a_secret_on_a_command_line_fails(doc, spec):
    doc["services"]["minio-init"]["entrypoint"] = [
        "sh",
        "-c",
        'mc alias set local http://minio:9000 "$$MINIO_ROOT_USER" "$${MINIO_ROOT_PASSWORD}"',
    ]
    doc["services"]["postgres"]["healthcheck"]["test"] = "pg_isready -U ${POSTGRES_PASSWORD:?x}"
    found = compose.problems(doc, spec)
    assert (
        "service minio-init: entrypoint puts MINIO_ROOT_PASSWORD, MINIO_ROOT_USER on a command "
        "line (pass it in the environment or a file)" in found
    )
    assert any(p.startswith("service postgres: healthcheck puts POSTGRES_PASSWORD") for p in found)
    assert "service minio-init: does not provision the bucket 'lake'" in found


@pytest.mark.parametrize("port", ["8501:8501", "0.0.0.0:8501:8501", {"target": 8501}])
def test_a_port_published_beyond_loopback_fails(doc, spec, port):
    doc["services"]["dashboard"]["ports"] = [port]
    assert compose.problems(doc, spec) == [
        f"service dashboard: port {port} is published beyond 127.0.0.1"
    ]


def test_the_postgres_init_script_keeps_passwords_off_psql_s_command_line():
    script = (compose.ROOT / "docker" / "postgres-init.sh").read_text()
    psql = script[script.index("psql ") : script.index("<<'SQL'")]
    assert "PASSWORD" not in psql and "-v " in psql  # ON_ERROR_STOP only
    getenv = [line.split()[-1] for line in script.splitlines() if line.startswith("\\getenv ")]
    assert getenv == ["AIRFLOW_DB_PASSWORD", "ANALYTICS_DB_PASSWORD", "DASHBOARD_DB_PASSWORD"]


def test_spark_beyond_loopback_without_authentication_fails(doc, spec):
    env = doc["services"]["airflow-api-server"]["environment"]  # the tasks' connections
    conn = json.loads(env["AIRFLOW_CONN_SPARK_DEFAULT"])
    del conn["password"]
    env["AIRFLOW_CONN_SPARK_DEFAULT"] = json.dumps(conn)
    doc["services"]["spark-worker"]["command"] = [
        "spark-class",
        "org.apache.spark.deploy.worker.Worker",
        "spark://spark-master:7077",
    ]
    found = compose.problems(doc, spec)
    assert (
        "service airflow-scheduler: the Spark driver binds 0.0.0.0 but spark_default has no "
        "password (the cluster's spark.authenticate secret)" in found
    )
    assert (
        "service spark-worker: a Spark daemon not started by include.spark.daemon with "
        "SPARK_AUTH_SECRET (it would accept unauthenticated peers)" in found
    )


def test_a_spark_daemon_gets_its_secret_from_a_private_file_not_its_command_line(tmp_path):
    import os
    import stat

    from include.spark import daemon

    path = daemon.write_auth_file("cluster-secret-0123456789", str(tmp_path))
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert "spark.authenticate.secret=cluster-secret-0123456789" in Path(path).read_text()
    argv = daemon.command(
        "/spark", "org.apache.spark.deploy.master.Master", path, ["--port", "7077"]
    )
    assert argv == [
        "/spark/bin/spark-class",
        "org.apache.spark.deploy.master.Master",
        "--properties-file",
        path,
        "--port",
        "7077",
    ]
    with pytest.raises(SystemExit, match="set SPARK_AUTH_SECRET"):
        daemon.main(["org.apache.spark.deploy.master.Master"])
