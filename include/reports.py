"""What a Spark app reports when it ends: one JSON document at a path its caller chooses.

Each app (reconcile, compaction, maintenance, replay, the lake report) takes ``--report <uri>``
and writes its result there as JSON before it exits (``spark_apps/reports.py``): a local
path when the local stack or a test runs it, ``s3a://<bucket>/_reports/...`` when Airflow
does (``LakeSparkSubmitOperator(report=True)`` reads it back and returns it, so it is the
task's XCom ``return_value``). Callers read it with :func:`read_report`; nothing parses an
app's output.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

# Under the bucket: one document per task try (every pipeline writer may write here).
REPORTS_PREFIX = "_reports"
# The report of an Airflow task, by the S3 URI template the operator renders (no ':' in it:
# Hadoop paths refuse one in a file name, and run ids have them).
REPORT_URI_TEMPLATE = (
    "s3a://{{ params.bucket }}/" + REPORTS_PREFIX + "/{{ dag.dag_id }}/{{ ti.task_id }}/"
    "{{ ti.id }}.json"
)


class ReportMissing(RuntimeError):
    """The app ended without writing its report (it failed before the end: see its log)."""


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3a://bucket/key`` (or ``s3://``) -> (bucket, key)."""
    scheme, sep, rest = uri.partition("://")
    if scheme not in ("s3", "s3a") or not sep or "/" not in rest:
        raise ValueError(f"not an S3 object URI: {uri!r}")
    bucket, _, key = rest.partition("/")
    return bucket, key


def read_report(uri: str | Path, s3_client: Any = None) -> dict[str, Any]:
    """The report an app wrote at ``uri``: a local path (or ``file://``), or an S3 URI read
    with ``s3_client`` (boto3)."""
    text = str(uri)
    try:
        if text.startswith(("s3://", "s3a://")):
            if s3_client is None:
                raise ValueError(f"reading {text} needs an S3 client")
            bucket, key = split_s3_uri(text)
            try:
                body = s3_client.get_object(Bucket=bucket, Key=key)["Body"].read()
            except s3_client.exceptions.NoSuchKey:
                raise FileNotFoundError(text) from None
        else:
            body = Path(text.removeprefix("file://")).read_bytes()
    except FileNotFoundError:
        raise ReportMissing(f"no report at {text}: the app ended before writing it") from None
    report = json.loads(body)
    if not isinstance(report, dict):
        raise ValueError(f"the report at {text} is not a JSON object")
    return report
