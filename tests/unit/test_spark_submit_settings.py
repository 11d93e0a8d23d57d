from __future__ import annotations

from pathlib import Path

import pytest

from include.spark.submit import BASE_CONF


def test_no_credentials_in_spark_conf():
    # Credentials travel as environment variables, never as --conf (which is logged).
    assert not any("secret" in k.lower() or "access.key" in k.lower() for k in BASE_CONF)


def test_connector_jars_from_list_or_dir(tmp_path):
    from include.spark.submit import connector_jars

    (tmp_path / "b.jar").write_bytes(b"")
    (tmp_path / "a.jar").write_bytes(b"")
    assert connector_jars({"RTAP_SPARK_JARS": "/x.jar,/y.jar"}) == "/x.jar,/y.jar"
    assert (
        connector_jars({"RTAP_SPARK_JARS_DIR": str(tmp_path)})
        == f"{tmp_path}/a.jar,{tmp_path}/b.jar"
    )
    assert connector_jars({}) == ""


def test_executor_env_file_is_private_holds_only_s3_credentials_and_is_removed():
    import os
    import stat

    from include.spark.submit import auth_properties, executor_env_file, is_local_master

    env = {
        "AWS_ACCESS_KEY_ID": "id",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t",
        "AWS_REGION": "us-east-1",
        "PGPASSWORD": "pg",
    }
    with executor_env_file(env) as path:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        lines = Path(path).read_text().splitlines()
    assert lines == [
        "spark.executorEnv.AWS_ACCESS_KEY_ID=id",
        "spark.executorEnv.AWS_SECRET_ACCESS_KEY=s3cr3t",
        "spark.executorEnv.AWS_REGION=us-east-1",
    ]
    assert not os.path.exists(path)
    # With the cluster's secret (the Spark connection's password): authentication on, in the
    # same private file, a backslash escaped as java.util.Properties reads it.
    with executor_env_file(env, "s\\cret-0123456789") as path:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        lines = Path(path).read_text().splitlines()
    assert lines[-2:] == [
        "spark.authenticate=true",
        "spark.authenticate.secret=s\\\\cret-0123456789",
    ]
    with pytest.raises(ValueError, match="line break"):
        auth_properties("two\nlines")
    assert auth_properties("") == ""
    assert is_local_master("local[*]") and is_local_master("local")
    assert not is_local_master("spark://127.0.0.1:7077")


def test_driver_and_its_ui_are_on_loopback_unless_the_deployment_says_otherwise():
    from include.spark.submit import driver_conf, driver_env

    assert driver_conf({}) == {
        "spark.driver.host": "127.0.0.1",
        "spark.driver.bindAddress": "127.0.0.1",
    }
    assert driver_env({}) == {"SPARK_LOCAL_IP": "127.0.0.1"}
    compose = {
        "RTAP_SPARK_DRIVER_HOST": "airflow-scheduler",
        "RTAP_SPARK_DRIVER_BIND_ADDRESS": "0.0.0.0",
    }
    assert driver_conf(compose)["spark.driver.host"] == "airflow-scheduler"
    assert driver_env(compose) == {"SPARK_LOCAL_IP": "0.0.0.0"}


def test_local_master_puts_the_jars_on_the_class_path_others_ship_them():
    from include.spark.submit import connector_classpath

    assert connector_classpath("local[2]", "/x.jar,/y.jar") == (None, "/x.jar:/y.jar")
    assert connector_classpath("spark://h:7077", "/x.jar,/y.jar") == ("/x.jar,/y.jar", None)
    assert connector_classpath("local[*]", "") == (None, None)


class _Started(Exception):
    pass


def test_spark_submit_gets_only_what_spark_needs_and_the_jobs_own_credentials(monkeypatch):
    """The provider's hook would start spark-submit with the task's whole environment: the
    Airflow database DSN, the Fernet key, every connection. Ours: an allow-list plus the
    operator's env_vars (the role's credentials from its connections)."""
    from airflow.providers.apache.spark.hooks import spark_submit as provider

    from include.spark.submit import LakeSparkSubmitOperator

    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", '{"conn_type": "spark", "host": "local[2]"}')
    for key, value in {
        "AIRFLOW__CORE__FERNET_KEY": "fernet-secret",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": "postgresql://airflow:db-secret@h/airflow",
        "AIRFLOW_CONN_WAREHOUSE_S3": '{"login": "wh", "password": "wh-secret"}',
        "AWS_SECRET_ACCESS_KEY": "root-secret",  # the task's own, not the job's
        "RTAP_PG_PASSWORD": "named-like-a-secret",
        "RTAP_SPARK_LOG_LEVEL": "WARN",
        "SPARK_LOCAL_DIRS": "/scratch",
        "PYSPARK_PYTHON": "/venv/bin/python",
        "LC_ALL": "C.UTF-8",
    }.items():
        monkeypatch.setenv(key, value)
    seen = {}

    def popen(argv, **kwargs):
        seen.update(argv=argv, env=kwargs["env"])
        raise _Started

    monkeypatch.setattr(provider.subprocess, "Popen", popen)
    op = LakeSparkSubmitOperator(
        task_id="t",
        application="app.py",
        env_vars={"AWS_SECRET_ACCESS_KEY": "stream-secret", "PGPASSWORD": "pg-secret"},
    )
    hook = op._get_hook()
    with pytest.raises(_Started):
        hook.submit("app.py")
    env = seen["env"]
    assert env["AWS_SECRET_ACCESS_KEY"] == "stream-secret" and env["PGPASSWORD"] == "pg-secret"
    assert {"PATH", "SPARK_LOCAL_DIRS", "PYSPARK_PYTHON", "LC_ALL", "RTAP_SPARK_LOG_LEVEL"} <= set(
        env
    )
    leaked = [k for k in env if k.startswith("AIRFLOW") or k == "RTAP_PG_PASSWORD"]
    assert leaked == []
    assert not {"fernet-secret", "db-secret", "wh-secret", "root-secret"} & set(env.values())
    assert "stream-secret" not in " ".join(seen["argv"])  # never on the command line


def test_a_local_master_s_python_workers_run_the_daemon_that_skips_zip_rereads():
    from include.spark.submit import PYTHON_DAEMON_CONF, master_conf

    assert master_conf("local[*]") == PYTHON_DAEMON_CONF
    assert master_conf("spark://127.0.0.1:7077") == {}  # a cluster's workers keep PySpark's
    module = PYTHON_DAEMON_CONF["spark.python.daemon.module"]
    root = Path(__file__).resolve().parents[2]
    assert root.joinpath(*module.split(".")).with_suffix(".py").is_file()


def test_the_daemon_s_fix_stops_invalidate_caches_from_reading_a_zip_again(tmp_path, monkeypatch):
    import sys
    import zipfile
    import zipimport

    from spark_apps import python_daemon

    archive = tmp_path / "lib.zip"
    with zipfile.ZipFile(archive, "w") as z:
        z.writestr("mod_in_zip.py", "X = 1\n")
    importer = zipimport.zipimporter(str(archive))
    reads = []
    real = zipimport._read_directory
    monkeypatch.setattr(zipimport, "_read_directory", lambda p: reads.append(p) or real(p))
    monkeypatch.setattr(
        zipimport.zipimporter, "invalidate_caches", zipimport.zipimporter.invalidate_caches
    )
    importer.invalidate_caches()
    before = len(reads)
    assert python_daemon.lazy_zip_invalidation() == (sys.version_info < (3, 12))
    importer.invalidate_caches()
    assert len(reads) == before  # no re-read of the directory
    assert importer.find_spec("mod_in_zip") is not None  # and the archive still imports
