"""``make bench``: measure, print and record figures (JSON, Markdown and PNG plots under
bench-results/<time>/, the latest copy in docs/benchmarks.md and docs/img/bench/). Figures are
medians of several repetitions after a warm-up, with their spread; the machine is labelled.
Nothing here asserts a time. Scenarios:

* ``dag_parse``  seconds to parse each DAG file (Airflow's ``DagBag`` on that one file, as the
  dag-processor does), target < 0.5 s each; needs no running stack;

* ``generator``  events/s of the generator alone, one Python process (realistic mix);
* ``produce``    events/s generated *and* produced to the local Kafka broker (acks=all);
* ``raw_ceiling`` events/s of a minimal consumer -> Arrow JSON parse -> Parquet on S3,
  draining a pre-loaded backlog (the most a pipeline on this machine could do);
* ``spark_floor`` events/s of the smallest honest Spark job on the same backlog (Kafka ->
  ``from_json`` with the contract's schema -> Parquet file sink: ``bench/spark_floor.py``);
* ``pipeline``   events/s of the streaming app (validate, dedupe, enrich, land exactly once,
  aggregate into Postgres) draining the same backlog in bounded mode, timed from its first
  batch to the end of its last (JVM start excluded), and its ratio to the raw ceiling;
* ``scaleout``   the same on a Spark standalone cluster of 1, then 2, one-core workers: events/s
  per executor core, the figures of docs/deployment.md's capacity model;
* ``latency``    produce->Parquet and produce->Postgres p50/p95/p99 at 25/50/75 % of the
  pipeline's capacity, the CPU per query, and the footprint idle / under load
  (``bench/latency.py``);
* ``restart``    a stream SIGKILLed just before its first state snapshot and started again:
  what replaying the state's changelogs adds to its first batch (``bench/restart.py``);
* ``compaction`` a synthetic day of ~2,160 small files (the stream's transforms through Spark's
  file sink) compacted into Iceberg: files, bytes, MB/s per core, seconds per phase, scan time
  before / after (``bench/compaction.py``).

``docs/benchmarks.md`` takes this run's sections and keeps the committed ones of scenarios it
did not run (``bench-results/latest.json`` when it exists, else the Markdown's own sections).

Why these libraries: matplotlib (headless Agg) for the plots, the de-facto standard with no
display or browser needed; psutil for RSS and CPU of process trees; pyarrow for the raw
ceiling and the scans (the same reader before and after compaction).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING

from bench.latency import JVM_WARMUP_S, LEVEL_SECONDS, LEVELS, TRIGGER
from bench.sandbox import analytics_schema, dropped_after

if TYPE_CHECKING:
    from devstack.scaleout import SparkStandalone

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "bench-results"
TARGETS = {"generator": 200_000.0}
DAG_PARSE_TARGET_S = 0.5
RATIO_TARGET = 0.5  # pipeline >= 0.5 x raw ceiling
FLOOR_RATIO_TARGET = 0.8  # pipeline >= 0.8 x the Spark floor
MIX = dict(bad_share=0.02, irrelevant_share=0.03, duplicate_share=0.01, out_of_order_share=0.02)


def measure(fn: Callable[[], int | tuple[int, float]], reps: int, warmup: int) -> dict:
    """Rates of ``fn`` over ``reps`` runs. ``fn`` returns the events it handled, or the events
    and the seconds it measured itself (to leave out a start-up)."""
    for _ in range(warmup):
        fn()
    rates = []
    for _ in range(reps):
        t0 = time.perf_counter()
        out = fn()
        n, seconds = out if isinstance(out, tuple) else (out, time.perf_counter() - t0)
        rates.append(n / seconds)
    return {
        "median": statistics.median(rates),
        "min": min(rates),
        "max": max(rates),
        "reps": reps,
        "unit": "events/s",
    }


def bench_generator(events: int) -> Callable[[], int]:
    from include.events.generator import GeneratorConfig, iter_events

    def run() -> int:
        return sum(1 for _ in islice(iter_events(GeneratorConfig(seed=7, **MIX)), events))

    return run


def bench_produce(events: int) -> Callable[[], int]:
    from confluent_kafka.admin import AdminClient, NewTopic

    from devstack import stack
    from include.events.generator import GeneratorConfig, iter_events
    from include.events.producer import produce

    ctx = stack.context(sandbox=True)  # its lakes are sandboxes (it/<id>/)
    if not stack.is_up(ctx):
        stack.up(ctx)
    admin = AdminClient({"bootstrap.servers": ctx.settings.kafka_bootstrap})
    topic = f"bench.produce.{uuid.uuid4().hex[:8]}"
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(30)

    import atexit

    atexit.register(lambda: admin.delete_topics([topic])[topic].result(30))

    def run() -> int:
        record = produce(
            iter_events(GeneratorConfig(seed=7, **MIX)),
            topic=topic,
            bootstrap_servers=ctx.settings.kafka_bootstrap,
            count=events,
        )
        return record.events

    return run


def _backlog(events: int) -> tuple:
    """The running stack and a topic pre-loaded once with ``events`` realistic, well-formed
    events (both drains read the same records); removed at exit."""
    import atexit

    from confluent_kafka.admin import AdminClient, NewTopic

    from devstack import stack
    from include.events.generator import GeneratorConfig, iter_events
    from include.events.producer import produce

    ctx = stack.context(sandbox=True)  # its lakes are sandboxes (it/<id>/)
    if not stack.is_up(ctx):
        stack.up(ctx)
    key = ("backlog", events)
    if key not in _CACHE:
        admin = AdminClient({"bootstrap.servers": ctx.settings.kafka_bootstrap})
        topic = f"bench.backlog.{uuid.uuid4().hex[:8]}"
        admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[
            topic
        ].result(30)
        atexit.register(lambda: admin.delete_topics([topic])[topic].result(30))
        mix = dict(irrelevant_share=0.03, duplicate_share=0.01, out_of_order_share=0.02)
        produce(
            iter_events(GeneratorConfig(seed=11, **mix)),
            topic=topic,
            bootstrap_servers=ctx.settings.kafka_bootstrap,
            count=events,
        )
        _CACHE[key] = topic
    return ctx, _CACHE[key]


_CACHE: dict = {}


def bench_raw_ceiling(events: int) -> Callable[[], int]:
    """confluent-kafka consumer -> pyarrow.json -> Parquet files on the S3 server."""
    import io

    import pyarrow.json as pj
    import pyarrow.parquet as pq
    from confluent_kafka import Consumer, TopicPartition

    ctx, topic = _backlog(events)
    s3 = ctx.s3_root.pyarrow_filesystem()
    prefix = f"{ctx.settings.bucket}/bench/raw_ceiling/{uuid.uuid4().hex[:8]}"

    def run() -> int:
        consumer = Consumer(
            {
                "bootstrap.servers": ctx.settings.kafka_bootstrap,
                "group.id": f"bench-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "fetch.max.bytes": 64 * 1024 * 1024,
            }
        )
        parts = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        consumer.assign([TopicPartition(topic, p, 0) for p in parts])
        done, batch, files = 0, [], 0
        while done < events:
            for msg in consumer.consume(10_000, timeout=1.0):
                if msg.error() is None:
                    batch.append(msg.value())
            if len(batch) >= 50_000 or (batch and done + len(batch) >= events):
                table = pj.read_json(io.BytesIO(b"\n".join(batch)))
                pq.write_table(table, f"{prefix}/part-{files:05d}.parquet", filesystem=s3)
                done, batch, files = done + len(batch), [], files + 1
        consumer.close()
        return done

    return run


def task_cpu_seconds(event_log_dir: Path, since_ms: float | None = None) -> float:
    """The executors' CPU seconds of the tasks in the Spark event logs under a directory
    (``Executor CPU Time`` of each ``SparkListenerTaskEnd``, in ns); with ``since_ms`` (epoch
    milliseconds), of the tasks launched from then on only."""
    total = 0
    for f in event_log_dir.rglob("*"):
        if not f.is_file():
            continue
        with f.open() as fh:
            for line in fh:
                if '"SparkListenerTaskEnd"' not in line:
                    continue
                event = json.loads(line)
                if since_ms is not None and event["Task Info"]["Launch Time"] < since_ms:
                    continue
                total += (event.get("Task Metrics") or {}).get("Executor CPU Time", 0)
    return total / 1e9


def bench_pipeline(
    events: int,
    cluster: SparkStandalone | None = None,
    cpu: list[dict] | None = None,
    engine: str = "auto",
) -> Callable[[], tuple[int, float]]:
    """spark_apps/stream_events.py in bounded mode on a fresh checkpoint, lake prefix and
    Postgres schema each time; seconds from its first batch's start to its last batch's end.
    On the stack's master (``local[*]``), or on a standalone ``cluster``'s. With ``cpu``, each
    run also appends its events, its tasks' CPU seconds (Spark's event log) and the CPU
    seconds of spark-submit and the driver (the children's rusage: on ``local[*]`` this
    includes the tasks). ``engine``: the stream's ``--engine``."""
    import dataclasses
    import resource
    import tempfile

    from devstack.spark import Submit, run_app
    from include import pipeline
    from include.analytics import store
    from include.events.catalog import build_catalog
    from include.lake.s3 import sandbox_prefix
    from include.spark.jobs import StreamJob

    ctx, topic = _backlog(events)
    secret = ""
    if cluster is not None:
        settings = dataclasses.replace(ctx.settings, spark_master=cluster.master_url)
        ctx, secret = dataclasses.replace(ctx, settings=settings), cluster.secret

    def run() -> tuple[int, float]:
        sid = uuid.uuid4().hex[:8]
        schema, prefix = f"bench_{sid}", sandbox_prefix(f"bench-pipeline-{sid}")
        with analytics_schema(ctx, schema) as conn:
            return _pipeline_run(conn, schema, prefix)

    def _pipeline_run(conn, schema: str, prefix: str) -> tuple[int, float]:
        store.publish_catalog(conn, build_catalog())
        b = ctx.settings.bucket
        job = StreamJob(
            bootstrap_servers=ctx.settings.kafka_bootstrap,
            topic=topic,
            lake_path=pipeline.s3a(b, f"{prefix}/raw"),
            dead_letter_path=pipeline.s3a(b, f"{prefix}/dead_letter"),
            checkpoint_root=pipeline.s3a(b, f"{prefix}/_checkpoints"),
            pg_schema=schema,
            mode="bounded",
            engine=engine,
        )
        log = ctx.settings.logs_dir / f"bench-pipeline-{engine}.log"
        with (
            tempfile.TemporaryDirectory(prefix="rtap-bench-eventlog-") as event_log,
            dropped_after(ctx, prefix),
        ):
            conf = {} if cpu is None else _event_log_conf(event_log)
            before = resource.getrusage(resource.RUSAGE_CHILDREN)
            run_app(ctx, job, log, how=Submit(secret=secret, extra_conf=conf))
            after = resource.getrusage(resource.RUSAGE_CHILDREN)
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT extract(epoch FROM max(ts + batch_duration_ms * interval '1 ms') "
                    "- min(ts)), sum(input_rows) FILTER (WHERE query_name = 'lake') "
                    "FROM stream_progress WHERE input_rows > 0"
                )
                seconds, rows = cur.fetchone()
            if cpu is not None:
                driver_s = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
                cpu.append(
                    {"rows": int(rows), "driver_cpu_s": driver_s, **_task_cpu(conn, event_log)}
                )
        return int(rows), float(seconds)

    return run


