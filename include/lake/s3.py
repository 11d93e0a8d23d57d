"""Small boto3 helpers for the lake bucket (S3 or an S3-compatible server such as MinIO); the
client comes from ``include.endpoints.S3Endpoint.client``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from botocore.exceptions import ClientError

from include.reports import REPORTS_PREFIX


def ensure_bucket(client: Any, bucket: str) -> bool:
    """Create ``bucket`` if it does not exist. Returns True if it was created."""
    try:
        client.head_bucket(Bucket=bucket)
        return False
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        if code not in ("404", "NoSuchBucket", "NotFound"):
            raise
    client.create_bucket(Bucket=bucket)
    return True


def count_objects(client: Any, bucket: str, prefix: str) -> int:
    paginator = client.get_paginator("list_objects_v2")
    return sum(page.get("KeyCount", 0) for page in paginator.paginate(Bucket=bucket, Prefix=prefix))


def read_only_policy(
    bucket: str, reads: Sequence[str] = (), roots: Sequence[str] = ("",)
) -> dict[str, Any]:
    """An S3 (IAM-style) policy that lists ``bucket`` and reads its objects, only those under
    ``<root><prefix>/`` for each prefix in ``reads`` when given, and writes nothing: for
    readers such as the dashboard (``DASHBOARD_READS``)."""
    if reads:
        objects = [f"arn:aws:s3:::{bucket}/{root}{prefix}/*" for root in roots for prefix in reads]
    else:
        objects = [f"arn:aws:s3:::{bucket}/*"]
    return {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Action": ["s3:GetBucketLocation", "s3:ListBucket"],
                "Resource": [f"arn:aws:s3:::{bucket}"],
            },
            {"Effect": "Allow", "Action": ["s3:GetObject"], "Resource": objects},
        ],
    }


# What the dashboard reads: the warehouse's marts (never raw events or dead-letter bytes).
DASHBOARD_READS = ("warehouse",)


# Where the integration tests and the benchmarks keep their own lakes (``it/<id>/`` with the
# lake's layout: raw/, dead_letter/, _checkpoints/, warehouse/); the local stack gives each S3
# role a sandbox twin whose policy is the role's under this root only (include/lake/provision.py),
# so their Spark runs go through the pipeline's policies, and the real users have no grant here.
SANDBOX_ROOT = "it/*/"


def sandbox_prefix(name: str) -> str:
    """The root of one sandbox: ``it/<name>``."""
    return SANDBOX_ROOT.replace("*", name).rstrip("/")


# What each service of the pipeline writes (prefixes of the bucket); see writer_policy.
# Both write their apps' reports (include/reports.py: reconcile and replay run as the stream's
# user, compaction and maintenance as the warehouse's).
STREAM_WRITES = ("raw", "dead_letter", "_checkpoints", REPORTS_PREFIX)
WAREHOUSE_WRITES = ("warehouse", REPORTS_PREFIX)


def writer_policy(
    bucket: str, writes: Sequence[str], roots: Sequence[str] = ("",)
) -> dict[str, Any]:
    """A least-privilege policy for one writer of the pipeline: list and read the bucket (the
    S3A connector probes paths and parents with HEAD and LIST), write and delete only under
    ``<root><prefix>/`` for each prefix in ``writes`` and each root (``""`` for the bucket's
    top; ``it/*/`` for the sandbox twins, whose sandboxes keep the same layout)."""
    objects = [f"arn:aws:s3:::{bucket}/{root}{prefix}/*" for root in roots for prefix in writes]
    # Airflow's operator has every task's app write its report under the bucket's _reports/
    # (include/reports.py), whatever the run's own paths: a writer under any root writes there.
    reports = f"arn:aws:s3:::{bucket}/{REPORTS_PREFIX}/*"
    if REPORTS_PREFIX in writes and reports not in objects:
        objects.append(reports)
    policy = read_only_policy(bucket)
    policy["Statement"][0]["Action"].append("s3:ListBucketMultipartUploads")
    policy["Statement"].append(
        {
            "Effect": "Allow",
            "Action": [
                "s3:PutObject",
                "s3:DeleteObject",
                "s3:AbortMultipartUpload",
                "s3:ListMultipartUploadParts",
            ],
            "Resource": objects,
        }
    )
    return policy
