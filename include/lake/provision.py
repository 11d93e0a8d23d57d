"""The lake bucket and its S3 users, one per role, each bound to its least-privilege policy.

One place for both stacks: the no-Docker stack calls :func:`provision` when MinIO starts
(``devstack/services.py``); compose's one-shot ``minio-init`` runs ``python -m
include.lake.provision``, which reads every key from its own environment. Secrets never reach
a command line: MinIO's Python SDK (``minio.MinioAdmin``, already a dependency) signs admin API
requests in-process, where ``mc alias set``/``mc admin user add`` take each secret as an
argument, readable in ``/proc/<pid>/cmdline`` by every process of the container.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from include.lake.s3 import (
    DASHBOARD_READS,
    STREAM_WRITES,
    WAREHOUSE_WRITES,
    ensure_bucket,
    read_only_policy,
    writer_policy,
)


@dataclass(frozen=True)
class Role:
    name: str
    policy: str  # the MinIO policy's name
    env: str  # <env>_ACCESS_KEY and <env>_SECRET_KEY hold its keys (compose, .env)
    reads: Sequence[str] = ()  # a reader's prefixes
    writes: Sequence[str] = ()  # a writer's prefixes (it lists and reads the bucket)

    def document(self, bucket: str, roots: Sequence[str] = ("",)) -> dict[str, Any]:
        if self.writes:
            return writer_policy(bucket, self.writes, roots=roots)
        return read_only_policy(bucket, self.reads, roots=roots)


# The dashboard reads the warehouse; the stream writes raw events, dead letters and its
# checkpoints; compaction reads the lake and writes the warehouse (docs/deployment.md).
ROLES = (
    Role("dashboard", "rtap-read-only", "DASHBOARD_S3", reads=DASHBOARD_READS),
    Role("stream", "rtap-stream-writer", "STREAM_S3", writes=STREAM_WRITES),
    Role("warehouse", "rtap-warehouse-writer", "WAREHOUSE_S3", writes=WAREHOUSE_WRITES),
)


SANDBOX_POLICY_SUFFIX = "-sandbox"


def provision(
    admin: Any,
    s3_client: Any,
    bucket: str,
    keys: Mapping[str, tuple[str, str]],
    sandbox: tuple[str, Mapping[str, tuple[str, str]]] | None = None,
) -> None:
    """Create ``bucket`` (with the root user's ``s3_client``) and, through ``admin`` (a
    ``minio.MinioAdmin``), each role's policy and user; ``keys`` maps a role's name to its
    (access key, secret key). ``sandbox``: (a root such as ``it/*/``, keys of each role's twin)
    for a stack that runs tests: each twin gets its role's policy under that root only (policy
    ``<name>-sandbox``), and the real users no grant there. Running it again changes nothing."""
    ensure_bucket(s3_client, bucket)
    users = [(role, role.policy, ("",), keys[role.name]) for role in ROLES]
    if sandbox is not None:
        root, twins = sandbox
        users += [
            (role, role.policy + SANDBOX_POLICY_SUFFIX, (root,), twins[role.name]) for role in ROLES
        ]
    for role, policy, roots, (access, secret) in users:
        admin.policy_add(policy, policy=role.document(bucket, roots))
        admin.user_add(access, secret)
        admin.policy_set(policy, user=access)


def keys_from_env(env: Mapping[str, str]) -> dict[str, tuple[str, str]]:
    """Each role's keys from ``<ROLE>_S3_ACCESS_KEY``/``<ROLE>_S3_SECRET_KEY``; a missing one
    stops with its name."""
    missing = [
        f"{role.env}_{part}"
        for role in ROLES
        for part in ("ACCESS_KEY", "SECRET_KEY")
        if not env.get(f"{role.env}_{part}")
    ]
    if missing:
        raise SystemExit(f"set {', '.join(missing)} (the S3 users' keys, see .env.example)")
    return {r.name: (env[f"{r.env}_ACCESS_KEY"], env[f"{r.env}_SECRET_KEY"]) for r in ROLES}


def main(argv: Sequence[str] | None = None) -> int:
    """Compose's ``minio-init``: the root user from ``MINIO_ROOT_USER``/``MINIO_ROOT_PASSWORD``,
    the roles' keys from the environment; only the endpoint and the bucket on the command line."""
    from minio import MinioAdmin
    from minio.credentials import StaticProvider

    from include.endpoints import S3Endpoint

    parser = argparse.ArgumentParser(prog="python -m include.lake.provision")
    parser.add_argument("--endpoint", required=True, help="host:port of the S3 server")
    parser.add_argument("--bucket", required=True)
    args = parser.parse_args(argv)
    env = os.environ
    root = [n for n in ("MINIO_ROOT_USER", "MINIO_ROOT_PASSWORD") if not env.get(n)]
    if root:
        raise SystemExit(f"set {', '.join(root)}")
    keys = keys_from_env(env)
    user, password = env["MINIO_ROOT_USER"], env["MINIO_ROOT_PASSWORD"]
    admin = MinioAdmin(
        endpoint=args.endpoint, credentials=StaticProvider(user, password), secure=False
    )
    s3 = S3Endpoint(f"http://{args.endpoint}", user, password).client()
    provision(admin, s3, args.bucket, keys)
    print(f"bucket {args.bucket}: users {', '.join(r.name for r in ROLES)} provisioned")
    return 0


if __name__ == "__main__":
    sys.exit(main())
