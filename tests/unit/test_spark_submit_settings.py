from __future__ import annotations

from include.spark.submit import BASE_CONF, pg_env, s3a_conf


def test_s3a_conf_for_a_local_http_endpoint():
    conf = s3a_conf("http://127.0.0.1:9000", None)
    assert conf["spark.hadoop.fs.s3a.endpoint"] == "http://127.0.0.1:9000"
    assert conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] == "false"
    assert conf["spark.hadoop.fs.s3a.endpoint.region"] == "us-east-1"


def test_s3a_conf_for_aws_has_no_endpoint():
    assert "spark.hadoop.fs.s3a.endpoint" not in s3a_conf(None, "eu-west-1")


def test_no_credentials_in_spark_conf():
    # Credentials travel as environment variables, never as --conf (which is logged).
    assert not any("secret" in k.lower() or "access.key" in k.lower() for k in BASE_CONF)


def test_pg_env_uses_libpq_names():
    env = pg_env("db", 5433, "u", "p", "analytics")
    assert env == {
        "PGHOST": "db",
        "PGPORT": "5433",
        "PGUSER": "u",
        "PGPASSWORD": "p",
        "PGDATABASE": "analytics",
    }


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
