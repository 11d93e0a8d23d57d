"""Reconcile what producers sent with what the stream wrote: every event accounted for.

For the producer runs recorded in Postgres ``ingest_runs`` within ``[--since, --until)``, find
the lake and dead-letter rows at the Kafka coordinates each run was given (read through the
file sinks' metadata: committed files only) and account for every event: landed, dead-lettered,
a dropped duplicate copy, or missing; and events landed more than once
(``include/supervision/reconcile.py`` has the rules). Only the day partitions the runs' events
can be in are read (``read_days``), so an hourly run reads about ten days of the lake, not all
of it.

Usage::

    spark-submit ... spark_apps/reconcile.py --topic events \\
        --lake-path s3a://lake/raw/events --dead-letter-path s3a://lake/dead_letter/events \\
        --since 2026-11-25T00:00:00Z --until 2026-11-26T00:00:00Z

Prints a table and writes the report as JSON to ``--report``; exits 2 when anything is missing or
duplicated, 0 otherwise. Postgres is reached with libpq's ``PG*`` environment.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from datetime import UTC, date, datetime

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from include import pipeline
from include.analytics import migrations, store
from include.endpoints import PostgresEndpoint
from include.events.runs import DIGEST_MOD, id_hash
from include.spark.jobs import ReconcileJob
from include.supervision import control
from include.supervision.reconcile import (
    COLUMNS,
    Account,
    Found,
    Produced,
    ReadDays,
    account,
    lost_in_gaps,
    read_days,
    summarize,
)
from include.warehouse import runs as runs_table
from spark_apps.file_sinks import read_sink
from spark_apps.reports import write_report


def load_runs(
    topic: str,
    lake_path: str,
    since: datetime,
    until: datetime,
    pg_schema: str,
    pg: PostgresEndpoint,
) -> list[dict]:
    """The producer runs of ``topic`` recorded in ``[since, until)``, each with how many of
    its offsets lie in the retention gaps accepted for the stream that writes ``lake_path``."""
    conn = store.connect(pg, schema=pg_schema)
    try:
        migrations.check(conn, pg_schema, aggregates=())  # names what to run when it is not
        with conn.cursor() as cur:
            cur.execute(
                "SELECT run_id, events, by_kind, id_digest, offset_ranges, produced_at, seconds "
                "FROM ingest_runs "
                "WHERE topic = %s AND produced_at >= %s AND produced_at < %s ORDER BY produced_at",
                (topic, since, until),
            )
            rows = cur.fetchall()
            gaps = control.accepted_gaps(conn, topic, lake_path)
    finally:
        conn.close()
    return [
        {
            "run_id": r[0],
            "events": r[1],
            "by_kind": r[2],
            "id_digest": r[3],
            "ranges": r[4],
            "produced_at": r[5],
            "seconds": r[6],
            "lost_accepted": lost_in_gaps(r[4] or {}, gaps),
        }
        for r in rows
    ]


def expired(pg_schema: str, pg: PostgresEndpoint) -> tuple[list[str], list[date]]:
    """Raw files retention deleted, and days it deleted wholly before it recorded files."""
    conn = store.connect(pg, schema=pg_schema)
    try:
        return runs_table.expired_files(conn), runs_table.wholly_expired_days(conn)
    finally:
        conn.close()


def ranges_frame(spark: SparkSession, runs: list[dict]) -> DataFrame:
    rows = [
        (run["run_id"], int(p), int(lo), int(hi))
        for run in runs
        for p, spans in run["ranges"].items()
        for lo, hi in spans
    ]
    return spark.createDataFrame(rows, "run_id string, partition int, lo long, hi long")


def at_coordinates(frame: DataFrame, ranges: DataFrame) -> DataFrame:
    """Rows of ``frame`` whose (kafka_partition, kafka_offset) fall in a run's ranges."""
    r = F.broadcast(ranges)
    cond = (frame["kafka_partition"] == r["partition"]) & frame["kafka_offset"].between(
        r["lo"], r["hi"]
    )
    return frame.join(r, cond).drop("partition", "lo", "hi")


