"""An app's report (include/reports.py, spark_apps/reports.py): written as JSON where the caller
says, read back by one function; the operator passes the path and returns the report."""

from __future__ import annotations

import json

import boto3
import pytest
from moto import mock_aws

from include.reports import REPORT_URI_TEMPLATE, ReportMissing, read_report, split_s3_uri
from spark_apps.reports import write_report


def test_a_local_report_is_written_whole_and_read_back(tmp_path):
    path = tmp_path / "report.json"
    write_report(None, str(path), "app", {"ok": True, "rows": 3})  # no Spark for a local path
    assert read_report(path) == {"ok": True, "rows": 3}
    assert read_report(f"file://{path}") == {"ok": True, "rows": 3}
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"], "no partial file left"


def test_no_report_is_named_as_such(tmp_path):
    with pytest.raises(ReportMissing, match="ended before writing it"):
        read_report(tmp_path / "none.json")
    (tmp_path / "list.json").write_text("[1]")
    with pytest.raises(ValueError, match="not a JSON object"):
        read_report(tmp_path / "list.json")


def test_an_s3_report_is_read_with_the_callers_client():
    with mock_aws():
        client = boto3.client("s3", region_name="us-east-1")
        client.create_bucket(Bucket="lake")
        client.put_object(Bucket="lake", Key="_reports/d/t/1.json", Body=json.dumps({"n": 1}))
        assert read_report("s3a://lake/_reports/d/t/1.json", client) == {"n": 1}
        with pytest.raises(ReportMissing):
            read_report("s3a://lake/_reports/d/t/2.json", client)
    assert split_s3_uri("s3://b/k/x.json") == ("b", "k/x.json")
    with pytest.raises(ValueError, match="not an S3 object URI"):
        split_s3_uri("hdfs://b/k")


def test_the_operator_passes_a_report_path_once_and_returns_the_report(monkeypatch):
    from include.spark import submit

    monkeypatch.setenv("AIRFLOW_CONN_LAKE_S3", json.dumps({"conn_type": "aws", "login": "k"}))
    submitted: list[list[str]] = []
    op = submit.LakeSparkSubmitOperator(
        task_id="t", application="app.py", application_args=["--x", "1"], report=True
    )
    assert op.report_uri == REPORT_URI_TEMPLATE and "report_uri" in op.template_fields
    op.report_uri = "s3a://lake/_reports/d/t/1.json"  # as rendered
    monkeypatch.setattr(op, "_submit", lambda ctx, s3: submitted.append(op.application_args))
    monkeypatch.setattr(submit, "read_report", lambda uri, client: {"uri": uri})
    assert op.execute({}) == {"uri": "s3a://lake/_reports/d/t/1.json"}
    assert op.execute({}) == {"uri": "s3a://lake/_reports/d/t/1.json"}
    assert submitted[-1] == ["--x", "1", "--report", "s3a://lake/_reports/d/t/1.json"]
    plain = submit.LakeSparkSubmitOperator(task_id="p", application="app.py")
    assert plain.report_uri == ""


def test_a_failure_the_app_reported_is_not_retried_a_crash_is(monkeypatch):
    """The app exited non-zero after writing ``error`` in its report: the same input gives the
    same verdict, so the task fails without its retries. No report (a crash, a kill): the
    submit's own error stands and the retries apply."""
    from airflow.exceptions import AirflowException
    from airflow.sdk.exceptions import AirflowFailException

    from include.reports import ReportMissing
    from include.spark import submit

    monkeypatch.setenv("AIRFLOW_CONN_LAKE_S3", json.dumps({"conn_type": "aws", "login": "k"}))
    op = submit.LakeSparkSubmitOperator(task_id="t", application="app.py", report=True)
    op.report_uri = "s3a://lake/_reports/d/t/1.json"

    def failed_submit(ctx, s3):
        raise AirflowException("Cannot execute: spark-submit ... Error code is: 1.")

    monkeypatch.setattr(op, "_submit", failed_submit)
    monkeypatch.setattr(submit, "read_report", lambda uri, client: {"error": "no table x"})
    with pytest.raises(AirflowFailException, match="t: no table x"):
        op.execute({})

    def no_report(uri, client):
        raise ReportMissing(f"no report at {uri}")

    monkeypatch.setattr(submit, "read_report", no_report)
    with pytest.raises(AirflowException, match="Error code is: 1") as crash:
        op.execute({})
    assert not isinstance(crash.value, AirflowFailException)
    monkeypatch.setattr(submit, "read_report", lambda uri, client: {"status": "failed"})
    with pytest.raises(AirflowException) as other:
        op.execute({})
    assert not isinstance(other.value, AirflowFailException)


