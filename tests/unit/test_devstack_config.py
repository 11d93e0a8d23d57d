"""Bad settings and a bad environment stop with a message naming the setting."""

from __future__ import annotations

import base64
import socket
import uuid
from pathlib import Path

import pytest

from devstack import preflight, secrets, services, settings
from devstack.settings import Ports


def test_defaults_load():
    s = settings.load({})
    assert s.ports.kafka == 9092 and s.state_dir.name == ".state"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"RTAP_KAFKA_PORT": "ninety"}, "RTAP_KAFKA_PORT"),
        ({"RTAP_PG_PORT": "80"}, "RTAP_PG_PORT"),
        ({"RTAP_S3_PORT": "5432"}, "ports for s3 and postgres are both 5432"),
        ({"RTAP_PG_PORT": "9000"}, "both 9000; set RTAP_PG_PORT"),
        ({"RTAP_S3_LINK_PORT": "8474"}, "toxiproxy are both 8474; set RTAP_TOXIPROXY_PORT"),
        ({"RTAP_SPARK_MASTER": "yarn"}, "RTAP_SPARK_MASTER"),
        ({"RTAP_SCHEDULES": "sometimes"}, "RTAP_SCHEDULES"),
    ],
)
def test_bad_setting_is_named(env, named):
    with pytest.raises(settings.SettingError, match=named):
        settings.load(env)


def test_make_run_turns_schedules_on_unless_told_off():
    assert settings.load({}).schedules is True
    assert settings.load({"RTAP_SCHEDULES": "OFF"}).schedules is False


def test_state_dir_is_configurable(tmp_path):
    s = settings.load({"RTAP_STATE_DIR": str(tmp_path / "x"), "RTAP_AIRFLOW_PORT": "18080"})
    assert s.state_dir == tmp_path / "x" and s.airflow_url.endswith(":18080")


def test_every_port_of_a_stack_moves_airflows_own_servers_included():
    """Two stacks side by side (two checkouts): every port has a setting, Airflow's task log
    servers and scheduler health check included (Airflow's defaults would collide)."""
    from devstack import environment

    moved = {settings.port_variable(n): str(p + 20000) for n, p in Ports().as_dict().items()}
    other = settings.load(moved)
    assert not set(other.ports.as_dict().values()) & set(Ports().as_dict().values())
    airflow = environment.airflow_config(other)
    assert airflow["AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT"] == "28793"
    assert airflow["AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT"] == "28794"
    assert airflow["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT"] == "28974"
    assert airflow["AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_HOST"] == "127.0.0.1"
    assert settings.port_variable("postgres") == "RTAP_PG_PORT"
    with pytest.raises(settings.SettingError, match="RTAP_AIRFLOW_WORKER_LOGS_PORT"):
        settings.load({"RTAP_AIRFLOW_WORKER_LOGS_PORT": "8080"})


def test_the_drivers_class_path_names_the_operators_jar_before_it_is_built(tmp_path):
    """A stack started on a new state dir builds the stream's JVM operators during `up`, after
    its environment (the scheduler's, the drivers') was made: the jar must be in it anyway
    (a stack on a new state dir crash-looped its stream on 'JavaPackage' object is not callable)."""
    from devstack import environment

    s = settings.load({"RTAP_STATE_DIR": str(tmp_path / "new")})
    assert not s.operators_jar.exists()
    assert environment.spark_jars(s)[-1] == str(s.operators_jar)


def test_secrets_generated_once_private_and_env_wins(tmp_path):
    path = tmp_path / "secrets.env"
    first = secrets.load_or_create(path, env={})
    assert path.stat().st_mode & 0o777 == 0o600
    assert secrets.load_or_create(path, env={}) == first
    overridden = secrets.load_or_create(path, env={"RTAP_PG_PASSWORD": "a-strong-value-123"})
    assert overridden.pg_password == "a-strong-value-123"
    assert first.pg_password not in repr(first)


@pytest.mark.parametrize("weak", ["admin", "minioadmin", "short"])
def test_default_or_weak_credentials_are_refused(tmp_path, weak):
    with pytest.raises(secrets.SecretError, match="RTAP_S3_SECRET_KEY"):
        secrets.load_or_create(tmp_path / "s.env", env={"RTAP_S3_SECRET_KEY": weak})


@pytest.mark.parametrize(
    ("text", "major"),
    [
        ('openjdk version "17.0.15" 2025-04-15', 17),
        ('java version "1.8.0_392"', 8),
        ('openjdk version "25" 2025-09-16', 25),
        ("garbage", None),
    ],
)
def test_java_version_parsing(text, major):
    assert preflight.parse_java_major(text) == major


