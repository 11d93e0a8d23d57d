"""Our boto3 helpers against moto (a fake: unit tests of our own adapter code only)."""

from __future__ import annotations

import pytest
from moto import mock_aws

from include.lake.s3 import count_objects, ensure_bucket, s3_client


@pytest.fixture
def client():
    with mock_aws():
        yield s3_client(endpoint_url=None, access_key="k" * 16, secret_key="s" * 32)


def test_ensure_bucket_is_idempotent(client):
    assert ensure_bucket(client, "lake") is True
    assert ensure_bucket(client, "lake") is False
    assert [b["Name"] for b in client.list_buckets()["Buckets"]] == ["lake"]


def test_count_objects_by_prefix(client):
    ensure_bucket(client, "lake")
    for key in ("raw/a", "raw/b", "other/c"):
        client.put_object(Bucket="lake", Key=key, Body=b"x")
    assert count_objects(client, "lake", "raw/") == 2