def _task_cpu(conn, event_log: str) -> dict[str, float]:
    """A bounded run's tasks' CPU seconds (Spark's event log), all of them and those of the
    batches after the first with their rows: the warm batches (the first one warms the JVMs
    up: its JIT, Spark's code generation, the connections)."""
    with conn.cursor() as cur:
        cur.execute(
            "WITH b AS (SELECT batch_id, ts + batch_duration_ms * interval '1 ms' AS end_ts, "
            "input_rows FROM stream_progress WHERE query_name = 'lake' AND input_rows > 0) "
            "SELECT extract(epoch FROM (SELECT end_ts FROM b ORDER BY batch_id LIMIT 1)) "
            "* 1000, (SELECT sum(input_rows) FROM b WHERE batch_id > "
            "(SELECT min(batch_id) FROM b))"
        )
        first_end_ms, warm_rows = cur.fetchone()
    return {
        "task_cpu_s": task_cpu_seconds(Path(event_log)),
        "warm_rows": int(warm_rows or 0),
        "warm_task_cpu_s": task_cpu_seconds(Path(event_log), float(first_end_ms)),
    }


def _event_log_conf(directory: str) -> dict[str, str]:
    """Spark properties that write an uncompressed event log into ``directory``."""
    return {
        "spark.eventLog.enabled": "true",
        "spark.eventLog.dir": Path(directory).as_uri(),
        "spark.eventLog.compress": "false",
    }


