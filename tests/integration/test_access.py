"""Every role against every resource on the real stack, with the role's own credentials: what
succeeds must be exactly what docs/deployment.md's tables ("Who may do what") say."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from pathlib import Path

import psycopg2
import pytest
from botocore.exceptions import ClientError
from psycopg2 import errors, sql

from devstack import environment
from include import connections

DOC = Path(__file__).resolve().parents[2] / "docs" / "deployment.md"


def documented(marker: str) -> tuple[list[str], dict[str, dict[str, str]]]:
    """The table after ``<!-- access:<marker> -->``: its columns, and row -> column -> cell,
    rows named by their first word."""
    lines = DOC.read_text().splitlines()
    start = lines.index(f"<!-- access:{marker} -->") + 1
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    header, body = rows[0], rows[2:]
    return header[1:], {r[0].split()[0]: dict(zip(header[1:], r[1:], strict=True)) for r in body}


def _ok(attempt: Callable[[], object]) -> bool:
    try:
        attempt()
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code")
        assert code == "AccessDenied", exc  # denied, not broken
        return False
    return True


def _s3_can(client, bucket: str, d: str, who: str) -> str:
    """What ``client`` may do under the probe directory ``d``: list, read, write or none."""
    can = {
        "list": _ok(lambda: client.list_objects_v2(Bucket=bucket, Prefix=d)),
        "read": _ok(lambda: client.get_object(Bucket=bucket, Key=d + "object")["Body"].read()),
        "write": _ok(lambda: client.put_object(Bucket=bucket, Key=d + who, Body=b"x")),
    }
    return ", ".join(k for k, v in can.items() if v) or "none"


def test_each_s3_user_reaches_exactly_the_documented_prefixes(ctx):
    """The real users and their sandbox twins (the tests' and benchmarks' users: the same
    policies under ``it/*/`` only) against the bucket's top-level prefixes and a sandbox's."""
    columns, table = documented("s3")
    s, sec, probe = ctx.settings, ctx.secrets, uuid.uuid4().hex[:12]
    users = {}
    for twin, word in ((False, ""), (True, "sandbox-")):
        users[f"{word}stream"] = environment.s3_endpoint(s, sec, connections.S3, twin)
        users[f"{word}warehouse"] = environment.s3_endpoint(s, sec, connections.WAREHOUSE_S3, twin)
        users[f"{word}dashboard"] = environment.dashboard_s3(s, sec, twin)
    assert set(table) == set(users), "a role of the table or of the stack is not in the other"
    prefixes = {
        c: c.strip("`/").replace("<id>", f"access-{probe}") if c.startswith("`") else "elsewhere"
        for c in columns
    }
    root, bucket = ctx.s3_root.client(), ctx.settings.bucket
    dirs = {c: f"{p}/_access-probe-{probe}/" for c, p in prefixes.items()}
    for d in dirs.values():
        root.put_object(Bucket=bucket, Key=d + "object", Body=b"probe")
    found: dict[str, dict[str, str]] = {}
    try:
        for name, endpoint in users.items():
            client = endpoint.client()
            found[name] = {c: _s3_can(client, bucket, d, name) for c, d in dirs.items()}
    finally:
        for d in dirs.values():
            for o in root.list_objects_v2(Bucket=bucket, Prefix=d).get("Contents", []):
                root.delete_object(Bucket=bucket, Key=o["Key"])
    assert found == table


def _connect(endpoint, dbname: str):
    return psycopg2.connect(connect_timeout=10, **{**endpoint.psycopg2_kwargs(), "dbname": dbname})


def _pg_ok(endpoint, dbname: str, statement: sql.Composable | None) -> bool:
    """Connect (and run ``statement`` in a read-write transaction, rolled back): True when
    Postgres allowed it, False when it refused for want of a privilege."""
    try:
        conn = _connect(endpoint, dbname)
    except psycopg2.OperationalError as exc:
        assert "permission denied" in str(exc), exc  # refused, not down
        return False
    try:
        with conn.cursor() as cur:
            cur.execute("BEGIN READ WRITE")  # the dashboard's read-only default is no privilege
            if statement is not None:
                cur.execute(statement)
        return True
    except errors.InsufficientPrivilege:
        return False
    finally:
        conn.rollback()
        conn.close()


def test_each_postgres_role_reaches_exactly_the_documented_databases_and_tables(ctx):
    columns, table = documented("postgres")
    s, sec = ctx.settings, ctx.secrets
    roles = {
        environment.ANALYTICS_DB_USER: environment.analytics_db(s, sec),
        environment.DASHBOARD_DB_USER: environment.dashboard_db(s, sec),
        environment.AIRFLOW_DB_USER: environment.airflow_db(s, sec),
    }
    assert set(table) == set(roles), "a role of the table or of the stack is not in the other"
    owner = _connect(roles[environment.ANALYTICS_DB_USER], environment.ANALYTICS_DB)
    with owner.cursor() as cur:
        cur.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1")
        tables = [sql.Identifier("public", t) for (t,) in cur.fetchall()]
    owner.close()
    assert len(tables) >= 10, tables  # the migrations' tables and the Iceberg catalog's

    def every(endpoint, template: str) -> str:
        allowed = {
            _pg_ok(endpoint, environment.ANALYTICS_DB, sql.SQL(template).format(t=t))
            for t in tables
        }
        assert len(allowed) == 1, f"some tables allow {template!r}, some do not"
        return "yes" if allowed.pop() else "no"

    probe = sql.Identifier("public", f"_access_probe_{uuid.uuid4().hex[:8]}")
    found = {}
    for name, endpoint in roles.items():
        analytics = _pg_ok(endpoint, environment.ANALYTICS_DB, None)
        cells = {
            "connect `analytics`": "yes" if analytics else "no",
            "select its tables": every(endpoint, "SELECT 1 FROM {t} LIMIT 0")
            if analytics
            else "no",
            "write its tables": (
                every(endpoint, "INSERT INTO {t} SELECT * FROM {t} WHERE false")
                if analytics
                else "no"
            ),
            "create tables": "yes"
            if _pg_ok(
                endpoint,
                environment.ANALYTICS_DB,
                sql.SQL("CREATE TABLE {} (i int)").format(probe),
            )
            else "no",
            "connect `airflow`": "yes" if _pg_ok(endpoint, environment.AIRFLOW_DB, None) else "no",
        }
        assert set(cells) == set(columns)
        found[name] = cells
    assert found == table


@pytest.mark.parametrize("marker", ["s3", "postgres"])
def test_the_documented_tables_parse(marker):
    """The tables the two tests above compare with are where they say (a moved marker or a
    changed layout fails here first, with a clearer message)."""
    columns, table = documented(marker)
    assert columns and table and all(len(r) == len(columns) for r in table.values())