def digests(pairs: DataFrame) -> dict[str, str]:
    """Per run, the digest of its distinct event ids (as the producer computes it)."""

    def partial(rows):
        sums: dict[str, int] = {}
        for run_id, event_id in rows:
            sums[run_id] = (sums.get(run_id, 0) + id_hash(event_id)) % DIGEST_MOD
        return list(sums.items())

    out: dict[str, int] = {}
    for run_id, s in pairs.select("run_id", "event_id").rdd.mapPartitions(partial).collect():
        out[run_id] = (out.get(run_id, 0) + s) % DIGEST_MOD
    return {k: f"{v:032x}" for k, v in out.items()}


def read_lake(
    spark: SparkSession,
    lake_path: str,
    days: ReadDays | None,
    expired: tuple[Sequence[str], Sequence[date]] = ((), ()),
) -> DataFrame | None:
    """The lake's committed rows, of ``days`` only (``None``: every day)."""
    wanted = ReadDays.span(*days.lake) if days else ()
    return read_sink(spark, lake_path, skip_files=expired[0], skip_days=expired[1], days=wanted)


def read_dead_letters(
    spark: SparkSession, dead_path: str, days: ReadDays | None
) -> DataFrame | None:
    """The dead letters' committed rows, of ``days`` only (``None``: every day)."""
    wanted = ReadDays.span(*days.dead_letters) if days else ()
    return read_sink(
        spark, dead_path, days=wanted, day_partition=pipeline.DEAD_LETTER_DAY_PARTITION
    )


def measure(
    spark: SparkSession,
    runs: list[dict],
    lake_path: str,
    dead_path: str,
    expired: tuple[Sequence[str], Sequence[date]] = ((), ()),
    days: ReadDays | None = None,
) -> dict:
    """Per run, what the lake and the dead-letter path hold at its coordinates (``expired``:
    raw files retention removed, and days it removed wholly before it recorded files; their
    events count as missing). ``days``: the day partitions read (``None``: all)."""
    ranges = ranges_frame(spark, runs)
    found = {
        r["run_id"]: {
            "lake_rows": 0,
            "lake_ids": 0,
            "lake_digest": f"{0:032x}",
            "landed_elsewhere_too": 0,
            "dead_rows": 0,
            "dead_coordinates": 0,
            "quarantined": 0,
        }
        for r in runs
    }
    lake = read_lake(spark, lake_path, days, expired)
    if lake is not None:
        lake = lake.select("event_id", "kafka_partition", "kafka_offset")
        mine = at_coordinates(lake, ranges).cache()
        for row in (
            mine.groupBy("run_id")
            .agg(F.count(F.lit(1)).alias("rows"), F.countDistinct("event_id").alias("ids"))
            .collect()
        ):
            found[row.run_id].update(lake_rows=row.rows, lake_ids=row.ids)
        ids = mine.select("run_id", "event_id").distinct()
        for run_id, digest in digests(ids).items():
            found[run_id]["lake_digest"] = digest
        in_run = mine.groupBy("run_id", "event_id").agg(F.count(F.lit(1)).alias("n_in"))
        total = lake.groupBy("event_id").agg(F.count(F.lit(1)).alias("n_all"))
        for row in (
            in_run.join(total, "event_id")
            .where(F.col("n_all") > F.col("n_in"))
            .groupBy("run_id")
            .count()
            .collect()
        ):
            found[row.run_id]["landed_elsewhere_too"] = row["count"]
        mine.unpersist()
    dead = read_dead_letters(spark, dead_path, days)
    if dead is not None:
        mine = at_coordinates(dead.select("kafka_partition", "kafka_offset", "reason"), ranges)
        quarantined = F.when(
            F.col("reason") == "quarantined", F.struct("kafka_partition", "kafka_offset")
        )
        for row in (
            mine.groupBy("run_id")
            .agg(
                F.count(F.lit(1)).alias("rows"),
                F.countDistinct("kafka_partition", "kafka_offset").alias("coords"),
                F.countDistinct(quarantined).alias("quarantined"),
            )
            .collect()
        ):
            found[row.run_id].update(
                dead_rows=row.rows, dead_coordinates=row.coords, quarantined=row.quarantined
            )
    return found