SCALEOUT_WORKERS = (1, 2)
# Events per repetition of the throughput scenarios: five of the pipeline's batches
# (``maxOffsetsPerTrigger`` 200,000), so that a drain measures warm JVMs as a long-running
# stream has them, not mostly one cold batch. With one batch the floor's ran mostly its JIT's
# warm-up and the pipeline/floor ratio read 0.47x where warm drains read ~0.35x
# (bench/limits.md, 2026-12-05). The scale-out drains the same backlog, and reports its
# batches after the first apart (warm executors: the capacity model's figure).
DEFAULT_EVENTS = 1_000_000
SCALEOUT_EVENTS = 1_000_000


def bench_scaleout(events: int, reps: int, warmup: int) -> dict:
    """The pipeline (as :func:`bench_pipeline`) on a Spark standalone cluster of 1, then 2,
    workers of one core each (devstack/scaleout.py) on the same backlog: events/s, and events/s
    per executor core, the figures of the capacity model in docs/deployment.md."""
    from devstack.scaleout import SparkStandalone, scaleout_ports

    ctx, _ = _backlog(events)
    out = {}
    for workers in SCALEOUT_WORKERS:
        cluster = SparkStandalone(ctx, scaleout_ports(os.environ), workers=workers, cores=1)
        cluster.stop()  # leftovers of an interrupted run
        cluster.start()
        cpu: list[dict] = []
        try:
            cluster.wait_healthy()
            r = measure(bench_pipeline(events, cluster, cpu), reps, warmup)
        finally:
            cluster.stop()
        measured = cpu[warmup:]  # the warm-up runs' figures are not the measurement's
        per_task_s = statistics.median(c["rows"] / c["task_cpu_s"] for c in measured)
        warm = [c["warm_rows"] / c["warm_task_cpu_s"] for c in measured if c["warm_task_cpu_s"]]
        driver_s = statistics.median(c["driver_cpu_s"] for c in measured)
        out[str(workers)] = {
            **r,
            "events": events,
            "executor_cores": workers,
            "per_core": r["median"] / workers,
            "events_per_task_cpu_s": per_task_s,
            # The batches after the first (None with a backlog of one batch).
            "warm_events_per_task_cpu_s": statistics.median(warm) if warm else None,
            "driver_cpu_s": driver_s,
        }
        print(
            f"    {workers} worker(s) x 1 core: median {r['median']:,.0f} events/s "
            f"[{r['min']:,.0f} - {r['max']:,.0f}], {r['median'] / workers:,.0f} per core; "
            f"{per_task_s:,.0f} events per task CPU second "
            f"({statistics.median(warm) if warm else float('nan'):,.0f} after the first batch); "
            f"driver {driver_s:.0f} CPU s a run",
            flush=True,
        )
    return out


def bench_spark_floor(events: int) -> Callable[[], tuple[int, float]]:
    """bench/spark_floor.py (Kafka -> from_json -> Parquet file sink, nothing else) on the same
    backlog, a fresh prefix each time; seconds from its first batch's start to its last's end."""
    import subprocess

    from devstack.spark import SparkAppError, submit_argv, submit_env
    from include import connections, pipeline
    from include.lake.s3 import sandbox_prefix

    ctx, topic = _backlog(events)
    log_file = ctx.settings.logs_dir / "bench-spark-floor.log"
    result = ctx.settings.logs_dir / "bench-spark-floor.json"

    def run() -> tuple[int, float]:
        # The stream's S3 user, which writes under a sandbox's raw/ (the floor's Parquet and
        # its checkpoint).
        root = sandbox_prefix(f"bench-floor-{uuid.uuid4().hex[:8]}")
        prefix = pipeline.s3a(ctx.settings.bucket, f"{root}/raw")
        args = [
            "--bootstrap-servers", ctx.settings.kafka_bootstrap, "--topic", topic,
            "--path", prefix, "--result", str(result),
        ]  # fmt: skip
        result.unlink(missing_ok=True)
        with open(log_file, "w") as log, dropped_after(ctx, root):
            argv = submit_argv(ctx, str(ROOT / "bench" / "spark_floor.py"), args)
            env = submit_env(ctx, connections.S3)
            code = subprocess.run(argv, stdout=log, stderr=log, env=env).returncode
        if code != 0 or not result.exists():
            raise SparkAppError(f"bench/spark_floor.py failed (exit {code}); see {log_file}")
        figures = json.loads(result.read_text())
        return int(figures["rows"]), float(figures["seconds"])

    return run


