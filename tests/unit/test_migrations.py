"""The analytics schema's migrations (include/analytics/migrations): one owner for every table."""

from __future__ import annotations

import re

import pytest

from include.analytics import migrations
from include.events.contract import MONEY_SQL_TYPE
from tests.conftest import ROOT


def test_migrations_are_numbered_without_a_gap_and_render_the_contracts_money_type():
    found = migrations.migrations()
    assert [m.version for m in found] == list(range(1, len(found) + 1))
    assert migrations.latest() == len(found) >= 4
    runs = next(m for m in found if "ingest_runs (" in m.sql)
    assert f"revenue       {MONEY_SQL_TYPE} NOT NULL" in runs.sql
    assert all("$" not in m.sql for m in found), "every $name is substituted"


def test_a_gap_or_a_misnamed_file_is_refused(tmp_path):
    (tmp_path / "0001_first.sql").write_text("SELECT 1;")
    (tmp_path / "0003_third.sql").write_text("SELECT 3;")
    with pytest.raises(migrations.MigrationError, match=r"without a gap: \[1, 3\]"):
        migrations.migrations(tmp_path)
    (tmp_path / "0003_third.sql").unlink()
    (tmp_path / "2-second.sql").write_text("SELECT 2;")
    with pytest.raises(migrations.MigrationError, match=r"2-second\.sql: a migration is named"):
        migrations.migrations(tmp_path)


def test_a_checksum_follows_the_text():
    a = migrations.Migration(1, "a", "CREATE TABLE t (x int);")
    assert a.checksum == migrations.Migration(1, "a", "CREATE TABLE t (x int);").checksum
    assert a.checksum != migrations.Migration(1, "a", "CREATE TABLE t (x bigint);").checksum


# Where a CREATE/ALTER may be written: the migrations; the live aggregates' declarations (their
# DDL is generated, applied by the migrations); the compaction's Iceberg tables (the warehouse,
# not the analytics database); tests that make a throw-away table to probe a rule.
DDL_ALLOWED = (
    "include/analytics/migrations/",
    "include/analytics/store.py",
    "spark_apps/compact_events.py",
    "tests/",
)
DDL = re.compile(r"\b(CREATE\s+(TABLE|INDEX|SCHEMA)|ALTER\s+TABLE|DROP\s+TABLE)\b", re.I)


def test_no_ddl_outside_the_migrations():
    offenders = []
    code = ("dags", "plugins", "include", "spark_apps", "devstack", "bench", "dashboard", "docker")
    for path in (p for top in code for p in (ROOT / top).rglob("*") if p.is_file()):
        rel = path.relative_to(ROOT).as_posix()
        if path.suffix in (".py", ".sql", ".sh") and not rel.startswith(DDL_ALLOWED):
            for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
                if DDL.search(line):
                    offenders.append(f"{rel}:{n}: {line.strip()}")
    assert offenders == []
