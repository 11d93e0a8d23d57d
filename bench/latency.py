"""Latency of the running stream at fixed shares of its measured capacity, and the footprint.

The streaming app (``spark_apps/stream_events.py``) runs in continuous mode on a fresh topic,
lake prefix and Postgres schema. A paced producer sends live events (event time = wall clock)
at 25 / 50 / 75 % of the capacity, one level after the other, each after a warm-up. Every
delivery report gives the record's partition, offset and ``CreateTime`` (set when the producer
took it). Every micro-batch's progress row (``stream_progress``) gives its offset range per
partition, its start and its duration. So each event's latency is exact, not sampled:

* produce -> Parquet:  the end of the ``lake`` batch whose offset range holds the record (its
  files are committed to the sink's log when the batch ends) minus its CreateTime;
* produce -> Postgres: the same batch (its aggregates' transaction
  commits inside the batch), over purchases only (the only events that change the aggregate).

Memory: the RSS of each service's process tree with the stack idle (before the stream starts)
and under load (sampled during the highest level), the stream's driver included.
"""

from __future__ import annotations

import bisect
import contextlib
import json
import os
import signal
import statistics
import subprocess
import threading
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime

import psutil

from include import pipeline
from include.spark import jobs

LEVELS = (0.25, 0.5, 0.75)
# The stream's trigger in the latency and restart benchmarks. At 50 % of the warm capacity a
# 1 s trigger kept the 2 cores 96 % busy with each batch's fixed cost and queued batches
# behind every slow one; 2 s measured p99 4.9-7.4 s against 12.0 s (3 s: 9.2 s;
# bench/limits.md, latency step 6).
TRIGGER = "2 seconds"
# Seconds the stream runs at the first level's rate before anything is measured: a fresh
# driver's JIT compiles Spark's hot paths for minutes (its C1/C2 threads still took ~0.6 of a
# core after 2.5 min on 2026-12-04, JFR); a long-running stream pays that once. And the
# deduplication's state holds a whole horizon of keys from then on, with keys expiring in every
# batch, as it does for as long as the stream runs: measured sooner, the state is smaller and
# nothing expires yet (bench/limits.md, latency: the earlier operator's cost grew with it).
JVM_WARMUP_S = max(300.0, jobs.duration_ms(pipeline.STREAM_DEDUPE_HORIZON) / 1000 + 60)
# Seconds measured per level: one interval of the stream's state snapshots, each of which
# uploads the whole deduplication state in the background (spark_apps/stream_events.py,
# batch_conf), so every level's percentiles include one.
LEVEL_SECONDS = float(pipeline.STREAM_STATE_SNAPSHOT_INTERVAL_S)
MIX = dict(bad_share=0.02, irrelevant_share=0.03, duplicate_share=0.01, out_of_order_share=0.02)
PERCENTILES = (50, 95, 99)


@dataclass
class Level:
    share: float
    rate: float
    # (partition, offset, CreateTime ms) of the measured records; purchases kept apart
    records: list[tuple[int, int, int]] = field(default_factory=list)
    purchases: list[tuple[int, int, int]] = field(default_factory=list)
    sent: int = 0
    seconds: float = 0.0
    driver_cores: float = 0.0  # CPU seconds of the stream's driver per second, measured part
    machine_busy: float = 0.0  # share of all cores busy (every process), measured part