SCENARIOS = {
    "generator": bench_generator,
    "produce": bench_produce,
    "raw_ceiling": bench_raw_ceiling,
    "spark_floor": bench_spark_floor,
    "pipeline": bench_pipeline,
    # The stream's row engine (--engine rows: the engine on a cluster) on the same backlog;
    # "pipeline" runs the default (auto: the columnar core on the stack's local master).
    "pipeline_rows": partial(bench_pipeline, engine="rows"),
}


def bench_dag_parse(reps: int, warmup: int) -> dict[str, dict]:
    """Parse seconds per DAG file: median and spread of ``reps`` parses after ``warmup``.

    Each parse is a fresh ``DagBag`` of the one file (the module is imported again); Airflow
    and our ``include`` packages stay imported, as in the long-running dag-processor."""
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    from airflow.dag_processing.dagbag import DagBag

    out: dict[str, dict] = {}
    for path in sorted((ROOT / "dags").glob("*.py")):
        times: list[float] = []
        dags = 0
        for i in range(warmup + reps):
            t0 = time.perf_counter()
            bag = DagBag(dag_folder=str(path), safe_mode=False)
            elapsed = time.perf_counter() - t0
            if bag.import_errors:
                raise RuntimeError(f"{path.name} does not parse: {bag.import_errors}")
            dags = len(bag.dags)
            if i >= warmup:
                times.append(elapsed)
        out[path.name] = {
            "median_s": statistics.median(times),
            "min_s": min(times),
            "max_s": max(times),
            "dags": dags,
        }
    return out