def test_old_java_is_refused(tmp_path):
    java = tmp_path / "bin" / "java"
    java.parent.mkdir()
    java.write_text("#!/bin/sh\necho 'java version \"1.8.0_392\"' >&2\n")
    java.chmod(0o755)
    with pytest.raises(preflight.PreflightError, match=r"Java 17\+ is required.*version 8"):
        preflight.check_java(str(tmp_path))


def test_missing_java_is_refused(tmp_path):
    with pytest.raises(preflight.PreflightError, match="none was found"):
        preflight.check_java(str(tmp_path / "nope"))


def test_port_in_use_names_setting_and_holder():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(
            preflight.PreflightError, match=f"port {port} for kafka.*RTAP_KAFKA_PORT"
        ) as err:
            preflight.check_ports({"kafka": port})
        assert "pid" in str(err.value) or "another process" in str(err.value)


def test_not_enough_disk(tmp_path):
    with pytest.raises(preflight.PreflightError, match="GB free"):
        preflight.check_disk(tmp_path, 10**9)


def test_the_dashboard_gets_only_its_read_only_credentials(tmp_path):
    from devstack import environment
    from include.dashboard.config import from_env

    s = settings.load({"RTAP_STATE_DIR": str(tmp_path)})
    creds = secrets.load_or_create(tmp_path / "secrets.env", env={})
    env = environment.dashboard_env(s, creds)
    values = set(env.values())
    assert creds.dashboard_db_password in values and creds.dashboard_s3_secret_key in values
    for other in (
        creds.pg_password,
        creds.pg_superuser_password,
        creds.s3_secret_key,
        creds.airflow_admin_password,
    ):
        assert other not in values
    cfg = from_env(env)
    assert (cfg.pg.user, cfg.warehouse) == (environment.DASHBOARD_DB_USER, "s3://lake/warehouse")
    assert cfg.s3.access_key == creds.dashboard_s3_access_key


def test_the_pipelines_s3_connections_are_per_service_users_never_root(tmp_path):
    import json

    from devstack import environment
    from include import connections

    s = settings.load({"RTAP_STATE_DIR": str(tmp_path)})
    creds = secrets.load_or_create(tmp_path / "secrets.env", env={})
    env = environment.connection_env(s, creds)

    def login(cid: str) -> tuple[str, str]:
        conn = json.loads(env[f"AIRFLOW_CONN_{cid.upper()}"])
        return conn["login"], conn["password"]

    assert login(connections.S3) == (creds.stream_s3_access_key, creds.stream_s3_secret_key)
    assert login(connections.WAREHOUSE_S3) == (
        creds.warehouse_s3_access_key,
        creds.warehouse_s3_secret_key,
    )
    assert creds.s3_secret_key not in " ".join(env.values()), "MinIO's root key stays out"


def test_each_airflow_service_reads_only_its_roles_secrets_from_private_files(tmp_path):
    """No Airflow service holds a credential in its environment (its tasks inherit it): each
    names the private files of its role's secrets (Airflow's ``_CMD`` options), and only the
    API server the connections, which it serves to each task through the Execution API."""
    import dataclasses
    import json
    import shlex
    import stat
    import subprocess

    from devstack import environment

    s = settings.load({"RTAP_STATE_DIR": str(tmp_path)})
    creds = secrets.load_or_create(tmp_path / "secrets.env", env={})
    full = environment.stack_env(s, creds, base={"PATH": "/usr/bin:/bin"})
    hook = "http://alerts.example/hook"
    exported = {  # a developer's own exports
        **full,
        "RTAP_PG_PASSWORD": creds.pg_password,
        "AIRFLOW_CONN_ALERTS_WEBHOOK": hook,
    }
    environment.write_airflow_secrets(s, creds, base=exported)
    values = [v for v in dataclasses.asdict(creds).values()]
    for component, needs in environment.AIRFLOW_COMPONENT_SECRETS.items():
        env = environment.airflow_component_env(s, creds, component, exported)
        assert not [k for k, v in env.items() if any(secret in v for secret in values)], component
        commands = {k.removesuffix("_CMD"): v for k, v in env.items() if k.endswith("_CMD")}
        assert set(commands) == {environment.airflow_var(*o) for o in needs}, component
        for var, command in commands.items():  # what Airflow runs: the value, exactly
            read = subprocess.run(shlex.split(command), capture_output=True, text=True, check=True)
            assert read.stdout == full[var], var
            path = Path(shlex.split(command)[-1])
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
        assert (env.get("AIRFLOW__SECRETS__BACKEND") is not None) == (
            component == environment.CONNECTIONS_HOLDER
        )
        assert not [k for k in env if k.startswith("AIRFLOW_CONN_")], component
    served = json.loads(environment.connections_file(s).read_text())
    wanted = {
        k.removeprefix("AIRFLOW_CONN_").lower(): json.loads(v)
        for k, v in full.items()
        if k.startswith("AIRFLOW_CONN_")
    }
    assert served == {**wanted, "alerts_webhook": hook}  # theirs served too, from the file
    assert stat.S_IMODE(environment.airflow_secrets_dir(s).stat().st_mode) == 0o700


