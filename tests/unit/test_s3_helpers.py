"""Our boto3 helpers against moto (a fake: unit tests of our own adapter code only)."""

from __future__ import annotations

import pytest
from moto import mock_aws

from include.endpoints import S3Endpoint
from include.lake.s3 import count_objects, ensure_bucket


@pytest.fixture
def client():
    with mock_aws():
        yield S3Endpoint(access_key="k" * 16, secret_key="s" * 32).client()


def test_ensure_bucket_is_idempotent(client):
    assert ensure_bucket(client, "lake") is True
    assert ensure_bucket(client, "lake") is False
    assert [b["Name"] for b in client.list_buckets()["Buckets"]] == ["lake"]


def test_count_objects_by_prefix(client):
    ensure_bucket(client, "lake")
    for key in ("raw/a", "raw/b", "other/c"):
        client.put_object(Bucket="lake", Key=key, Body=b"x")
    assert count_objects(client, "lake", "raw/") == 2


def test_writer_policies_write_only_their_prefixes():
    from include.lake.s3 import STREAM_WRITES, WAREHOUSE_WRITES, writer_policy

    def writable(policy):
        return next(st["Resource"] for st in policy["Statement"] if "s3:PutObject" in st["Action"])

    assert writable(writer_policy("lake", STREAM_WRITES)) == [
        "arn:aws:s3:::lake/raw/*",
        "arn:aws:s3:::lake/dead_letter/*",
        "arn:aws:s3:::lake/_checkpoints/*",
        "arn:aws:s3:::lake/_reports/*",
    ]
    assert writable(writer_policy("lake", WAREHOUSE_WRITES, roots=("", "it/*/"))) == [
        "arn:aws:s3:::lake/warehouse/*",
        "arn:aws:s3:::lake/_reports/*",
        "arn:aws:s3:::lake/it/*/warehouse/*",
        "arn:aws:s3:::lake/it/*/_reports/*",
    ]