def machine() -> str:
    import psutil

    return (
        f"{os.cpu_count()} cores {platform.machine()}, "
        f"{psutil.virtual_memory().total / 1024**3:.0f} GiB, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


P99_POSTGRES_GOAL_S = 3.0

TARGET_TEXT = {
    "p99_postgres_at_50": 5.0,  # s (issue 17's target; its goal is P99_POSTGRES_GOAL_S)
    "file_reduction": 100.0,  # x fewer files
    "scan_speedup": 3.5,  # x faster scans
    "mb_per_s_per_core": 5.0,  # compaction throughput
    "idle_rss_gib": 6.0,
}


def _fmt_pct(level: dict, key: str) -> str:
    r = level[key]
    if not r.get("count"):
        return "-"
    return f"{r['p50']:.1f} / {r['p95']:.1f} / {r['p99']:.1f}"


def _ratio(
    scen: dict,
    base: str,
    label: str,
    target: float,
    note: str = "",
    pipeline: str = "pipeline",
    name: str = "Pipeline",
) -> list[str]:
    """The line ``Pipeline / <label>: **N x**`` (the ``pipeline`` scenario's median over
    ``base``'s), flagged when the two figures come from different runs."""
    if pipeline not in scen or base not in scen:
        return []
    ratio = scen[pipeline]["median"] / scen[base]["median"]
    same = scen[pipeline].get("date") == scen[base].get("date")
    where = (
        ", same backlog in the same run."
        if same
        else " — **figures from different runs** (re-run both to compare)."
    )
    return ["", f"{name} / {label}: **{ratio:.2f}x** (target ≥ {target}x{note}){where}"]


def _scope(results: dict) -> str:
    """What the latest run measured, when it was a partial one (``make bench SCENARIOS=...``):
    the page's other figures are older, each with its own date."""
    measured = results.get("measured")
    if not measured or set(measured) >= {*SCENARIOS, *SECTIONS}:
        return ""
    return f" (of {', '.join(measured)}; every other figure says when it was measured)"


def to_markdown(results: dict, images: str) -> str:
    """The report; ``images`` is the plots' directory relative to the Markdown file."""
    lines = [
        "# Benchmarks",
        "",
        f"Latest run of `make bench` on {results['date']}{_scope(results)} — {results['machine']}.",
        "Each throughput figure is the median of several repetitions after a warm-up "
        f"({DEFAULT_EVENTS:,} events per repetition by default: the drains run warm); min-max "
        "in brackets; the last column says when it "
        "was measured. Shared machines are noisy: compare figures of one run, not across runs. "
        "Targets are reported against, never asserted in tests.",
    ]
    scen = results["scenarios"]
    if scen:
        lines += [
            "",
            "## Throughput",
            "",
            "| scenario | median | spread | target | measured |",
            "|---|---:|---:|---:|---|",
        ]
    for name, r in scen.items():
        target = TARGETS.get(name)
        lines.append(
            f"| {name} | {r['median']:,.0f} {r['unit']} | [{r['min']:,.0f} - {r['max']:,.0f}] | "
            f"{f'≥ {target:,.0f}' if target else ''} | {r.get('date', results['date'])} |"
        )
    floor_note = (
        "; the floor is `bench/spark_floor.py`: Kafka -> `from_json` with the contract's schema "
        "-> Parquet file sink, no validation, dedupe, dead letters or aggregates"
    )
    lines += _ratio(scen, "spark_floor", "Spark floor", FLOOR_RATIO_TARGET, floor_note)
    lines += _ratio(scen, "raw_ceiling", "raw ceiling", RATIO_TARGET)
    for base, label, target in (
        ("spark_floor", "Spark floor", FLOOR_RATIO_TARGET),
        ("raw_ceiling", "raw ceiling", RATIO_TARGET),
    ):
        lines += _ratio(
            scen,
            base,
            label,
            target,
            pipeline="pipeline_rows",
            name="Pipeline with `--engine rows` (the engine on a cluster; docs/architecture.md)",
        )
    lines += ["", f"![throughput]({images}/throughput.png)"] if scen else []

    so = results.get("scaleout")
    if so:
        lines += [
            "",
            f"## Scale-out ({results.get('scaleout_date')})",
            "",
            "The pipeline (as above) on a Spark standalone cluster of workers with one executor "
            "core each (`python -m devstack scaleout`), on a backlog of "
            f"{next(iter(so.values())).get('events', 200_000):,} events (batches of the "
            "stream's 200,000); the driver, the broker and MinIO share the same 2 cores. The "
            "figures of the capacity model (docs/deployment.md).",
            "",
            "| workers x cores | median | spread | per executor core | events per task CPU "
            "second | after the first batch | driver CPU s per run |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for r in so.values():
            warm = r.get("warm_events_per_task_cpu_s")
            lines.append(
                f"| {r['executor_cores']} x 1 | {r['median']:,.0f} events/s | "
                f"[{r['min']:,.0f} - {r['max']:,.0f}] | {r['per_core']:,.0f} events/s | "
                f"{r['events_per_task_cpu_s']:,.0f} | {f'{warm:,.0f}' if warm else '-'} | "
                f"{r['driver_cpu_s']:,.0f} |"
            )
        lines += [
            "",
            "Events per task CPU second: the run's events over the CPU time of all its tasks "
            "(Spark's event log), what one fully available executor core would drain; after "
            "the first batch: the same for the batches that follow it (the tasks launched "
            "after its end), once the executors' JVMs are warm, as a long-running stream's "
            "are; the driver's CPU (spark-submit, the driver's JVM and Python, the JVM's start "
            "included) is the children's rusage of a run.",
        ]

    lat = results.get("latency")
    if lat:
        lines += [
            "",
            f"## Latency ({results.get('latency_date')})",
            "",
            f"The stream in continuous mode (trigger {lat['trigger']}) on a fresh topic; live "
            f"events at shares of the capacity ({lat['capacity']:,.0f} events/s, "
            f"{lat['capacity_source']}), {lat['warmup_s']:.0f} s warm-up then "
            f"{lat['seconds_per_level']:.0f} s measured per level"
            + (
                f" (the first level after {lat['jvm_warmup_s']:.0f} s: a fresh driver's JIT "
                "compiles Spark's hot paths for minutes, and the deduplication's state fills "
                "its horizon)"
                if lat.get("jvm_warmup_s")
                else ""
            )
            + ". Exact per event: Kafka "
            "CreateTime to the end of the micro-batch that committed it (progress offsets).",
            "",
            "| load | rate sent | produce → Parquet p50 / p95 / p99 (s) | produce → Postgres "
            "p50 / p95 / p99 (s) | events | driver cores | machine busy |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for lv in lat["levels"]:
            lines.append(
                f"| {lv['share']:.0%} | {lv['achieved_rate']:,.0f}/s | "
                f"{_fmt_pct(lv, 'produce_to_parquet_s')} | {_fmt_pct(lv, 'produce_to_postgres_s')}"
                f" | {lv['sent']:,} | {lv.get('driver_cores', 0):.2f} | "
                f"{lv.get('machine_busy', 0):.0%} |"
            )
        half = [lv for lv in lat["levels"] if lv["share"] == 0.5]
        if half and half[0]["produce_to_postgres_s"].get("count"):
            p99 = half[0]["produce_to_postgres_s"]["p99"]
            target = TARGET_TEXT["p99_postgres_at_50"]
            lines += [
                "",
                f"p99 produce → Postgres at 50 %: **{p99:.1f} s** (target ≤ {target:.0f} s: "
                f"{'met' if p99 <= target else 'missed'}; goal {P99_POSTGRES_GOAL_S:.0f} s).",
            ]
        phases = lat.get("median_durations_ms") or {}
        if phases:
            lines += [
                "",
                "Where a micro-batch's time goes (median ms per phase, Spark's `durationMs`):",
                "",
                "| query | addBatch | queryPlanning | walCommit | commitOffsets | total |",
                "|---|---:|---:|---:|---:|---:|",
            ]
            for q, d in phases.items():
                lines.append(
                    f"| {q} | {d.get('addBatch', 0):,.0f} | {d.get('queryPlanning', 0):,.0f} | "
                    f"{d.get('walCommit', 0):,.0f} | {d.get('commitOffsets', 0):,.0f} | "
                    f"{d.get('triggerExecution', 0):,.0f} |"
                )
        cpu = lat.get("task_cpu_by_query") or {}
        if cpu:
            total = sum(q["cpu_s"] for q in cpu.values()) or 1.0
            lines += [
                "",
                "CPU of the Spark tasks per query over the whole run (the driver's REST API; "
                "`other` is work outside a batch, e.g. the catalog reads):",
                "",
                "| query | task CPU s | share | task run s | tasks |",
                "|---|---:|---:|---:|---:|",
            ]
            for q, d in sorted(cpu.items(), key=lambda kv: -kv[1]["cpu_s"]):
                lines.append(
                    f"| {q} | {d['cpu_s']:,.1f} | {d['cpu_s'] / total:.0%} | {d['run_s']:,.1f} | "
                    f"{d['tasks']:,} |"
                )
        lines += ["", f"![latency]({images}/latency.png)"]

    r = results.get("restart")
    if r:
        from include import pipeline
        from include.supervision import health

        st = r["state"]
        replay_mib = st.get("replay_mib", st["changelog_mib"])  # the health check's reading
        policy = health.Policy()
        first_batch_limit = policy.stall_after_s + health.replay_allowance_s(
            int(replay_mib * 2**20), policy
        )
        lines += [
            "",
            f"## Restart after a crash ({results.get('restart_date')})",
            "",
            f"The stream (trigger {r['trigger']}) ran at {r['rate']:,.0f} events/s (half the "
            f"pipeline's capacity) for {r['loaded_s']:.0f} s ({r['events']:,} events) and was "
            f"SIGKILLed after batch {r['killed_after_batch']}, just before its first state "
            f"snapshot (one every {r['snapshot_every']} batches): the checkpoint held "
            f"{st['changelogs']:,} changelogs ({st['changelog_mib']:,.1f} MiB) for the new "
            f"driver to replay. Each start got a burst of {restart_burst():,} events.",
            "",
            "| | fresh start | restart after the kill |",
            "|---|---:|---:|",
            f"| spawn to the end of the first batch | {r['fresh']['to_first_batch_s']:.1f} s | "
            f"{r['restart']['to_first_batch_s']:.1f} s |",
            f"| the first batch | {r['fresh']['first_batch_s']:.1f} s | "
            f"{r['restart']['first_batch_s']:.1f} s |",
            "",
            f"The replay: **{r['replay_s']:.1f} s** more in the restarted driver's first batch. "
            f"The health check lets that batch run {first_batch_limit:.0f} s before it calls "
            f"the query wedged ({pipeline.STALL_AFTER_S} s, plus the replay of "
            f"{replay_mib:,.1f} MiB at {pipeline.REPLAY_MIB_PER_S:g} MiB/s: "
            "`include/supervision/health.py`).",
        ]

    c = results.get("compaction")
    if c:
        lines += [
            "",
            f"## Compaction ({results.get('compaction_date')})",
            "",
            f"A synthetic day ({c['day']}: {c['rows']:,} distinct events in "
            f"{c['files_before']:,} small files, landed through the stream's transforms and "
            "Spark's file sink), compacted into Iceberg (`compact_events.py`"
            + (f", its {c['engine']} engine" if c.get("engine") else "")
            + ", verified); the "
            "scan is the same pyarrow query (revenue by category) over the day's files before "
            "and after.",
            "",
            "| | raw lake | Iceberg | change | target |",
            "|---|---:|---:|---:|---:|",
            f"| files | {c['files_before']:,} | {c['files_after']:,} | "
            f"{c['file_reduction']:,.0f}x fewer | ≥ {TARGET_TEXT['file_reduction']:.0f}x |",
            f"| bytes | {c['bytes_before'] / 1024**2:,.1f} MiB | "
            f"{c['bytes_after'] / 1024**2:,.1f} MiB | | |",
            f"| scan of the day | {c['scan_before']['median_s']:.3f} s | "
            f"{c['scan_after']['median_s']:.3f} s | {c['scan_speedup']:.1f}x faster | "
            f"≥ {TARGET_TEXT['scan_speedup']}x |",
            "",
            f"Compaction: {c['rows']:,} rows in {c['seconds']:.1f} s (read, dedupe, write; JVM "
            f"start excluded) = **{c['mb_per_s_per_core']:.2f} MB/s per core** on "
            f"{c['cores']} cores (target ≥ {TARGET_TEXT['mb_per_s_per_core']} MB/s per core). "
            "Where the run's time goes (seconds per phase, `phases` of its report): "
            + ", ".join(f"{k} {v:.1f}" for k, v in (c.get("phases") or {}).items())
            + (
                f"; {sum(c['phases'].values()):.1f} s in all from the read to the marts"
                if c.get("phases")
                else ""
            )
            + ".",
        ]
        lines += ["", f"![compaction]({images}/compaction.png)"]

    f = results.get("footprint")
    if f:
        names = sorted(set(f["idle"]) | set(f["load"]))
        idle_total, load_total = sum(f["idle"].values()), sum(f["load"].values())
        lines += [
            "",
            f"## Footprint ({results.get('footprint_date')})",
            "",
            "RSS of each component's process tree: idle (stack up, no stream) and under load "
            f"(median of samples every 5 s during the {f['load_share']:.0%} level).",
            "",
            "| component | idle MiB | load MiB |",
            "|---|---:|---:|",
        ]
        for n in names:
            idle = f["idle"].get(n)
            lines.append(
                f"| {n} | {'' if idle is None else f'{idle:,.0f}'} | {f['load'].get(n, 0):,.0f} |"
            )
        lines += [
            f"| **total** | **{idle_total:,.0f}** | **{load_total:,.0f}** |",
            "",
            f"Idle stack: {idle_total / 1024:.1f} GiB (target < "
            f"{TARGET_TEXT['idle_rss_gib']:.0f} GiB).",
            "",
            f"![footprint]({images}/footprint.png)",
        ]

    parse = results.get("dag_parse")
    if parse:
        slow = [f for f, r in parse.items() if r["median_s"] >= DAG_PARSE_TARGET_S]
        lines += [
            "",
            f"## DAG parse time ({results.get('dag_parse_date', results['date'])})",
            "",
            "One `DagBag` per file with Airflow and our modules already imported, as in the "
            f"dag-processor; target < {DAG_PARSE_TARGET_S} s each; {len(slow)} over.",
            "",
            "| DAG file | median | spread |",
            "|---|---:|---:|",
        ]
        for file, r in parse.items():
            lines.append(
                f"| {file} | {r['median_s'] * 1000:,.0f} ms | "
                f"[{r['min_s'] * 1000:,.0f} - {r['max_s'] * 1000:,.0f}] ms |"
            )
    lines += ["", LIMITS.read_text().strip(), ""]
    return "\n".join(lines)


LIMITS = Path(__file__).parent / "limits.md"
LIMITS_HEADING = "## What limits each figure"


def with_limits(md: str) -> str:
    """``md`` (docs/benchmarks.md) with its closing section, what limits each figure, taken
    again from ``bench/limits.md``: the committed figures stay as they are."""
    head = md.split(f"\n{LIMITS_HEADING}", 1)[0]
    return head.rstrip("\n") + "\n\n" + LIMITS.read_text().strip() + "\n"


def merge_latest(results: dict) -> dict:
    """This run's figures over the latest ones of scenarios it did not run (each keeps its
    date), kept in ``bench-results/latest.json``: ``make bench SCENARIOS=x`` updates x only."""
    latest_file = RESULTS / "latest.json"
    latest = json.loads(latest_file.read_text()) if latest_file.exists() else {}
    # Without a latest.json (a fresh clone), the committed page's throughput rows stand for
    # the scenarios this run did not measure, as its other sections do (carry_sections).
    docs = ROOT / "docs" / "benchmarks.md"
    committed = committed_throughput(docs.read_text()) if docs.exists() else {}
    merged = {**results, "scenarios": {**committed, **latest.get("scenarios", {})}}
    for gone in set(merged["scenarios"]) - set(SCENARIOS):  # a scenario since renamed
        del merged["scenarios"][gone]
    for name, r in results["scenarios"].items():
        merged["scenarios"][name] = {**r, "date": results["date"]}
    merged["measured"] = [*results["scenarios"], *(s for s in SECTIONS if s in results)]
    for section in SECTIONS:
        if section in results:
            merged[f"{section}_date"] = results["date"]
        elif section in latest:
            merged[section] = latest[section]
            merged[f"{section}_date"] = latest.get(f"{section}_date")
    latest_file.write_text(json.dumps(merged, indent=2))
    return merged


def _sections(md: str) -> tuple[str, dict[str, str]]:
    """The text before the first ``## `` heading, and each section by its heading's name (the
    words before any date in brackets)."""
    head, *parts = md.split("\n## ")
    return head, {part.split("\n", 1)[0].split(" (")[0]: "## " + part for part in parts}


def carry_sections(new: str, old: str) -> str:
    """``new`` with the sections of ``old`` it lacks, each after the section it followed in
    ``old`` (``new``'s own in their order): the record of
    scenarios this run did not measure, when no ``latest.json`` holds them (a fresh clone
    runs ``make bench SCENARIOS=compaction`` and keeps the committed figures of the others)."""
    head, fresh = _sections(new)
    _, kept = _sections(old)
    if not kept:
        return new
    names = list(fresh)
    previous = None
    for n in kept:  # each kept-only section right after the one it followed in ``old``
        if n not in names:
            names.insert(names.index(previous) + 1 if previous in names else 0, n)
        previous = n
    body = [fresh.get(n) or kept[n] for n in names]
    return (
        "\n".join([head.rstrip("\n"), "", *(b.rstrip("\n") + "\n" for b in body)]).rstrip("\n")
        + "\n"
    )


SECTIONS = ("dag_parse", "scaleout", "latency", "restart", "compaction", "footprint")


def restart_burst() -> int:
    from bench.restart import BURST

    return BURST


DEFAULT_CAPACITY = 4_000.0  # events/s, when no pipeline figure was ever measured


def capacity(results: dict) -> tuple[float, str]:
    """The pipeline's measured capacity: this run's figure, else the latest recorded one."""
    if "pipeline" in results["scenarios"]:
        return results["scenarios"]["pipeline"]["median"], "this run"
    latest_file = RESULTS / "latest.json"
    if latest_file.exists():
        prior = json.loads(latest_file.read_text()).get("scenarios", {}).get("pipeline")
        if prior:
            return prior["median"], f"pipeline figure of {prior.get('date')}"
    docs = ROOT / "docs" / "benchmarks.md"
    committed = committed_pipeline(docs.read_text()) if docs.exists() else None
    if committed:  # a fresh clone: the figure on the page
        return committed
    return DEFAULT_CAPACITY, "default (no pipeline figure yet)"


# A row of the page's throughput table (:func:`to_markdown`): name, median and unit, spread,
# target, when it was measured.
_THROUGHPUT_ROW = re.compile(
    r"^\| (\w+) \| ([\d,.]+) ([^|]+?) \| \[([\d,.]+) - ([\d,.]+)\] \|[^|]*\| ([^|]+?) \|$", re.M
)


def committed_throughput(md: str) -> dict[str, dict]:
    """The scenarios' figures in docs/benchmarks.md's throughput table, by name."""
    _, sections = _sections(md)

    def number(text: str) -> float:
        return float(text.replace(",", ""))

    return {
        m[1]: {
            "median": number(m[2]),
            "unit": m[3],
            "min": number(m[4]),
            "max": number(m[5]),
            "date": m[6],
        }
        for m in _THROUGHPUT_ROW.finditer(sections.get("Throughput", ""))
    }


def committed_pipeline(md: str) -> tuple[float, str] | None:
    """The pipeline's events/s and date in docs/benchmarks.md's throughput table."""
    pipeline = committed_throughput(md).get("pipeline")
    if pipeline is None:
        return None
    return pipeline["median"], f"pipeline figure of {pipeline['date']} (docs)"


def run_latency(results: dict, args: argparse.Namespace) -> dict:
    from bench import latency
    from devstack import stack

    ctx = stack.context(sandbox=True)  # its lakes are sandboxes (it/<id>/)
    if not stack.is_up(ctx):
        stack.up(ctx)
    cap, source = capacity(results)
    print(f"    capacity {cap:,.0f} events/s ({source}); trigger {args.trigger}", flush=True)
    out = latency.run(
        ctx,
        cap,
        seconds=args.level_seconds,
        warmup=args.level_warmup,
        jvm_warmup=args.jvm_warmup,
        trigger=args.trigger,
    )
    out["capacity_source"] = source
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench")
    known = [*SCENARIOS, "scaleout", "latency", "restart", "compaction", "dag_parse"]
    p.add_argument("scenarios", nargs="*", help=f"any of {', '.join(known)} (default: all)")
    p.add_argument(
        "--events",
        type=int,
        default=DEFAULT_EVENTS,
        help="events per repetition of the throughput scenarios (default: five of the "
        "pipeline's batches, so that the drains run warm)",
    )
    p.add_argument("--scaleout-events", type=int, default=SCALEOUT_EVENTS)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument(
        "--level-seconds",
        type=float,
        default=LEVEL_SECONDS,
        help="latency: measured s/level (default: one snapshot interval of the stream's state)",
    )
    p.add_argument("--level-warmup", type=float, default=15.0, help="latency: warm-up s/level")
    p.add_argument(
        "--jvm-warmup",
        type=float,
        default=JVM_WARMUP_S,
        help="latency: warm-up s before the first level",
    )
    p.add_argument("--trigger", default=TRIGGER, help="latency and restart: the stream's trigger")
    p.add_argument(
        "--scaleout-reps", type=int, default=2, help="scaleout: repetitions per cluster size"
    )
    p.add_argument("--compaction-files", type=int, default=2_160, help="compaction: small files")
    p.add_argument("--compaction-events", type=int, default=500_000, help="compaction: events")
    p.add_argument(
        "--report-only",
        action="store_true",
        help="measure nothing: redraw the plots and docs/benchmarks.md from the latest figures "
        "(without bench-results/latest.json, as on a fresh clone: only bench/limits.md's text)",
    )
    args = p.parse_args(argv)
    if args.report_only:
        latest_file = RESULTS / "latest.json"
        if latest_file.exists():
            publish(json.loads(latest_file.read_text()), RESULTS / "report")
        else:  # the figures are the committed ones: the text about them is refreshed
            docs = ROOT / "docs" / "benchmarks.md"
            docs.write_text(with_limits(docs.read_text()))
            print(f"{docs}: the limits section refreshed from {LIMITS} (no {latest_file})")
        return 0
    unknown = set(args.scenarios) - set(known)
    if unknown:
        p.error(f"unknown scenario(s) {sorted(unknown)}; known: {known}")
    args.scenarios = args.scenarios or known
    results = {
        "date": f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC",
        "machine": machine(),
        "events": args.events,
        "reps": args.reps,
        "warmup": args.warmup,
        "scenarios": {},
    }
    for name in args.scenarios:
        if name == "dag_parse":
            print(f"==> dag_parse: {args.reps} parses of each DAG file", flush=True)
            results["dag_parse"] = bench_dag_parse(args.reps, args.warmup)
            for file, r in results["dag_parse"].items():
                print(f"    {file:<28} median {r['median_s'] * 1000:,.0f} ms", flush=True)
            continue
        if name == "scaleout":
            print(
                f"==> scaleout: the pipeline on {' and '.join(map(str, SCALEOUT_WORKERS))} "
                f"standalone worker(s), {args.scaleout_reps} x {args.scaleout_events:,} events",
                flush=True,
            )
            results["scaleout"] = bench_scaleout(
                args.scaleout_events, args.scaleout_reps, args.warmup
            )
            continue
        if name == "latency":
            print(
                f"==> latency: {len(LEVELS)} load levels x {args.level_seconds:.0f} s", flush=True
            )
            lat = run_latency(results, args)
            results["footprint"] = lat.pop("footprint")
            results["latency"] = lat
            for lv in lat["levels"]:
                pq_, pg_ = lv["produce_to_parquet_s"], lv["produce_to_postgres_s"]
                print(
                    f"    {lv['share']:.0%}: ->Parquet p50/p95/p99 {pq_['p50']:.1f}/"
                    f"{pq_['p95']:.1f}/{pq_['p99']:.1f} s, ->Postgres {pg_['p50']:.1f}/"
                    f"{pg_['p95']:.1f}/{pg_['p99']:.1f} s",
                    flush=True,
                )
            continue
        if name == "restart":
            from bench import restart
            from devstack import stack

            ctx = stack.context(sandbox=True)
            if not stack.is_up(ctx):
                stack.up(ctx)
            cap, source = capacity(results)
            print(f"==> restart: capacity {cap:,.0f} events/s ({source})", flush=True)
            results["restart"] = restart.run(ctx, cap, trigger=args.trigger)
            print(f"    the replay: {results['restart']['replay_s']:.1f} s", flush=True)
            continue
        if name == "compaction":
            from bench import compaction
            from devstack import stack

            ctx = stack.context(sandbox=True)
            if not stack.is_up(ctx):
                stack.up(ctx)
            print(
                f"==> compaction: a day of {args.compaction_events:,} events in "
                f"~{args.compaction_files:,} small files",
                flush=True,
            )
            results["compaction"] = c = compaction.run(
                ctx,
                files=args.compaction_files,
                events=args.compaction_events,
                reps=args.reps,
                warmup=args.warmup,
            )
            print(
                f"    {c['files_before']:,} files -> {c['files_after']:,}; "
                f"{c['mb_per_s_per_core']:.1f} MB/s/core; scan {c['scan_before']['median_s']:.2f}"
                f" s -> {c['scan_after']['median_s']:.2f} s",
                flush=True,
            )
            continue
        print(f"==> {name}: {args.reps} x {args.events:,} events", flush=True)
        r = measure(SCENARIOS[name](args.events), args.reps, args.warmup)
        results["scenarios"][name] = r
        print(
            f"    median {r['median']:,.0f} events/s  [{r['min']:,.0f} - {r['max']:,.0f}]",
            flush=True,
        )
    out = RESULTS / datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=2))
    publish(merge_latest(results), out)
    return 0


def publish(report: dict, out: Path) -> None:
    """Plots and Markdown of ``report`` into ``out``; the latest copy into docs/."""
    from bench import plots

    out.mkdir(parents=True, exist_ok=True)
    images = plots.draw(report, out)
    docs_img = ROOT / "docs" / "img" / "bench"
    docs_img.mkdir(parents=True, exist_ok=True)
    for image in images:
        shutil.copyfile(image, docs_img / image.name)
    (out / "results.md").write_text(to_markdown(report, "."))
    md = to_markdown(report, "img/bench")
    docs = ROOT / "docs" / "benchmarks.md"
    md = carry_sections(md, docs.read_text() if docs.exists() else "")
    docs.write_text(md)
    print(md)
    print(f"results: {out}")


if __name__ == "__main__":
    sys.exit(main())
