"""Weekly Iceberg maintenance of the warehouse: rewrite manifests, expire snapshots, remove
orphan files, for every table of the warehouse and marts namespaces.

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

import argparse
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from pyspark.sql import SparkSession

from include import pipeline
from include.analytics import store
from include.warehouse import catalog
from spark_apps.reports import write_report

log = logging.getLogger("maintain_warehouse")


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="maintain_warehouse", description=__doc__.split("\n")[0])
    p.add_argument("--warehouse", required=True)
    p.add_argument("--namespace", default=pipeline.WAREHOUSE_NAMESPACE)
    p.add_argument("--marts-namespace", default=pipeline.MARTS_NAMESPACE)
    p.add_argument("--pg-schema", default=pipeline.PG_SCHEMA)
    p.add_argument("--report", help="write the result here as JSON (a path or s3a:// URI)")
    p.add_argument("--snapshot-days", type=float, default=7.0)
    p.add_argument("--retain-last", type=int, default=5)
    p.add_argument("--orphan-days", type=float, default=3.0)
    args = p.parse_args(argv)
    if args.snapshot_days < 0:
        p.error("--snapshot-days must be >= 0")
    if args.orphan_days < 1:
        # Iceberg refuses shorter: a file of a write in progress is an orphan until it commits.
        p.error("--orphan-days must be >= 1")
    if args.retain_last < 1:
        p.error("--retain-last must be >= 1")
    for name in ("namespace", "marts_namespace", "pg_schema"):
        if not getattr(args, name).isidentifier():
            p.error(f"--{name.replace('_', '-')} must be a plain identifier")
    return args


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


def maintain(spark: SparkSession, table: str, args: argparse.Namespace) -> dict:
    now = datetime.now(UTC).replace(tzinfo=None)
    system = f"{catalog.CATALOG}.system"
    table = f"{catalog.CATALOG}.{table}"
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
        "expired_data_files": expired["deleted_data_files_count"],
        "expired_manifests": expired["deleted_manifest_files_count"],
        "orphan_files_removed": len(orphans),
        "manifests_rewritten": manifests["rewritten_manifests_count"],
        "manifests_added": manifests["added_manifests_count"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    args = parse_args(sys.argv[1:] if argv is None else argv)
    conn = store.connect({}, schema=args.pg_schema)  # libpq reads PG* from the environment
    catalog.ensure_catalog_tables(conn)
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