def dead_letter_reasons(
    spark: SparkSession, runs: list[dict], dead_path: str, days: ReadDays | None = None
) -> dict[str, int]:
    """How many dead letters of each reason lie at the runs' coordinates (one per
    coordinate: a re-written batch's copy is counted by ``measure`` as duplicated)."""
    dead = read_dead_letters(spark, dead_path, days)
    if dead is None or not runs:
        return {}
    mine = at_coordinates(
        dead.select("kafka_partition", "kafka_offset", "reason"), ranges_frame(spark, runs)
    )
    rows = mine.dropDuplicates(["kafka_partition", "kafka_offset"]).groupBy("reason").count()
    return {r.reason: r["count"] for r in rows.collect()}


def table(accounts: list[Account], skipped: list[str]) -> str:
    cols = COLUMNS
    lines = [f"{'run':<34}" + "".join(f"{c:>15}" for c in cols) + "  status"]
    for a in accounts:
        status = "ok" if a.ok else "PROBLEM: " + "; ".join(a.problems)
        lines.append(
            f"{a.run_id:<34}" + "".join(f"{getattr(a, c):>15,}" for c in cols) + f"  {status}"
        )
    lines += [
        f"{run_id:<34}  not reconcilable: recorded without offsets (older producer)"
        for run_id in skipped
    ]
    return "\n".join(lines)


def reconcile(
    spark: SparkSession, args: ReconcileJob, pg: PostgresEndpoint | None = None
) -> tuple[dict, str]:
    """The report and its table for ``args`` (a ``ReconcileJob``); ``pg``: the analytics
    database (default: libpq's ``PG*`` environment)."""
    pg = pg or PostgresEndpoint.from_libpq_env()
    runs = load_runs(args.topic, args.lake_path, args.since, args.until, args.pg_schema, pg)
    skipped = [r["run_id"] for r in runs if not r["ranges"]]
    runs = [r for r in runs if r["ranges"]]
    accounts: list[Account] = []
    reasons: dict[str, int] = {}
    days = read_days(((r["produced_at"], r["seconds"]) for r in runs), datetime.now(UTC))
    if runs:
        found = measure(
            spark,
            runs,
            args.lake_path,
            args.dead_letter_path,
            expired(args.pg_schema, pg),
            days,
        )
        reasons = dead_letter_reasons(spark, runs, args.dead_letter_path, days)
        for r in runs:
            produced = Produced(r["run_id"], r["events"], r["by_kind"], r["id_digest"])
            lost = r["lost_accepted"]
            accounts.append(account(produced, Found(**found[r["run_id"]], lost_accepted=lost)))
    report = {
        "topic": args.topic,
        "since": args.since.isoformat(),
        "until": args.until.isoformat(),
        **summarize(accounts),
        "skipped": skipped,
        # The day partitions read (None: every day; a run recorded without its duration).
        "read_days": days.as_dict() if days else None,
        "dead_letter_reasons": dict(sorted(reasons.items())),
        "accounts": [a.as_dict() for a in accounts],
    }
    return report, table(accounts, skipped)


def main(argv: Sequence[str] | None = None) -> int:
    args = ReconcileJob.from_argv(sys.argv[1:] if argv is None else argv)
    spark = SparkSession.builder.appName("reconcile").getOrCreate()
    report, text = reconcile(spark, args)
    print(text)
    write_report(spark, args.report, "reconcile", report)
    spark.stop()
    return 0 if report["ok"] else 2


if __name__ == "__main__":
    sys.exit(main())
