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


class RecordingAdmin:
    """Stands in for minio.MinioAdmin: records the admin API calls provision makes."""

    def __init__(self):
        self.calls = []

    def policy_add(self, name, policy):
        self.calls.append(("policy_add", name, policy))

    def user_add(self, access, secret):
        self.calls.append(("user_add", access, secret))

    def policy_set(self, name, user):
        self.calls.append(("policy_set", name, user))


def test_provision_creates_the_bucket_and_binds_each_role_to_its_policy(client):
    from include.lake import provision, s3

    admin = RecordingAdmin()
    keys = {r.name: (f"{r.name}-key", f"{r.name}-secret-0123456789") for r in provision.ROLES}
    provision.provision(admin, client, "lake", keys)
    provision.provision(admin, client, "lake", keys)  # again: the same calls, no error
    assert [b["Name"] for b in client.list_buckets()["Buckets"]] == ["lake"]
    first = admin.calls[: len(admin.calls) // 2]
    assert first == admin.calls[len(admin.calls) // 2 :]
    policies = {c[1]: c[2] for c in first if c[0] == "policy_add"}
    assert policies["rtap-read-only"] == s3.read_only_policy("lake", s3.DASHBOARD_READS)
    assert policies["rtap-stream-writer"] == s3.writer_policy("lake", s3.STREAM_WRITES)
    assert policies["rtap-warehouse-writer"] == s3.writer_policy("lake", s3.WAREHOUSE_WRITES)
    assert {(c[1], c[2]) for c in first if c[0] == "policy_set"} == {
        ("rtap-read-only", "dashboard-key"),
        ("rtap-stream-writer", "stream-key"),
        ("rtap-warehouse-writer", "warehouse-key"),
    }


def test_sandbox_twins_get_their_roles_policies_under_the_sandbox_root_only(client):
    """The tests' and benchmarks' users (the local stack's): each role's policy under it/*/,
    while the real users' policies stay without any grant there."""
    from include.lake import provision, s3

    admin = RecordingAdmin()
    keys = {r.name: (f"{r.name}-key", f"{r.name}-secret-0123456789") for r in provision.ROLES}
    twins = {r.name: (f"it-{r.name}-key", f"it-{r.name}-secret-012345") for r in provision.ROLES}
    provision.provision(admin, client, "lake", keys, sandbox=(s3.SANDBOX_ROOT, twins))
    policies = {c[1]: c[2] for c in admin.calls if c[0] == "policy_add"}
    assert policies["rtap-stream-writer"] == s3.writer_policy("lake", s3.STREAM_WRITES)
    assert "it/" not in str(policies["rtap-stream-writer"])
    assert policies["rtap-stream-writer-sandbox"] == s3.writer_policy(
        "lake", s3.STREAM_WRITES, roots=(s3.SANDBOX_ROOT,)
    )
    assert policies["rtap-read-only-sandbox"] == s3.read_only_policy(
        "lake", s3.DASHBOARD_READS, roots=(s3.SANDBOX_ROOT,)
    )
    bound = {(c[1], c[2]) for c in admin.calls if c[0] == "policy_set"}
    assert ("rtap-warehouse-writer-sandbox", "it-warehouse-key") in bound
    assert ("rtap-warehouse-writer", "warehouse-key") in bound
    assert len(bound) == 2 * len(provision.ROLES)


def test_provision_reads_keys_from_the_environment_and_names_a_missing_one():
    from include.lake import provision

    env = {
        f"{r.env}_{p}": f"{r.name}-{p}"
        for r in provision.ROLES
        for p in ("ACCESS_KEY", "SECRET_KEY")
    }
    assert provision.keys_from_env(env)["stream"] == ("stream-ACCESS_KEY", "stream-SECRET_KEY")
    del env["WAREHOUSE_S3_SECRET_KEY"]
    with pytest.raises(SystemExit, match="set WAREHOUSE_S3_SECRET_KEY"):
        provision.keys_from_env(env)
