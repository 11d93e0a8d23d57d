"""Stream user-activity events from Kafka into the lake (Parquet on S3) and Postgres.

One streaming query (``lake``) reads each record once; the contract's rules
(``include/events/validation.py``, run on the JVM by ``rtap.spark.Contract``) check it once,
with one processing time per micro-batch; records inside an operator's quarantined offsets
(``stream_quarantine``) are skipped unparsed; one stateful deduplication (``rtap.spark.FirstSeen``, ``spark_apps/jvm``)
drops identical repeats of an ``event_id`` first seen within ``--dedupe-horizon`` of
*processing* time and dead-letters a repeat with other content as ``conflicting_duplicate`` (no
producer clock, Kafka timestamp or event time can make a valid event "late"). Each micro-batch
then fans out (``foreachBatch``), every output idempotent under a replay of the batch:

* the lake:        valid events, enriched from the product catalog (Postgres ``products``,
                   read again once a minute: ``CATALOG_MAX_AGE_S``), partitioned by
                   ``event_date``/``event_hour``, written by Spark's own file sink (its
                   ``_spark_metadata`` log, keyed by the batch id: exactly once);
* the dead letters: records that break the contract, with the reason, the original bytes and
                   their Kafka coordinates (the same file sink, its own log);
* the live aggregates (``include/analytics/store.py`` ``AGGREGATES``, each naming its
                   transform; ``--aggregate-modules`` registers more): each batch's
                   per-minute partials (sums and HyperLogLog sketches) are added to Postgres
                   once per batch (``stream_sink_commits``), late or early events included;
                   rows Postgres refuses go to ``<dead-letter path>/_sink_rejected/`` and the
                   batch completes.

Every batch's progress (offsets, rates, durations, the deduplication's state size, observed
counts of landed / irrelevant / dead-lettered events) goes to Postgres ``stream_progress``
(``spark_apps/progress.py``).

Modes: ``continuous`` (processing-time trigger, runs until stopped) and ``bounded`` (drain what
is in the topic now, then exit; used by ``airflow dags test`` and the tests).

Usage (Airflow runs this through SparkSubmitOperator; see ``include/spark/submit.py``)::

    spark-submit --master 'local[*]' --jars <connector jars> \\
        --conf spark.hadoop.fs.s3a.endpoint=http://127.0.0.1:9000 ... \\
        spark_apps/stream_events.py \\
        --bootstrap-servers 127.0.0.1:9092 --topic events \\
        --lake-path s3a://lake/raw/events --dead-letter-path s3a://lake/dead_letter/events \\
        --checkpoint-root s3a://lake/_checkpoints/stream_events --mode bounded

Before any query starts, the driver takes the checkpoint's single-writer lease in Postgres
(``include/supervision/lease.py``) and renews it while it runs; a second driver on the same
checkpoint exits with code 3 and names the holder; a driver that loses its lease stops writing
and exits with code 4. The driver records its start and end in ``stream_runs`` and, while it
runs, polls ``stream_control``: an operator's stop or restart request stops it between two
batches, with exit code 0 (``include/supervision/control.py``).

Postgres is reached with libpq's environment (``PGHOST``, ``PGPORT``, ``PGUSER``,
``PGPASSWORD``, ``PGDATABASE``), which the operator fills from the Airflow connection; Kafka's
TLS / SASL settings likewise come from ``RTAP_KAFKA_*`` (``include/kafka/security.py``).
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Executor, ThreadPoolExecutor, wait
from functools import partial
from typing import TYPE_CHECKING, TypeVar

from pyspark.errors import StreamingQueryException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from include import pipeline
from include.analytics import migrations, store
from include.endpoints import PostgresEndpoint
from include.kafka import security as kafka_security
from include.spark.jobs import StreamJob, duration_ms, snapshot_every_batches
from include.supervision import checkpoint as ckpt
from include.supervision import control, lease
from spark_apps import sink_log, upgrade
from spark_apps.file_sinks import file_sink, plain_encoded, session_filesystem
from spark_apps.progress import PostgresProgressListener, record_recent_progress
from spark_apps.reports import stopwatch
from spark_apps.transforms import events as tx

if TYPE_CHECKING:
    from py4j.java_gateway import JavaObject

log = logging.getLogger("stream_events")
T = TypeVar("T")


def kafka_options(args: StreamJob) -> dict[str, str]:
    """The Kafka connection's options for Spark's source: the brokers and the TLS / SASL
    settings (``RTAP_KAFKA_*``, set by the operator)."""
    return {
        "kafka.bootstrap.servers": args.bootstrap_servers,
        **kafka_security.spark_options(os.environ),
    }


def read_kafka(spark: SparkSession, args: StreamJob, fail_on_data_loss: bool = True) -> DataFrame:
    return (
        spark.readStream.format("kafka")
        .options(**kafka_options(args))
        .option("subscribe", args.topic)
        .option("startingOffsets", args.starting_offsets)
        # Never skip offsets silently; the launch DAG's retention guard names any gap first.
        .option("failOnDataLoss", str(fail_on_data_loss).lower())
        .option("maxOffsetsPerTrigger", args.max_offsets_per_trigger)
        .load()
    )


def read_records(
    spark: SparkSession, args: StreamJob, coordinates: Sequence[tuple[str, int, int]]
) -> DataFrame:
    """The Kafka records at ``coordinates`` (topic, partition, offset), read again: a batch
    read of each partition from the lowest to the highest of its offsets (the records of one
    micro-batch, still in the topic: the stream has just read them)."""
    ranges: dict[str, dict[int, tuple[int, int]]] = {}  # JSON writes the partitions as keys
    for topic, partition, offset in coordinates:
        lo, hi = ranges.setdefault(topic, {}).get(partition, (offset, offset))
        ranges[topic][partition] = (min(lo, offset), max(hi, offset))
    return (
        spark.read.format("kafka")
        .options(**kafka_options(args))
        .option("assign", json.dumps({t: list(ps) for t, ps in ranges.items()}))
        .option(
            "startingOffsets",
            json.dumps({t: {p: lo for p, (lo, _) in ps.items()} for t, ps in ranges.items()}),
        )
        .option(
            "endingOffsets",
            json.dumps({t: {p: hi + 1 for p, (_, hi) in ps.items()} for t, ps in ranges.items()}),
        )
        .load()
    )


def dead_letters_of(
    spark: SparkSession, args: StreamJob, batch: DataFrame, reread: bool = True
) -> DataFrame:
    """A micro-batch's dead letters, each with its original bytes: the deduplication's own
    (a conflicting version, an event time out of bounds) had theirs dropped before its shuffle
    (``tx.without_raw_bytes_of_valid_events``) and get them again from the topic. ``reread``
    False: the operator counted none in this batch (``tx.reread_counter``), so no job looks
    for them."""
    dead = tx.dead_letters(batch)
    if not reread:
        return dead
    coordinates = [
        (r[0], r[1], r[2])
        for r in dead.where(tx.without_bytes())
        .select("kafka_topic", "kafka_partition", "kafka_offset")
        .collect()
    ]
    if not coordinates:
        return dead
    return tx.with_original_bytes(dead, read_records(spark, args, coordinates))


def read_table(spark: SparkSession, pg_schema: str, table: str) -> DataFrame:
    """A Postgres table (JDBC, libpq's PG* environment); the product catalog, through a
    :class:`Snapshot`."""
    pg = PostgresEndpoint.from_libpq_env()
    return (
        spark.read.format("jdbc")
        .option("url", pg.jdbc_url(pg_schema))
        .option("driver", "org.postgresql.Driver")
        .option("dbtable", table)
        .option("user", pg.user)
        .option("password", pg.password)
        .load()
    )


# How old the product catalog a batch enriches from may be. Read for every batch it cost a
# JDBC connection and a Spark job (its broadcast) per micro-batch, the same few rows each time.
CATALOG_MAX_AGE_S = 60.0


class Snapshot:
    """A small table held on the driver and read again once it is ``max_age_s`` old: a local
    relation (its rows in the plan), whose broadcast Spark builds on the driver without a job,
    instead of a read of the source for every micro-batch."""

    def __init__(
        self,
        read: Callable[[SparkSession], DataFrame],
        max_age_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.read, self.max_age_s, self.clock = read, max_age_s, clock
        self._df: DataFrame | None = None
        self._read_at = 0.0

    def get(self, session: SparkSession) -> DataFrame:
        """The table, as of at most ``max_age_s`` ago, in ``session`` (the batch's)."""
        now = self.clock()
        if self._df is None or now - self._read_at >= self.max_age_s:
            fresh = self.read(session)
            # Collected and rebuilt on the JVM: createDataFrame(java.util.List<Row>, schema)
            # makes a LocalRelation (PySpark's own createDataFrame would make an RDD).
            jdf = session._jsparkSession.createDataFrame(
                fresh._jdf.collectAsList(), fresh._jdf.schema()
            )
            self._df, self._read_at = DataFrame(jdf, session), now
        return self._df


def fan_out(
    spark: SparkSession,
    args: StreamJob,
    owner: str,
    quarantine: JavaObject,
    rereads: JavaObject,
    resume: ckpt.ResumePlan | None = None,
):
    """The ``foreachBatch`` function: one micro-batch of checked, deduplicated records to every
    output, each keyed by the batch id so that a replayed batch changes nothing twice. The
    Postgres writes are fenced by the single-writer lease of ``owner``. Before the batch's
    first job it sets ``quarantine`` (the contract operator's ``rtap.spark.Quarantine``) to the
    operators' quarantined ranges, read with the batch's own Postgres connection: the batch's
    tasks carry them (Spark serializes a job's functions when it submits the job). The
    deduplication counts in ``rereads`` the dead letters it made without their bytes: after the
    lake's job (which computes the batch) the driver knows whether any must be read again from
    the topic, so a batch without them writes its dead letters in one job. ``resume``: the
    first release's positions (:func:`first_release`): each output skips what it holds."""
    retention_ms = duration_ms(args.sink_log_retention)
    lake = file_sink(spark, args.lake_path, pipeline.LAKE_PARTITIONS, retention_ms)
    dead = file_sink(
        spark, args.dead_letter_path, (pipeline.DEAD_LETTER_DAY_PARTITION,), retention_ms
    )
    # Before each commit, the entries the logs' retention may drop next go to their archive.
    lake_archive, dead_archive = (
        sink_log.Archiver(session_filesystem(spark, p), p, retention_ms)
        for p in (args.lake_path, args.dead_letter_path)
    )
    stream = lease.lease_name(args.checkpoint_root)
    aggregates = tx.live_aggregates()
    catalog = Snapshot(
        partial(read_table, pg_schema=args.pg_schema, table="products"), CATALOG_MAX_AGE_S
    )
    # The threads that run a batch's outputs after the lake's (side_by_side), kept for the run.
    pool = ThreadPoolExecutor(max_workers=1 + len(aggregates), thread_name_prefix="fan-out")

    def fence(cur) -> None:
        lease.fence(cur, stream, owner)

    def written_by_us(rows: DataFrame, output: str) -> DataFrame:
        return rows if resume is None else rows.where(tx.at_or_above(resume.floor(output)))

    def write(batch: DataFrame, batch_id: int) -> None:
        try:
            fan_out_batch(batch, batch_id)
        except Exception as exc:  # Spark reports it inside a long traceback: name it clearly
            raise BatchFailed(f"batch {batch_id}: {first_line(exc)}") from exc

    def fan_out_batch(batch: DataFrame, batch_id: int) -> None:
        phases: dict[str, float] = {}
        compiled_before = compiled_classes(spark)
        # libpq reads PG* from the environment; the schema was checked at start.
        conn = store.connect(PostgresEndpoint.from_libpq_env(), schema=args.pg_schema)
        batch.persist()
        try:
            lap = stopwatch(phases)
            quarantine.set(json.dumps(control.quarantined_ranges(conn)))
            rereads_before = rereads.value()
            valid = tx.valid_events(batch)
            products = catalog.get(batch.sparkSession)
            # The lake's job computes the batch (the read, the checks, the deduplication's
            # state) and persists it; the other outputs read the persisted rows, at once.
            lake_archive.before_commit()
            lake.addBatch(batch_id, tx.enrich(written_by_us(valid, "lake"), products)._jdf)
            lap("lake")
            # Every task of the lake's job has reported its count by now (Spark merges a task's
            # accumulators before its job ends).
            reread = rereads.value() > rereads_before

            def add_dead_letters() -> None:
                dead_archive.before_commit()
                dead_letters = dead_letters_of(spark, args, batch, reread)
                dead.addBatch(batch_id, written_by_us(dead_letters, "dead_letter")._jdf)

            jobs: dict[str, Callable[[], object]] = {"dead_letters": add_dead_letters}
            for table, transform in aggregates.items():
                rows = written_by_us(valid, table)
                jobs[table] = partial(collect_partials, transform, rows, args.window)
            done = side_by_side(pool, jobs, phases)
            lap("side_by_side")
            for table in aggregates:
                add_to_aggregates(spark, conn, args, table, done[table], batch_id, stream, fence)
            lap("postgres")
        finally:
            batch.unpersist()
            conn.close()
        log.info(
            "batch %s: %s; %s",
            batch_id,
            ", ".join(f"{k} {v:.2f}s" for k, v in phases.items()),
            COMPILED_FORMAT % (compiled_classes(spark) - compiled_before),
        )

    return write


# How a batch's log line ends: the generated classes Spark compiled while it ran. A warm stream
# compiles none (its plans are the same each batch and Spark's code cache holds their classes:
# BASE_CONF's spark.sql.codegen.cache.maxEntries); a batch that does is paying a compile and
# the JIT's warm-up again (a batch-specific literal in a plan, or the cache too small).
COMPILED_FORMAT = "compiled %d generated classes"


def compiled_classes(spark: SparkSession) -> int:
    """Spark's compilations of generated code so far in the driver's JVM (code cache misses;
    on a local master the executors' too, which run in it)."""
    metrics = spark._jvm.org.apache.spark.metrics.source.CodegenMetrics  # type: ignore[union-attr]
    return int(metrics.METRIC_COMPILATION_TIME().getCount())


def collect_partials(transform, valid: DataFrame, window: str) -> list[dict]:
    """One batch's partial rows of a live aggregate, on the driver (a few hundred rows): the
    aggregation's shuffle partitions are read by one task (``coalesce(1)`` adds no shuffle),
    not a task each for a handful of rows."""
    return [r.asDict() for r in transform(valid, window).coalesce(1).collect()]


def side_by_side(
    pool: Executor, jobs: dict[str, Callable[[], T]], phases: dict[str, float]
) -> dict[str, T]:
    """Run Spark jobs from the pool's threads, all at once, and return their results; each
    job's own seconds go to ``phases``. Small jobs of one batch wait on S3, Postgres and task
    scheduling more than they compute: side by side they take the time of the longest.
    Every job is waited for before a failure is raised, so no job of a failed batch is still
    running when the batch is retried. The threads inherit the query's job group (a stop
    cancels them too)."""
    from pyspark.util import inheritable_thread_target

    def timed(name: str, job: Callable[[], T]) -> T:
        start = time.monotonic()
        try:
            return job()
        finally:
            phases[name] = round(time.monotonic() - start, 3)

    futures = {
        name: pool.submit(inheritable_thread_target(partial(timed, name, job)))
        for name, job in jobs.items()
    }
    wait(futures.values())
    return {name: future.result() for name, future in futures.items()}


def add_to_aggregates(
    spark: SparkSession,
    conn,
    args: StreamJob,
    table: str,
    partials: list[dict],
    batch_id: int,
    stream: str,
    fence,
) -> None:
    """Add one batch's partials to a Postgres aggregate, once (``store.add_batch``).

    The safety net: a row Postgres refuses (a contract bug let through a value the table
    cannot hold) is written to ``<dead-letter path>/_sink_rejected/<table>/batch_id=<n>/``
    with reason ``sink_rejected:<table>``, the row and the error, before the batch's
    transaction commits, and the batch completes; a replayed batch rewrites the same file. The
    stream never crash-loops on data."""
    columns = store.AGGREGATES[table].columns

    def keep_refused(result: store.UpsertResult) -> None:  # before the batch's commit
        if not result.rejected:
            return
        path = sink_rejected_path(args.dead_letter_path, table, batch_id)
        rejections = sink_rejections(spark, table, batch_id, columns, result)
        rejections.coalesce(1).write.mode("overwrite").json(path)
        log.error(
            "batch %s: %s rejected %s rows (dead-lettered to %s): %s",
            batch_id,
            table,
            len(result.rejected),
            path,
            result.rejected[0][1],
        )

    result = store.add_batch(
        conn,
        table,
        partials,
        batch_id,
        f"{stream} -> {table}",
        before_commit=keep_refused,
        fence=fence,
    )
    if result is None:
        log.info("batch %s: %s already applied (a replay), skipped", batch_id, table)
    else:
        log.info("batch %s: upserted %s %s rows", batch_id, result.upserted, table)


def sink_rejections(
    spark: SparkSession,
    sink: str,
    batch_id: int,
    columns: Sequence[str],
    result: store.UpsertResult,
) -> DataFrame:
    """The dead letters of rows a sink refused: reason, sink, batch, the row as JSON, the error."""
    rows = [
        (
            f"sink_rejected:{sink}",
            sink,
            batch_id,
            json.dumps(dict(zip(columns, row, strict=True)), default=str),
            error,
        )
        for row, error in result.rejected
    ]
    return spark.createDataFrame(
        rows, "reason string, sink string, batch_id long, row string, error string"
    ).withColumn("detected_at", F.current_timestamp())


def sink_rejected_path(dead_letter_path: str, sink: str, batch_id: int) -> str:
    """Where rows a sink refused in one batch are kept (beside the dead letters; the ``_``
    prefix keeps them out of the dead-letter table's listing)."""
    return f"{dead_letter_path.rstrip('/')}/_sink_rejected/{sink}/batch_id={batch_id}"


def dedupe_state(spark: SparkSession, checkpoint: str) -> tx.DedupeState:
    """The layout of the deduplication's state a query's checkpoint holds (Spark's state
    metadata; the current layout for a new checkpoint)."""
    rows = (
        spark.read.format("state-metadata")
        .load(checkpoint)
        .select("operatorName", "operatorProperties")
        .collect()
    )
    return tx.dedupe_state_of((r[0], r[1]) for r in rows)


# Where the columnar engine keeps its deduplication state, in the query's checkpoint.
COLUMNAR_STATE = "first_seen"


class ColumnarOutcomes:
    """The columnar engine's per-batch counts and state size, for the progress listener
    (``stream_progress.observed`` and ``state_rows``: Spark's own observed metrics see only
    the raw records of a batch whose work is done in Python). The last batches only."""

    KEEP = 256

    def __init__(self) -> None:
        self._rows: dict[int, dict[str, object]] = {}

    def put(self, batch_id: int, observed: dict, state_rows: int) -> None:
        self._rows[batch_id] = {"observed": json.dumps(observed), "state_rows": state_rows}
        for old in sorted(self._rows)[: -self.KEEP]:
            del self._rows[old]

    def get(self, batch_id: int) -> dict[str, object] | None:
        return self._rows.get(batch_id)


def columnar_fan_out(
    spark: SparkSession,
    args: StreamJob,
    owner: str,
    checkpoint: str,
    outcomes: ColumnarOutcomes,
    resume: ckpt.ResumePlan | None = None,
):
    """The ``foreachBatch`` function of ``--engine columnar`` (``spark_apps/columnar/engine.py``
    says how a batch runs): Spark's Kafka rows of one micro-batch checked, deduplicated and
    written as Arrow batches, every output keyed by the batch id. ``resume``: as
    :func:`fan_out`'s."""

    from spark_apps.arrow_lake import object_path
    from spark_apps.columnar import engine as E
    from spark_apps.columnar import state as S

    stream = lease.lease_name(args.checkpoint_root)
    endpoint = spark.conf.get("spark.hadoop.fs.s3a.endpoint", "")
    s3 = E.s3(endpoint)
    state_log = S.StateLog(s3, object_path(f"{checkpoint.rstrip('/')}/{COLUMNAR_STATE}"))
    retention_ms = duration_ms(args.sink_log_retention)
    lake_log, dead_log = (
        E.SinkLog(spark, p, sink_log.Archiver(s3, p, retention_ms))
        for p in (args.lake_path, args.dead_letter_path)
    )
    horizon_ms, window_ms = duration_ms(args.dedupe_horizon), duration_ms(args.window)
    aggregates = E.resolve({t: a.arrow_transform for t, a in store.AGGREGATES.items()})
    floors = tuple(
        (output, resume.topic, partition, offset)
        for output in ("lake", "dead_letter", *aggregates)
        for partition, offset in (resume.floor(output) if resume else {}).items()
    )
    # The driver's threads: the write step's (one per Kafka partition), and the state's log
    # and the two sink logs beside it.
    pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="columnar")
    cache = E.cache_root(spark.sparkContext.applicationId)
    E.clear_stale_caches(cache)
    held: dict[str, object] = {}  # the state, the sinks' last batches at start, the catalog

    def write(batch: DataFrame, batch_id: int) -> None:
        try:
            write_batch(batch, batch_id)
        except Exception as exc:
            # The state in memory may hold the failed batch's keys: the batch's replay must
            # be decided against the state before it, so it is restored from its log again.
            held.clear()
            raise BatchFailed(f"batch {batch_id}: {first_line(exc)}") from exc

    def write_batch(batch: DataFrame, batch_id: int) -> None:
        phases: dict[str, float] = {}
        lap = stopwatch(phases)
        if "state" not in held:
            held["state"] = state_log.restore(batch_id, horizon_ms)
            held["lake"], held["dead"] = lake_log.latest(), dead_log.latest()
            if state_log.fresh and batch_id > 0:
                log.warning(
                    "the deduplication state starts empty at batch %s (a checkpoint the "
                    "row-based engine wrote, or its first_seen log was deleted): repeats of "
                    "ids the stream saw before it land again, and compaction drops them",
                    batch_id,
                )
        state: S.FirstSeenState = held["state"]  # type: ignore[assignment]
        conn = store.connect(PostgresEndpoint.from_libpq_env(), schema=args.pg_schema)
        try:
            if time.monotonic() - float(held.get("catalog_at", -1e9)) >= CATALOG_MAX_AGE_S:  # type: ignore[arg-type]
                held["catalog"], held["catalog_at"] = E.read_catalog(conn), time.monotonic()
            ranges = tuple(
                (r["topic"], r["partition"], r["from_offset"], r["to_offset"])
                for r in control.quarantined_ranges(conn)
            )
            now_ms = E.batch_time_ms(spark, checkpoint, batch_id)
            plan = E.Plan(
                batch_id,
                now_ms * 1000,
                endpoint,
                object_path(args.lake_path).rstrip("/"),
                object_path(args.dead_letter_path).rstrip("/"),
                os.path.join(cache, str(batch_id)),
                ranges,
                write_lake=batch_id > held["lake"],  # type: ignore[operator]
                write_dead=batch_id > held["dead"],  # type: ignore[operator]
                floors=floors,
            )
            lap("plan")
            results = batch.mapInArrow(E.check(plan), E.RESULT_TYPE).toArrow()
            lap("check")
            outcome = E.Outcome()
            outcome.take(results)
            kept, copies, conflicts = E.decide(state, results, now_ms)
            outcome.count("conflicting_duplicates", conflicts)
            lap("decide")
            # The state's changelog is written while the files are (neither is published
            # yet); both are done before anything is published.
            logged = pool.submit(state_log.write, batch_id, state)
            try:
                outcome.take(E.write(plan, kept, held["catalog"], window_ms, aggregates, pool))
            finally:
                wait([logged])
            logged.result()
            lap("write")

            def add_partials() -> None:
                for table in aggregates:
                    partials = store.combine_partials(
                        store.AGGREGATES[table], outcome.partials.get(table, [])
                    )
                    add_to_aggregates(
                        spark,
                        conn,
                        args,
                        table,
                        partials,
                        batch_id,
                        stream,
                        lambda cur: lease.fence(cur, stream, owner),
                    )

            # The sinks' logs and Postgres, side by side: each is keyed by the batch id, so
            # a replay of a batch that failed half-way adds to none twice.
            publish: dict[str, Callable[[], object]] = {"postgres": add_partials}
            if plan.write_lake:
                publish["lake_log"] = partial(lake_log.add, batch_id, outcome.lake)
            if plan.write_dead:
                publish["dead_log"] = partial(dead_log.add, batch_id, outcome.dead)
            side_by_side(pool, publish, phases)
            lap("publish")
        finally:
            conn.close()
            E.clear_cache(os.path.join(cache, str(batch_id)))
        outcomes.put(batch_id, outcome.observed(), len(state))
        log.info(
            "batch %s: %s; %s copies dropped, %s conflicts, %s keys held",
            batch_id,
            ", ".join(f"{k} {v:.2f}s" for k, v in phases.items()),
            copies,
            conflicts,
            len(state),
        )

    return write


def start_queries(
    spark: SparkSession,
    args: StreamJob,
    owner: str,
    bounded: bool,
    fail_on_data_loss: bool = True,
    outcomes: ColumnarOutcomes | None = None,
    resume: ckpt.ResumePlan | None = None,
) -> list:
    """The stream's one query (a list, for the callers that wait on queries); ``resume``: the
    first release's positions, when its upgrade has not been read past (:func:`first_release`)."""
    checkpoint = f"{args.checkpoint_root.rstrip('/')}/{pipeline.STREAM_QUERY}"
    if args.engine == "columnar":
        raw = read_kafka(spark, args, fail_on_data_loss).select(
            "key", "value", "topic", "partition", "offset", "timestamp"
        )
        writer = (
            raw.writeStream.queryName(pipeline.STREAM_QUERY)
            .option("checkpointLocation", checkpoint)
            .foreachBatch(columnar_fan_out(spark, args, owner, checkpoint, outcomes, resume))
        )
        if bounded:
            return [writer.trigger(availableNow=True).start()]
        return [writer.trigger(processingTime=args.trigger).start()]
    quarantine = tx.live_quarantine(spark)  # set for each micro-batch by fan_out
    checked = tx.parse(read_kafka(spark, args, fail_on_data_loss), live=quarantine)
    state = dedupe_state(spark, checkpoint)
    if state is tx.DedupeState.LEGACY:
        log.warning(
            "the checkpoint %s holds the earlier releases' deduplication state (%s): the stream "
            "keeps that operator, whose cost per event grows with the dedupe horizon over the "
            "trigger interval; a new checkpoint uses the current one (docs/architecture.md)",
            checkpoint,
            state,
        )
    elif state is not tx.DedupeState.KEY_BYTES:
        log.warning(
            "the checkpoint %s keeps its deduplication state's ids as strings (%s: ~100 bytes "
            "of state per id; a new checkpoint keeps ~60, docs/architecture.md)",
            checkpoint,
            state,
        )
    # The valid records' raw bytes are dropped before the deduplication's shuffle; the few it
    # dead-letters get theirs again from the topic (dead_letters_of).
    rereads = tx.reread_counter(spark)
    deduplicated = tx.first_seen(
        tx.without_raw_bytes_of_valid_events(checked),
        args.dedupe_horizon,
        state=state,
        rereads=rereads,
    )
    writer = (
        tx.observe(
            deduplicated,
            resume.floor("lake") if resume else None,
            resume.floor("dead_letter") if resume else None,
        )
        .writeStream.queryName(pipeline.STREAM_QUERY)
        .option("checkpointLocation", checkpoint)
        .outputMode("append")
        .foreachBatch(fan_out(spark, args, owner, quarantine, rereads, resume))
    )
    if bounded:
        writer = writer.trigger(availableNow=True)
    else:
        writer = writer.trigger(processingTime=args.trigger)
    return [writer.start()]


def run_queries(
    spark: SparkSession, queries: list, bounded: bool, stopping: threading.Event | None = None
) -> list[tuple[str, str]]:
    """Wait for the queries; stop them all when one ends; return the failed ones. While a
    graceful stop is under way (``stopping``), let every query finish its batch first."""
    # A failed query raises from the awaits; it is named from q.exception() below.
    with contextlib.suppress(StreamingQueryException):
        if bounded:
            for q in queries:
                with contextlib.suppress(StreamingQueryException):
                    q.awaitTermination()
        else:
            # Fail fast: the first query to fail (or to be stopped by a lost lease) stops the
            # app, and Airflow's retry restarts it from the checkpoints.
            spark.streams.awaitAnyTermination()
            if stopping is not None and stopping.is_set():
                for q in queries:
                    q.awaitTermination(GRACEFUL_TIMEOUT_S)
    failed = [(q.name, first_line(q.exception())) for q in queries if q.exception() is not None]
    for q in queries:
        if q.isActive:
            q.stop()
    return failed


# How each micro-batch is executed (measured on a 200,000-event batch, bench/limits.md):
BATCH_CONF = {
    # The persisted batch is read back once per output and dropped at the batch's end:
    # compressing its columns (a boxed hash map of every value to choose the encoding) cost
    # ~10 % of the executors' CPU and saved nothing that matters for one batch.
    "spark.sql.inMemoryColumnarStorage.compressed": "false",
    # The lake is partitioned by event date and hour: with a writer open per partition a task
    # writes its rows as they come instead of sorting them by partition first (Spark falls
    # back to the sort beyond this many partitions in one task).
    "spark.sql.maxConcurrentOutputFileWriters": "16",
    # The deduplication's state commits upload the batch's changed keys (a changelog file per
    # state partition) instead of a RocksDB snapshot (its new SST files, a zip and checksums);
    # snapshots are uploaded in the background by the state store's maintenance. Spark reads
    # checkpoints written either way, so it can be turned on for a running stream.
    "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
    # Every checkpoint entry (the offset and commit logs, the sinks' logs, the state's
    # changelogs) written straight to its object, without the temporary file and the rename
    # (on S3A a copy and a delete): spark_apps/jvm/rtap/spark/DirectCheckpointFileManager.java.
    "spark.sql.streaming.checkpointFileManagerClass": "rtap.spark.DirectCheckpointFileManager",
    # No checksum file beside each state file: Spark 4.1 writes one per changelog and snapshot
    # (a second object per state partition and batch, awaited at the state's commit) against
    # files corrupted at rest; an object store keeps an object whole (a PUT lands entire or
    # not at all) and guards its durability itself. A checkpoint written with them keeps its
    # earlier `.crc` objects (a few bytes each); Spark reads it either way. With the
    # row count off a new key costs one RocksDB get fewer, and the progress' `numRowsTotal`
    # (stream_progress.state_rows) reads 0. The two together: the live stream's p99 at 50 %
    # 8.9 -> 3.4 s and 5.6 -> 4.4 s in two alternated pairs (bench/limits.md, latency step 8).
    "spark.sql.streaming.checkpoint.fileChecksum.enabled": "false",
    "spark.sql.streaming.stateStore.rocksdb.trackTotalNumberOfRows": "false",
    # The lake's ids, offsets and timestamps written without a Parquet dictionary (each file's
    # dictionary of distinct values was the largest single cost of a warm batch).
    **plain_encoded(tx.DISTINCT_VALUED_COLUMNS),
    # S3A's create() without its probes of the new object's name (HEAD and LIST requests,
    # whether something is already there): the stream's objects have unique names (Spark's
    # part files) or are checked before they are published (the checkpoint manager refuses to
    # replace an entry, DirectCheckpointFileManager). A Hadoop setting in the session's conf
    # reaches the file systems its jobs and checkpoints open (as the Parquet settings above).
    "fs.s3a.create.performance": "true",
}

# The deduplication's state is snapshotted every pipeline.STREAM_STATE_SNAPSHOT_INTERVAL_S of
# processing time, not every 10 batches (Spark's default). A snapshot uploads the whole state,
# not what changed since the last one: with random ids every RocksDB compaction rewrites its
# files, so a snapshot reuses none of the previous one's (Spark's log: "0 files reused without
# copying"; ~61 B per id held, ~101 B with the string keys of earlier checkpoints). Every 10
# batches, the maintenance thread uploaded the whole state once a minute at a 1 s trigger, and
# the batches beside the upload took 2-3 times their usual time (bench/limits.md, latency). In
# between, each batch's changelog is the checkpoint; a restart replays the changelogs since the
# last snapshot (at most one interval of new ids) before its first batch.


def batch_conf(trigger: str) -> dict[str, str]:
    """Spark settings of each micro-batch (:data:`BATCH_CONF`) and the state's snapshot
    interval in batches of ``trigger`` (``include.spark.jobs.snapshot_every_batches``)."""
    return {
        **BATCH_CONF,
        "spark.sql.streaming.stateStore.minDeltasForSnapshot": str(snapshot_every_batches(trigger)),
    }


GRACEFUL_TIMEOUT_S = 600
# How long a driver waits in place for a dependency that went away before it gives up and fails
# (Airflow's retries and the launch gate take over from there).
DEPENDENCY_WAIT_S = 30 * 60


def kafka_admin(args: StreamJob):
    """A Kafka admin client of the driver (its TLS / SASL settings from ``RTAP_KAFKA_*``)."""
    from confluent_kafka.admin import AdminClient

    return AdminClient(
        {
            "bootstrap.servers": args.bootstrap_servers,
            "socket.connection.setup.timeout.ms": 5000,
            # librdkafka logs every reconnect attempt of a broker that is down (the wait says it)
            "log_level": 2,
            **kafka_security.client_config(os.environ),
        }
    )


def topic_partitions(args: StreamJob) -> list[int]:
    """The topic's partitions, as its brokers list them now (none when they do not answer:
    Spark's source then stops the query, and the dependency wait begins)."""
    try:
        meta = kafka_admin(args).list_topics(args.topic, timeout=15).topics.get(args.topic)
    except Exception as exc:
        log.warning("could not list the partitions of %s: %s", args.topic, exc)
        return []
    return sorted(meta.partitions) if meta is not None and meta.error is None else []


def dependency_probes(spark: SparkSession, args: StreamJob, pg) -> dict:
    """The driver's own view of its dependencies: its Kafka client settings, its S3 user, its
    Postgres role (include/supervision/dependencies.py)."""
    from include.endpoints import S3Endpoint
    from include.supervision import dependencies

    admin = kafka_admin(args)  # one client for the whole wait: each one reconnects alone
    bucket = args.checkpoint_root.split("://", 1)[-1].split("/", 1)[0]
    endpoint = spark.conf.get("spark.hadoop.fs.s3a.endpoint", "")
    s3 = S3Endpoint.from_aws_env(endpoint)
    return {
        "kafka": dependencies.kafka(lambda: admin, args.topic, timeout=5),
        "s3": dependencies.s3(s3.client, bucket),
        "postgres": dependencies.postgres(pg),
    }


def outage_over(spark, args, name, pg, keeper, stopping, failed) -> bool:
    """After a query failed: True when a dependency was down and answers again (resume the
    queries); False when none was down (the app's own failure) or it did not come back within
    DEPENDENCY_WAIT_S. The wait and the resumption go to ``stream_restarts`` when Postgres
    answers."""
    from include.supervision import dependencies

    what = "; ".join(f"query {q} failed: {e}" for q, e in failed)

    def record(action: str, reason: str) -> None:
        with contextlib.suppress(Exception):  # Postgres itself may be what is down
            conn = pg()
            try:
                control.record_restart(conn, name, os.getpid(), None, action, reason)
            finally:
                conn.close()

    down, back = dependencies.wait_until_up(
        dependency_probes(spark, args, pg),
        give_up_after_s=DEPENDENCY_WAIT_S,
        cancelled=lambda: keeper.lost is not None or stopping.is_set(),
        on_down=lambda d: record(control.WAITING_DEPENDENCY, f"{'; '.join(d)} ({what})"),
    )
    if not down:
        return False
    detail = f"{'; '.join(down)} ({what})"
    if back:
        record(control.DEPENDENCIES_BACK, "every dependency answers: queries resumed in place")
        log.warning("resuming the queries after an outage: %s", detail)
    else:
        log.error("gave up waiting for %s after %ss", detail, DEPENDENCY_WAIT_S)
    return back


class BatchFailed(RuntimeError):
    """A micro-batch's fan-out failed; the message names the batch and the cause."""


def first_line(exc: BaseException | None) -> str:
    """The first informative line of an exception's message: Spark's carry whole stack traces,
    py4j's start with "An error occurred while calling o212.load." before the cause, and a
    failed ``foreachBatch`` buries our :class:`BatchFailed` in a Python traceback."""
    text = str(exc or "")
    marker = f"{BatchFailed.__name__}: "
    for line in text.splitlines():
        if marker in line:
            return line.split(marker, 1)[1].strip()[:500]
    lines = (ln.strip().lstrip(":").strip() for ln in text.splitlines())
    useful = [ln for ln in lines if ln and not ln.startswith("An error occurred while calling")]
    return useful[0][:500] if useful else type(exc).__name__


def graceful_stop(spark: SparkSession, timeout_s: float = GRACEFUL_TIMEOUT_S) -> None:
    """Stop every query between two batches (a stop mid-batch would be safe too: the batch is
    re-run from the checkpoint; this only avoids redoing work)."""
    deadline = time.monotonic() + timeout_s
    for q in list(spark.streams.active):
        while q.isActive and q.status.get("isTriggerActive") and time.monotonic() < deadline:
            time.sleep(0.2)
        q.stop()


def columnar_refusal(master: str) -> str | None:
    """Why ``--engine columnar`` cannot run here, or None: it needs a local master (a batch's
    valid events wait on the executor that checked them) and every live aggregate's
    ``arrow_transform``."""
    from include.spark.submit import is_local_master

    if master and not is_local_master(master):
        return (
            f"--engine=columnar runs on a local master only (this one: {master}); "
            "use --engine=rows on a cluster"
        )
    missing = sorted(t for t, a in store.AGGREGATES.items() if not a.arrow_transform)
    if missing:
        return (
            f"--engine=columnar: the live aggregates {missing} declare no arrow_transform "
            "(include.analytics.store.Aggregate)"
        )
    try:
        for table, agg in store.AGGREGATES.items():
            module, _, function = agg.arrow_transform.partition(":")
            if not callable(getattr(importlib.import_module(module), function, None)):
                return f"aggregate {table!r}: arrow_transform {agg.arrow_transform!r} names no function"
    except ImportError as exc:
        return f"--engine=columnar: an aggregate's arrow_transform cannot be imported: {exc}"
    return None


def checkpoint_holds(spark: SparkSession, path: str) -> bool:
    """Whether ``path`` (a checkpoint's file or directory, through Hadoop's file system)
    exists."""
    jvm = spark._jvm
    hpath = jvm.org.apache.hadoop.fs.Path(path)  # type: ignore[union-attr]
    return bool(hpath.getFileSystem(spark._jsc.hadoopConfiguration()).exists(hpath))  # type: ignore[union-attr]


def rows_refusal(checkpoint: str, columnar_ran: bool) -> str | None:
    """Why ``--engine rows`` cannot resume this checkpoint, or None: the columnar engine ran
    on it (its ``first_seen`` log is there), so the row engine's state stops at a batch long
    past (Spark would fail to load the versions in between). The switch is one-way."""
    if columnar_ran:
        return (
            f"--engine=rows: the checkpoint {checkpoint} was run with --engine=columnar (it "
            f"holds {COLUMNAR_STATE}/): resume it with --engine=columnar (docs/architecture.md)"
        )
    return None


def first_release(
    spark: SparkSession, args: StreamJob
) -> tuple[ckpt.ResumePlan | None, str | None]:
    """The resume plan of a first-release deployment this checkpoint root was upgraded from
    (``spark_apps/upgrade.py``) while the stream has not read past it (None after), and why
    the stream cannot start here, or None: the root still holds the first release's
    checkpoints (never or not completely upgraded)."""
    fs = session_filesystem(spark, args.checkpoint_root)
    read, list_keys = upgrade.reader(fs)
    root = sink_log.object_path(args.checkpoint_root).rstrip("/")
    left = ckpt.first_release_queries(root, list_keys)
    if left:
        return None, (
            f"{args.checkpoint_root} holds the first release's checkpoints ({', '.join(left)}), "
            "each at its own offsets: upgrade it first (make upgrade, or spark_apps/upgrade.py; "
            "docs/deployment.md, 'Upgrading from the first release')"
        )
    plan = upgrade.read_plan(fs, args.checkpoint_root)
    if plan is None:
        return None, None
    if plan.topic != args.topic:
        return None, (
            f"{args.checkpoint_root}/{ckpt.RESUME_PLAN} was made for topic {plan.topic!r}, but "
            f"--topic is {args.topic!r}"
        )
    position = ckpt.query_position(pipeline.STREAM_QUERY, root, read, list_keys)
    if (
        position is not None
        and position.committed_batch is not None
        and plan.passed(position.offsets)
    ):
        return None, None
    return plan, None


def choose_engine(
    requested: str, master: str, checkpoint: str, columnar_ran: bool, rows_ran: bool
) -> tuple[str, str | None]:
    """The engine this run uses, and why it cannot run, or None. ``auto`` keeps the engine a
    checkpoint was started with (``columnar_ran``: its ``first_seen`` log is there;
    ``rows_ran``: Spark's ``state/`` is, the row engine's) and starts a new one on
    ``columnar`` where that can run (a local master, every aggregate in Arrow), on ``rows``
    elsewhere. Each engine writes its mark with its first batch's state, before any output
    is committed: a checkpoint with neither has nothing either engine must resume."""
    if requested == "auto":
        if columnar_ran:
            requested = "columnar"
        elif rows_ran:
            requested = "rows"
        elif columnar_refusal(master) is None:
            return "columnar", None
        else:
            requested = "rows"
    if requested == "columnar":
        return requested, columnar_refusal(master)
    return requested, rows_refusal(checkpoint, columnar_ran)


def main(argv: Sequence[str] | None = None) -> int:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    args = StreamJob.from_argv(sys.argv[1:] if argv is None else argv)
    try:
        added = store.load_aggregate_modules(args.aggregate_modules)
        tx.live_aggregates()  # every declared transform resolves, before any data moves
    except ValueError as exc:
        log.error("%s", exc)
        return 2
    if added:
        log.info("live aggregates registered by --aggregate-modules: %s", ", ".join(added))

    def pg():
        return store.connect(PostgresEndpoint.from_libpq_env(), schema=args.pg_schema)

    name, owner = lease.lease_name(args.checkpoint_root), lease.new_owner()
    # The checkpoint's lease, and one per output path: no second stream commits to our sinks.
    leases = lease.driver_leases(args.checkpoint_root, (args.lake_path, args.dead_letter_path))
    conn = pg()
    try:
        # Fail fast on a bad Postgres config or a schema the migrations have not made (every
        # aggregate's table included), before any data moves.
        migrations.check(conn, args.pg_schema)
        held = lease.acquire_all(conn, leases, owner, args.lease_ttl)
        started_at = control.record_start(conn, name, owner, held.host, held.pid)
    except migrations.SchemaNotReady as exc:
        log.error("%s", exc)
        return 2
    except lease.LeaseHeld as exc:
        log.error("%s", exc)
        return 3
    finally:
        conn.close()
    spark = SparkSession.builder.appName(args.app_name).getOrCreate()
    checkpoint = f"{args.checkpoint_root.rstrip('/')}/{pipeline.STREAM_QUERY}"
    engine, refused = choose_engine(
        args.engine,
        spark.sparkContext.master,
        checkpoint,
        checkpoint_holds(spark, f"{checkpoint}/{COLUMNAR_STATE}"),
        checkpoint_holds(spark, f"{checkpoint}/state"),
    )
    if engine != args.engine:
        log.info("--engine=%s: %s for %s", args.engine, engine, checkpoint)
        args = dataclasses.replace(args, engine=engine)
    resume, not_upgraded = first_release(spark, args)
    refused = refused or not_upgraded
    if resume is not None:
        starting = resume.starting_offsets(topic_partitions(args))
        log.info(
            "resuming the first release's outputs (%s): starting at %s, each output skipping "
            "what it holds",
            ckpt.RESUME_PLAN,
            starting,
        )
        args = dataclasses.replace(args, starting_offsets=starting)
    if refused:
        log.error("%s", refused)
        conn = pg()
        try:
            control.record_end(conn, owner, 2, refused)
            lease.release_all(conn, leases, owner)
        finally:
            conn.close()
        spark.stop()
        return 2
    # Spark's INFO chatter (a progress dump per batch, every task) would grow the Airflow task
    # log by megabytes an hour; progress is in stream_progress, our own log stays at INFO.
    spark.sparkContext.setLogLevel(os.environ.get("RTAP_SPARK_LOG_LEVEL", "WARN"))
    for key, value in batch_conf(args.trigger).items():
        spark.conf.set(key, value)
    stopping = threading.Event()  # set when an operator's stop or restart request arrives

    def stop_writing(reason: str) -> None:  # the lease is lost: stop at once
        for q in spark.streams.active:
            q.stop()

    def request_stop(reason: str) -> None:  # an operator asked: finish the batches first
        stopping.set()
        threading.Thread(target=graceful_stop, args=(spark,), name="graceful-stop").start()

    def keeper_pg():  # a renewal must not wait on a lock longer than its own interval
        return store.connect(
            PostgresEndpoint.from_libpq_env(),
            schema=args.pg_schema,
            statement_timeout_s=args.lease_ttl / 3,
        )

    keeper = lease.LeaseKeeper(
        keeper_pg,
        name,
        owner,
        args.lease_ttl,
        on_lost=stop_writing,
        should_stop=lambda c: control.stop_reason(c, name, started_at),
        on_stop=request_stop,
        also=leases[1:],
    )
    keeper.start()
    failed: list[tuple[str, str]] = []
    crash: BaseException | None = None
    try:
        outcomes = ColumnarOutcomes()
        spark.streams.addListener(PostgresProgressListener(args.pg_schema, outcomes.get))
        if args.accept_retention_gap:
            log.warning(
                "operator accepted a retention gap: draining once with failOnDataLoss=false; "
                "offsets that retention removed are skipped (the launch DAG logged which)"
            )
            queries = start_queries(spark, args, owner, True, False, outcomes, resume)
            failed = run_queries(spark, queries, True)
        if not failed and keeper.lost is None and keeper.stop_requested is None:
            bounded = args.mode == "bounded"
            while True:
                try:
                    queries = start_queries(
                        spark, args, owner, bounded, outcomes=outcomes, resume=resume
                    )
                    log.info("started %s in %s mode", [q.name for q in queries], args.mode)
                    failed = run_queries(spark, queries, bounded, stopping)
                except Exception as exc:  # e.g. S3 down while the checkpoint is read
                    queries, failed = [], [("start", first_line(exc))]
                    error: Exception | None = exc
                else:
                    error = None
                if not failed or keeper.lost is not None or stopping.is_set():
                    break
                # A dependency that does not answer: wait for it in this JVM, then resume from
                # the checkpoints; anything else is the app's failure, for Airflow to retry.
                if not outage_over(spark, args, name, pg, keeper, stopping, failed):
                    if error is not None:
                        raise error
                    break
                failed = []
                # awaitAnyTermination() returns at once while a terminated query is on record
                spark.streams.resetTerminated()
            if not failed and keeper.lost is None:
                record_recent_progress(queries, args.pg_schema, outcomes.get)
                for q in queries:
                    progress = q.lastProgress or {}
                    log.info(
                        "query %s done: last batch %s, %s input rows",
                        q.name,
                        progress.get("batchId"),
                        progress.get("numInputRows"),
                    )
    except Exception as exc:  # recorded in stream_runs below, then re-raised
        crash = exc
    finally:
        keeper.stop()
    if keeper.lost is not None:
        code, reason = 4, keeper.lost
    elif crash is not None:
        code, reason = 1, f"driver failed: {type(crash).__name__}: {first_line(crash)}"
    elif failed:
        code, reason = 1, "; ".join(f"query {q} failed: {e}" for q, e in failed)
    else:
        code, reason = 0, keeper.stop_requested or f"{args.mode} run finished"
    (log.error if code else log.info)("exit %s: %s", code, reason)
    conn = pg()
    try:
        control.record_end(conn, owner, code, reason)
        if keeper.lost is None:
            lease.release_all(conn, leases, owner)
    finally:
        conn.close()
    spark.stop()
    if crash is not None:
        raise crash
    return code


if __name__ == "__main__":
    sys.exit(main())
