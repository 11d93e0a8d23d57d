"""Weekly Iceberg maintenance of the warehouse: remove the audit branches of killed compaction
runs, rewrite manifests, expire snapshots, remove orphan files, for every table of the
warehouse and marts namespaces.

* ``rewrite_manifests``: regroups manifests so planning reads few of them (a new snapshot).
* ``expire_snapshots``: drops snapshots older than ``--snapshot-days`` (keeping at least
  ``--retain-last``) and the files only they referenced; time travel reaches back that far.
* ``remove_orphan_files``: deletes files under a table's location that no snapshot references
  and that are older than ``--orphan-days`` (e.g. what a killed compaction wrote); at least
  one day (Iceberg refuses less), as a file of a write in progress is an orphan until it
  commits.

Usage::

    spark-submit ... spark_apps/maintain_warehouse.py --warehouse s3a://lake/warehouse \\
        [--namespace analytics] [--marts-namespace marts] [--pg-schema public] \\
        [--snapshot-days 7] [--retain-last 5] [--orphan-days 3]

Writes its report as JSON to ``--report`` (per table: what each procedure removed or rewrote).
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from pyspark.sql import SparkSession

from include.analytics import migrations, store
from include.endpoints import PostgresEndpoint
from include.spark.jobs import MaintainJob
from include.warehouse import catalog
from spark_apps.reports import write_report

log = logging.getLogger("maintain_warehouse")


def tables(spark: SparkSession, namespace: str) -> list[str]:
    existing = {r[0] for r in spark.sql(f"SHOW NAMESPACES IN {catalog.CATALOG}").collect()}
    if namespace not in existing:
        return []
    return sorted(
        f"{namespace}.{r['tableName']}"
        for r in spark.sql(f"SHOW TABLES IN {catalog.CATALOG}.{namespace}").collect()
    )


def _ts(moment: datetime) -> str:
    return moment.strftime("TIMESTAMP '%Y-%m-%d %H:%M:%S'")


def remove_audit_branches(spark: SparkSession, table: str, opened_before: datetime) -> list[str]:
    """Drop the audit branches compaction runs left behind (a run drops its own when it ends;
    one killed on the way leaves it, holding its snapshot and files from the expiry): those
    opened before ``opened_before``. A younger one may be a run in progress, and is kept."""
    from spark_apps.compact_events import abandoned_audit_branches, drop_branch

    rows = spark.sql(f"SELECT name FROM {table}.refs WHERE type = 'BRANCH'").collect()
    left = abandoned_audit_branches([r[0] for r in rows], opened_before)
    for branch in left:
        drop_branch(spark, table, branch)
    return left


def maintain(spark: SparkSession, table: str, args: MaintainJob) -> dict:
    started = datetime.now(UTC)
    now = started.replace(tzinfo=None)
    system = f"{catalog.CATALOG}.system"
    table = f"{catalog.CATALOG}.{table}"
    abandoned = remove_audit_branches(
        spark, table, started - timedelta(hours=args.audit_grace_hours)
    )
    # Manifests first: the rewrite is a snapshot of its own, which the expiry then counts.
    manifests = spark.sql(f"CALL {system}.rewrite_manifests(table => '{table}')").first()
    expired = spark.sql(
        f"CALL {system}.expire_snapshots(table => '{table}', "
        f"older_than => {_ts(now - timedelta(days=args.snapshot_days))}, "
        f"retain_last => {args.retain_last})"
    ).first()
    orphans = spark.sql(
        f"CALL {system}.remove_orphan_files(table => '{table}', "
        f"older_than => {_ts(now - timedelta(days=args.orphan_days))})"
    ).collect()
    return {
        "audit_branches_removed": abandoned,
        "expired_data_files": expired["deleted_data_files_count"],
        "expired_manifests": expired["deleted_manifest_files_count"],
        "orphan_files_removed": len(orphans),
        "manifests_rewritten": manifests["rewritten_manifests_count"],
        "manifests_added": manifests["added_manifests_count"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = MaintainJob.from_argv(sys.argv[1:] if argv is None else argv)
    conn = store.connect(PostgresEndpoint.from_libpq_env(), schema=args.pg_schema)
    try:
        migrations.check(conn, args.pg_schema, aggregates=())  # the Iceberg catalog's tables
    except migrations.SchemaNotReady as exc:
        log.error("%s", exc)
        return 2
    finally:
        conn.close()
    builder = SparkSession.builder.appName("maintain_warehouse")
    for key, value in catalog.spark_conf(args.warehouse, args.pg_schema).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    try:
        report = {}
        for namespace in (args.namespace, args.marts_namespace):
            for table in tables(spark, namespace):
                report[table] = maintain(spark, table, args)
                log.info("%s: %s", table, report[table])
        if not report:
            log.warning("no warehouse tables yet: nothing to maintain")
        write_report(spark, args.report, "maintenance", report)
        return 0
    finally:
        spark.stop()


if __name__ == "__main__":
    sys.exit(main())
