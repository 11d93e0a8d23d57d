"""The analytics database's schema: versioned SQL migrations with one owner.

Every table of the pipeline is created here and nowhere else: the numbered files beside this
module (``0001_analytics.sql`` ...), applied in order, each once per Postgres schema and
recorded in ``schema_migrations`` with a checksum; then the live aggregates' tables, made from
their declarations (``include/analytics/store.py``: the registry, with what
``--aggregate-modules`` adds), idempotently.

Applied once, by whoever starts the platform, never on a hot path:

* the local stack: ``make up`` (``devstack/services.py``, as the analytics role, so that the
  dashboard role's default privileges apply);
* compose: the ``airflow-init`` service (``python -m include.analytics.migrations
  --airflow-connection``);
* the ``stream_events`` DAG's ``migrate`` task, before every launch (a new ``pg_schema``, a
  module named in ``aggregate_modules``);
* the integration tests' and benchmarks' own schemas, when they make them.

The apps check instead of creating: :func:`check` names what is missing and how to apply it.
A file must not change once applied (its checksum is compared): a change is a new file.
Concurrent runs on one schema wait for each other (a transaction-level advisory lock).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from string import Template

from include.events.contract import MONEY_SQL_TYPE

HERE = Path(__file__).resolve().parent
TABLE = "schema_migrations"
# Values the SQL files name as $name (one place for each: the money type is the contract's).
VALUES = {"money": MONEY_SQL_TYPE}

_FILE = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
HOW_TO_APPLY = (
    "apply the migrations: `make up` (local stack), compose's airflow-init, the stream_events "
    "DAG's migrate task, or `python -m include.analytics.migrations --schema <schema>`"
)


class MigrationError(RuntimeError):
    """The migrations cannot be applied (a changed file, a gap in the numbers)."""


class SchemaNotReady(RuntimeError):
    """The schema lacks migrations or tables the caller needs; the message says which and how
    to apply them."""


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    sql: str

    @property
    def file(self) -> str:
        return f"{self.version:04d}_{self.name}.sql"

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def migrations(directory: Path = HERE) -> list[Migration]:
    """The versioned migrations, in order; their numbers run 1, 2, 3 ... without a gap."""
    found = []
    for path in sorted(directory.glob("*.sql")):
        m = _FILE.match(path.name)
        if not m:
            raise MigrationError(f"{path.name}: a migration is named NNNN_lower_case_name.sql")
        sql = Template(path.read_text()).substitute(VALUES)
        found.append(Migration(int(m.group(1)), m.group(2), sql))
    versions = [m.version for m in found]
    if versions != list(range(1, len(found) + 1)):
        raise MigrationError(f"migration numbers must run 1, 2, 3 ... without a gap: {versions}")
    return found


def latest() -> int:
    return len(migrations())


def _aggregates(aggregates: Iterable | None):
    from include.analytics import store

    return list(store.AGGREGATES.values() if aggregates is None else aggregates)


def migrate(conn, schema: str, aggregates: Iterable | None = None) -> list[str]:
    """Bring ``schema`` up to date on ``conn`` (psycopg2, e.g. ``store.connect(params,
    schema)``); the migrations it applied, by file name. ``aggregates``: the live aggregates
    whose tables to make (default: the registry)."""
    from psycopg2 import sql

    if not schema.isidentifier():
        raise MigrationError(f"Postgres schema {schema!r} is not a plain identifier")
    applied: list[str] = []
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (f"rtap-migrations:{schema}",))
        cur.execute(sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema)))
        cur.execute(sql.SQL("SET LOCAL search_path TO {}").format(sql.Identifier(schema)))
        cur.execute(
            f"""CREATE TABLE IF NOT EXISTS {TABLE} (
                    version    integer PRIMARY KEY,
                    name       text NOT NULL,
                    checksum   text NOT NULL,
                    applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        cur.execute(f"SELECT version, checksum FROM {TABLE}")
        done = dict(cur.fetchall())
        for m in migrations():
            if m.version in done:
                if done[m.version] != m.checksum:
                    raise MigrationError(
                        f"{m.file} changed after it was applied to schema "
                        f"{schema!r}: a change to the schema is a new migration file"
                    )
                continue
            cur.execute(m.sql)
            cur.execute(
                f"INSERT INTO {TABLE} (version, name, checksum) VALUES (%s, %s, %s)",
                (m.version, m.name, m.checksum),
            )
            applied.append(m.file)
        for aggregate in _aggregates(aggregates):
            cur.execute(aggregate.ddl())
    conn.commit()
    return applied


def check(conn, schema: str, aggregates: Iterable | None = None) -> None:
    """Raise :class:`SchemaNotReady` unless every migration and every aggregate's table is in
    ``schema`` (what an app runs before it moves any data)."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass(%s)", (f'"{schema}".{TABLE}',))
        version = 0
        if cur.fetchone()[0] is not None:
            cur.execute(f'SELECT coalesce(max(version), 0) FROM "{schema}".{TABLE}')
            version = cur.fetchone()[0]
        missing = []
        for aggregate in _aggregates(aggregates):
            cur.execute("SELECT to_regclass(%s)", (f'"{schema}".{aggregate.table}',))
            if cur.fetchone()[0] is None:
                missing.append(aggregate.table)
    conn.rollback()
    want = latest()
    if version < want or missing:
        what = [f"at migration {version} of {want}"] if version < want else []
        what += [f"no table {t}" for t in missing]
        raise SchemaNotReady(f"Postgres schema {schema!r}: {', '.join(what)}; {HOW_TO_APPLY}")


def main(argv: list[str] | None = None) -> int:
    import argparse
    import sys

    from include.analytics import store
    from include.endpoints import PostgresEndpoint

    p = argparse.ArgumentParser(
        prog="python -m include.analytics.migrations", description=__doc__.splitlines()[0]
    )
    p.add_argument("--schema", default="public")
    p.add_argument(
        "--aggregate-modules", default="", help="modules that register more live aggregates"
    )
    p.add_argument(
        "--airflow-connection",
        action="store_true",
        help="reach Postgres through Airflow's analytics_db connection (default: libpq's PG*)",
    )
    args = p.parse_args(argv)
    try:
        store.load_aggregate_modules(args.aggregate_modules)
    except ValueError as exc:
        p.error(str(exc))
    if args.airflow_connection:
        from include import connections

        endpoint = connections.postgres_endpoint()
    else:
        endpoint = PostgresEndpoint.from_libpq_env()
    conn = store.connect(endpoint, schema=args.schema)
    try:
        applied = migrate(conn, args.schema)
    except MigrationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    finally:
        conn.close()
    print(f"schema {args.schema}: at migration {latest()}; applied {', '.join(applied) or 'none'}")
    return 0