def percentiles(values: list[float]) -> dict[str, float]:
    """p50/p95/p99 (nearest rank), max and count of ``values`` (seconds)."""
    if not values:
        return {"count": 0}
    ordered = sorted(values)
    n = len(ordered)
    out: dict[str, float] = {"count": n, "max": ordered[-1]}
    for p in PERCENTILES:
        out[f"p{p}"] = ordered[min(n - 1, max(0, -(-p * n // 100) - 1))]
    return out


def batch_index(rows: list[tuple[datetime, int, list]]) -> dict[int, tuple[list[int], list]]:
    """Per partition: the sorted end offsets of the batches and, for each, (start offset,
    commit time in ms). ``rows`` are (start, duration ms, sources) of one query's batches."""
    spans: dict[int, list[tuple[int, int, float]]] = defaultdict(list)
    for ts, duration_ms, sources in rows:
        commit_ms = ts.timestamp() * 1000 + duration_ms
        for src in sources:
            end = src.get("endOffset") or {}
            start = src.get("startOffset") or {}
            end = json.loads(end) if isinstance(end, str) else end
            start = json.loads(start) if isinstance(start, str) else start
            for topic, parts in end.items():
                for part, end_off in parts.items():
                    begin = int((start.get(topic) or {}).get(part, 0))
                    if int(end_off) > begin:
                        spans[int(part)].append((int(end_off), begin, commit_ms))
    index = {}
    for part, items in spans.items():
        items.sort()
        index[part] = ([e for e, _, _ in items], [(b, c) for _, b, c in items])
    return index


def latencies(records: list[tuple[int, int, int]], index: dict) -> tuple[list[float], int]:
    """Seconds from CreateTime to the commit of the batch holding each record, and how many
    records no batch holds (still unprocessed when the run ended)."""
    out, missing = [], 0
    for part, offset, created_ms in records:
        ends, spans = index.get(part, ([], []))
        i = bisect.bisect_right(ends, offset)
        if i == len(ends) or spans[i][0] > offset:
            missing += 1
            continue
        out.append((spans[i][1] - created_ms) / 1000)
    return out, missing


def footprint(ctx, extra: dict[str, psutil.Process] | None = None) -> dict[str, float]:
    """RSS (MiB) of each running component's process tree."""
    from devstack.process import tree_rss
    from devstack.services import ALL

    out: dict[str, float] = {}
    for svc in ALL:
        for comp, proc in svc.running(ctx).items():
            if proc is not None:
                with contextlib.suppress(psutil.Error):
                    out[comp] = tree_rss(proc) / 1024**2
    for comp, proc in (extra or {}).items():
        with contextlib.suppress(psutil.Error):
            out[comp] = tree_rss(proc) / 1024**2
    return out


class _Sampler(threading.Thread):
    """Samples ``footprint`` every ``every`` seconds while ``active`` is set."""

    def __init__(self, ctx, extra, every: float = 5.0) -> None:
        super().__init__(daemon=True, name="rss-sampler")
        self.ctx, self.extra, self.every = ctx, extra, every
        self.active = threading.Event()
        self.done = threading.Event()
        self.samples: list[dict[str, float]] = []

    def run(self) -> None:
        while not self.done.is_set():
            if self.active.is_set():
                self.samples.append(footprint(self.ctx, self.extra))
            self.done.wait(self.every)

    def medians(self) -> dict[str, float]:
        keys = {k for s in self.samples for k in s}
        return {k: statistics.median(s.get(k, 0.0) for s in self.samples) for k in sorted(keys)}


def _pace(
    producer, events, topic: str, level: Level, warmup: float, seconds: float, driver=None
) -> None:
    """Send at ``level.rate`` for ``warmup + seconds``; keep the delivery reports of the
    measured part and the CPU the driver and the machine used meanwhile."""
    from devstack.process import tree_cpu_seconds as cpu_seconds

    def keep(target: list):
        def on_delivery(err, msg) -> None:
            if err is None:
                target.append((msg.partition(), msg.offset(), msg.timestamp()[1]))

        return on_delivery

    measured_all, measured_purchase = keep(level.records), keep(level.purchases)
    started = time.monotonic()
    sent = 0
    cpu0 = None
    while True:
        elapsed = time.monotonic() - started
        if elapsed >= warmup + seconds:
            break
        if cpu0 is None and elapsed >= warmup:
            cpu0 = (time.monotonic(), cpu_seconds(driver) if driver else 0.0, psutil.cpu_times())
        due = int(level.rate * elapsed) - sent
        for _ in range(max(0, due)):
            ev = next(events)
            cb = None
            if elapsed >= warmup:
                purchase = ev.kind == "valid" and ev.event_type == "purchase"
                cb = measured_purchase if purchase else measured_all
                level.sent += 1
            while True:
                try:
                    producer.produce(topic, key=ev.key, value=ev.value, on_delivery=cb)
                    break
                except BufferError:
                    producer.poll(0.05)
            sent += 1
        producer.poll(0)
        time.sleep(0.005)
    level.seconds = seconds
    if cpu0 is not None:
        wall = time.monotonic() - cpu0[0]
        if driver is not None:
            level.driver_cores = (cpu_seconds(driver) - cpu0[1]) / wall
        before, after = cpu0[2], psutil.cpu_times()
        idle = (after.idle + after.iowait) - (before.idle + before.iowait)
        level.machine_busy = 1 - idle / (sum(after) - sum(before))
    producer.flush(60)


def _progress(conn, names: tuple[str, ...]) -> dict[str, list]:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT query_name, ts, batch_duration_ms, sources FROM stream_progress "
            "WHERE input_rows > 0 AND query_name = ANY(%s) ORDER BY ts",
            (list(names),),
        )
        out: dict[str, list] = defaultdict(list)
        for name, ts, duration, sources in cur.fetchall():
            out[name].append((ts, duration, sources))
    conn.commit()
    return out


def _durations(conn) -> dict[str, dict[str, float]]:
    """Per query, the median of each phase of its non-empty batches (Spark's ``durationMs``:
    where a batch's time goes)."""
    with conn.cursor() as cur:
        cur.execute(
            "SELECT query_name, durations FROM stream_progress WHERE input_rows > 0 "
            "ORDER BY query_name"
        )
        phases: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
        for name, durations in cur.fetchall():
            for phase, ms in durations.items():
                phases[name][phase].append(float(ms))
    conn.commit()
    return {
        name: {phase: statistics.median(v) for phase, v in sorted(by.items())}
        for name, by in phases.items()
    }


def spark_ui(log_file, pid: int | None = None) -> str | None:
    """The driver's UI address: from its log (``Start Jetty 127.0.0.1:4040 for SparkUI``, when
    Spark logs at INFO), else the port in Spark's UI range (4040 + n) that the driver's
    process tree listens on (the platform's drivers log warnings only)."""
    import re

    found = re.findall(r"Start Jetty (\S+:\d+) for SparkUI", log_file.read_text(errors="replace"))
    if found:
        return f"http://{found[-1]}"
    if pid is None:
        return None
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(pid)
        for p in [root, *root.children(recursive=True)]:
            for c in p.net_connections(kind="tcp"):
                if c.status == psutil.CONN_LISTEN and 4040 <= c.laddr.port < 4140:
                    return f"http://{url_host(c.laddr.ip)}:{c.laddr.port}"
    return None


def url_host(ip: str) -> str:
    """A listening address as a URL's host: an IPv4-mapped IPv6 address (``::ffff:127.0.0.1``,
    how a JVM's sockets report IPv4) as its IPv4, another IPv6 address in brackets, a wildcard
    as loopback."""
    import ipaddress

    addr = ipaddress.ip_address(ip)
    if addr.is_unspecified:
        return "127.0.0.1"
    if addr.version == 6:
        return str(addr.ipv4_mapped) if addr.ipv4_mapped else f"[{addr}]"
    return str(addr)


def cpu_by_query(ui: str) -> dict[str, dict[str, float]]:
    """Task CPU seconds and task run seconds per streaming query, from the driver's REST API:
    each batch's jobs carry the description ``<query>\\nid = ...\\nbatch = N``."""
    import urllib.request

    def get(path: str):
        with urllib.request.urlopen(f"{ui}/api/v1/{path}", timeout=30) as r:
            return json.load(r)

    app = get("applications")[0]["id"]
    out: dict[str, dict[str, float]] = defaultdict(lambda: {"cpu_s": 0.0, "run_s": 0.0, "tasks": 0})
    for stage in get(f"applications/{app}/stages?status=complete"):
        query = (stage.get("description") or "other").split("\n", 1)[0] or "other"
        agg = out[query]
        agg["cpu_s"] += stage.get("executorCpuTime", 0) / 1e9
        agg["run_s"] += stage.get("executorRunTime", 0) / 1e3
        agg["tasks"] += stage.get("numTasks", 0)
    return dict(out)


def _end_offsets(conn, name: str) -> dict[int, int]:
    ends: dict[int, int] = {}
    for _, _, sources in _progress(conn, (name,)).get(name, []):
        for src in sources:
            end = src.get("endOffset") or {}
            end = json.loads(end) if isinstance(end, str) else end
            for parts in end.values():
                for part, off in parts.items():
                    ends[int(part)] = max(ends.get(int(part), 0), int(off))
    return ends


def run(
    ctx,
    capacity: float,
    *,
    seconds: float = LEVEL_SECONDS,
    warmup: float = 15.0,
    jvm_warmup: float = JVM_WARMUP_S,
    trigger: str = TRIGGER,
    levels: tuple[float, ...] = LEVELS,
) -> dict:
    """Run the stream at each level; return the latencies and the footprint."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    from bench.sandbox import drop_prefix
    from devstack.spark import submit_argv, submit_env
    from include.analytics import migrations, store
    from include.events.catalog import build_catalog
    from include.events.generator import GeneratorConfig, iter_events
    from include.events.producer import producer_config
    from include.lake.s3 import sandbox_prefix
    from include.spark.jobs import StreamJob

    s = ctx.settings
    sid = uuid.uuid4().hex[:8]
    topic, schema = f"bench.latency.{sid}", f"bench_{sid}"
    prefix = sandbox_prefix(f"bench-latency-{sid}")
    admin = AdminClient({"bootstrap.servers": s.kafka_bootstrap})
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])[topic].result(30)
    conn = store.connect(ctx.analytics_db, schema=schema)
    migrations.migrate(conn, schema)
    store.publish_catalog(conn, build_catalog())
    idle = footprint(ctx)

    b = s.bucket
    lake = pipeline.s3a(b, f"{prefix}/raw")
    job = StreamJob(
        bootstrap_servers=s.kafka_bootstrap,
        topic=topic,
        lake_path=lake,
        dead_letter_path=pipeline.s3a(b, f"{prefix}/dead_letter"),
        checkpoint_root=pipeline.s3a(b, f"{prefix}/_checkpoints"),
        pg_schema=schema,
        mode="continuous",
        trigger=trigger,
    )
    log_file = s.logs_dir / f"bench-latency-{sid}.log"  # a run's own: a probe keeps the page run's
    log = open(log_file, "w")  # noqa: SIM115 - closed in finally
    proc = subprocess.Popen(
        submit_argv(ctx, job),
        env=submit_env(ctx, job),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    sampler = _Sampler(ctx, {"stream driver (Spark)": psutil.Process(proc.pid)})
    sampler.start()
    measured: list[Level] = []
    try:
        # Ready when every query has run its first (empty) batch.
        deadline = time.monotonic() + 300
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"the stream exited ({proc.returncode}); see {log_file}")
            with conn.cursor() as cur:
                cur.execute(
                    "SELECT count(DISTINCT query_name) FROM stream_progress"
                    if _has_progress(conn)
                    else "SELECT 0"
                )
                ready = cur.fetchone()[0] >= len(pipeline.STREAM_QUERIES)
            conn.commit()
            if ready:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"the stream did not start within 300 s; see {log_file}")
            time.sleep(1)
        producer = Producer(producer_config(s.kafka_bootstrap))
        events = iter(iter_events(GeneratorConfig(seed=13, live=True, **MIX)))
        for i, share in enumerate(levels):
            level = Level(share, share * capacity)
            print(f"    level {share:.0%}: {level.rate:,.0f} events/s", flush=True)
            if i == len(levels) - 1:
                sampler.active.set()
            # a fresh driver's JIT compiles Spark's hot paths for minutes (half a core at first)
            first = max(warmup, jvm_warmup) if i == 0 else warmup
            _pace(producer, events, topic, level, first, seconds, psutil.Process(proc.pid))
            measured.append(level)
        sampler.active.clear()
        # Wait until the stream has processed everything that was sent.
        produced: dict[int, int] = defaultdict(int)
        for level in measured:
            for part, off, _ in level.records + level.purchases:
                produced[part] = max(produced[part], off + 1)
        deadline = time.monotonic() + 600
        for name in pipeline.STREAM_QUERIES:
            while True:
                ends = _end_offsets(conn, name)
                if all(ends.get(p, 0) >= off for p, off in produced.items()):
                    break
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not catch up; see {log_file}")
                time.sleep(1)
        progress = _progress(conn, pipeline.STREAM_QUERIES)
        breakdown = _durations(conn)
        ui = spark_ui(log_file, proc.pid)
        try:
            by_query = cpu_by_query(ui) if ui else {}
        except OSError as exc:  # the figures stand without it
            print(f"    (no per-query CPU from the Spark UI: {exc})", flush=True)
            by_query = {}
    finally:
        sampler.done.set()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(30)
        log.close()
        with conn.cursor() as cur:
            cur.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        conn.commit()
        conn.close()
        admin.delete_topics([topic])[topic].result(30)
        drop_prefix(ctx, prefix)  # its lake and checkpoint: GiBs after the levels

    lake_index = batch_index(progress["lake"])
    sales_index = lake_index  # the aggregates are written by the same batch, before its commit
    out_levels = []
    for level in measured:
        to_parquet, missing_p = latencies(level.records + level.purchases, lake_index)
        to_postgres, missing_g = latencies(level.purchases, sales_index)
        out_levels.append(
            {
                "share": level.share,
                "rate": level.rate,
                "sent": level.sent,
                "achieved_rate": level.sent / level.seconds,
                "produce_to_parquet_s": percentiles(to_parquet),
                "produce_to_postgres_s": percentiles(to_postgres),
                "unaccounted": missing_p + missing_g,
                "driver_cores": level.driver_cores,
                "machine_busy": level.machine_busy,
            }
        )
    batches = {
        name: statistics.median(d for _, d, _ in rows) / 1000 for name, rows in progress.items()
    }
    result = {
        "capacity": capacity,
        "trigger": trigger,
        "seconds_per_level": seconds,
        "warmup_s": warmup,
        "jvm_warmup_s": max(warmup, jvm_warmup),
        "levels": out_levels,
        "median_batch_s": batches,
        "median_durations_ms": breakdown,
        "task_cpu_by_query": by_query,
        "footprint": {"idle": idle, "load": sampler.medians(), "load_share": levels[-1]},
    }
    return result


def _has_progress(conn) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('stream_progress') IS NOT NULL")
        return bool(cur.fetchone()[0])