class _Driver:
    """What ``subprocess.Popen`` gives the provider's hook: the driver's output, its exit."""

    def __init__(self, lines: list[str], code: int) -> None:
        self.stdout, self.code = [f"{line}\n" for line in lines], code

    def wait(self) -> int:
        return self.code


@pytest.mark.parametrize(
    ("last_words", "code", "not_retried"),
    [
        ("java.lang.OutOfMemoryError: Java heap space", 52, True),
        ("java.lang.OutOfMemoryError: GC overhead limit exceeded", 52, True),
        # the machine's state at the time, not the input: the retries apply
        ("java.lang.OutOfMemoryError: unable to create native thread: possibly out of", 1, False),
        ("py4j.protocol.Py4JNetworkError: Answer from Java side is empty", 1, False),
    ],
)
def test_a_driver_out_of_heap_before_it_reported_is_not_retried(
    monkeypatch, last_words, code, not_retried
):
    """The driver's JVM died of its heap before the app could write its report: a retry at the
    same size would die the same way, so the task fails at once, naming the setting to raise
    (the DAG's param when it has one) and its value. Other deaths keep the retries."""
    from airflow.exceptions import AirflowException
    from airflow.providers.apache.spark.hooks import spark_submit as provider
    from airflow.sdk.exceptions import AirflowFailException

    from include.reports import ReportMissing
    from include.spark import submit

    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", '{"conn_type": "spark", "host": "local[2]"}')
    monkeypatch.setenv("AIRFLOW_CONN_LAKE_S3", json.dumps({"conn_type": "aws", "login": "k"}))
    output = [
        "26/12/04 16:00:00 ERROR SparkUncaughtExceptionHandler: Uncaught exception",
        last_words,
    ]
    monkeypatch.setattr(provider.subprocess, "Popen", lambda argv, **kw: _Driver(output, code))

    def no_report(uri, client):
        raise ReportMissing(f"no report at {uri}")

    monkeypatch.setattr(submit, "read_report", no_report)
    op = submit.LakeSparkSubmitOperator(
        task_id="compact",
        application="app.py",
        report=True,
        conf={"spark.driver.memory": "3g"},
        memory_param="driver_memory",
    )
    op.report_uri = "s3a://lake/_reports/d/t/1.json"
    # the provider's own submit, through our hook (_submit adds the endpoints' settings)
    monkeypatch.setattr(op, "_submit", lambda ctx, s3: submit.SparkSubmitOperator.execute(op, ctx))
    with pytest.raises(AirflowException, match=f"Error code is: {code}|heap") as failed:
        op.execute({})
    assert isinstance(failed.value, AirflowFailException) is not_retried
    if not_retried:
        message = str(failed.value)
        assert "spark.driver.memory=3g" in message and "driver_memory param" in message
    # the next try starts clean: a driver that failed otherwise is retried
    monkeypatch.setattr(provider.subprocess, "Popen", lambda argv, **kw: _Driver(["bye"], 1))
    with pytest.raises(AirflowException) as next_try:
        op.execute({})
    assert not isinstance(next_try.value, AirflowFailException)