def test_the_devstacks_spark_runs_use_their_jobs_s3_user_never_root(tmp_path):
    """`make compact`, `make reconcile`, the benchmarks and the tests run the apps as Airflow
    does: each with the S3 user of its job's connection, under that user's policy."""
    from devstack import environment
    from devstack.services import Context
    from devstack.spark import submit_env
    from include.spark.jobs import JOBS, CompactJob, MaintainJob, ReconcileJob, StreamJob

    s = settings.load({"RTAP_STATE_DIR": str(tmp_path)})
    creds = secrets.load_or_create(tmp_path / "secrets.env", env={})
    ctx = Context(s, creds, {"PATH": "/usr/bin"})
    warehouse = (creds.warehouse_s3_access_key, creds.warehouse_s3_secret_key)
    stream = (creds.stream_s3_access_key, creds.stream_s3_secret_key)
    for job, user in ((CompactJob, warehouse), (MaintainJob, warehouse), (StreamJob, stream),
                      (ReconcileJob, stream)):  # fmt: skip
        env = submit_env(ctx, job)
        assert (env["AWS_ACCESS_KEY_ID"], env["AWS_SECRET_ACCESS_KEY"]) == user, job.APP
    for job in JOBS.values():
        assert creds.s3_secret_key not in submit_env(ctx, job).values(), job.APP
    # The tests' and benchmarks' context: the sandbox twin of the same role.
    box = Context(s, creds, {"PATH": "/usr/bin"}, sandbox=True)
    env = submit_env(box, CompactJob)
    assert env["AWS_ACCESS_KEY_ID"] == creds.sandbox_warehouse_s3_access_key
    with pytest.raises(ValueError, match="no S3 user for connection 'root'"):
        environment.s3_user(creds, "root")


def test_the_demo_history_is_the_days_before_today_each_a_whole_day():
    from datetime import date

    from devstack import demo

    days = demo.history_days(date(2026, 12, 2))
    assert days == [date(2026, 11, 29), date(2026, 11, 30), date(2026, 12, 1)]
    conf = demo.history_conf(days[0], seed=7)
    assert (conf["start"], conf["span_hours"], conf["rhythm"]) == ("2026-11-29T00:00:00Z", 24, True)


def test_a_kafka_cluster_id_never_reads_as_an_option(monkeypatch):
    # 0xF8 encodes as "-" first: kafka-storage's argument parser took such an id for an option.
    drawn = iter([uuid.UUID(bytes=b"\xf8" + bytes(15)), uuid.UUID(bytes=b"\x01" + bytes(15))])
    monkeypatch.setattr(services.uuid, "uuid4", lambda: next(drawn))
    cluster_id = services.new_cluster_id()
    assert cluster_id == base64.urlsafe_b64encode(b"\x01" + bytes(15)).decode().rstrip("=")
    assert len(cluster_id) == 22


def test_a_local_run_whose_driver_ran_out_of_heap_says_so(tmp_path):
    """``make compact`` and the other local runs: a failure names the heap it had when the
    driver's log says its heap ran out, and only then."""
    from devstack.spark import Submit, failed
    from include.spark.jobs import CompactJob

    job = CompactJob.parse(day="2026-11-20", lake_path="s3a://b/raw", warehouse="s3a://b/wh")
    log = tmp_path / "compact.log"
    log.write_text(
        "ERROR Executor: Exception in task 1.0\njava.lang.OutOfMemoryError: Java heap space\n"
    )
    error = str(failed(job, 52, log, Submit(extra_conf={"spark.driver.memory": "3g"})))
    assert "exit 52" in error and "ran out of heap (spark.driver.memory=3g)" in error
    assert "Spark's default" in str(failed(job, 52, log, Submit()))
    assert "raise MEMORY=" in str(failed(job, 52, log, Submit(heap_setting="MEMORY=")))
    log.write_text("py4j.protocol.Py4JNetworkError: Answer from Java side is empty\n")
    assert "heap" not in str(failed(job, 1, log, Submit()))
    assert "heap" not in str(failed(job, 1, tmp_path / "never-written.log", Submit()))
