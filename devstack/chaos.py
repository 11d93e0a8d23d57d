"""`make chaos`: live traffic through the supervised stream while faults hit it, then proof.

The stream runs as production runs it: the scheduler launches ``stream_events`` (continuous)
and ``stream_health`` watches it, on the stack's own topic, lake and schema. Recorded producer
runs send live traffic (bad, duplicate, late and out-of-order shares) at a steady rate while a
seeded plan of faults hits the stream and the services under it, one at a time: each fault is
logged with its times, and the next one waits until the stream committed a batch again (the
fault's recovery time). After the last one the stream catches up and four oracles decide, each
computed from what the generator itself recorded (``include/events/tally.py``, the producer's
run records), never through the pipeline's transforms:

* **lake**: the reconciliation of every run of the soak finds each landable event once and
  nothing missing (counts and id digest per run; ``spark_apps/reconcile.py`` reads the lake at
  the runs' Kafka coordinates);
* **dead letters**: per reason, as many as the generator sent bad events of the matching kind;
* **aggregates**: what the soak added to Postgres ``category_sales_minute`` (after minus before,
  per minute and category) equals the generator's tally of valid purchases (count, units,
  revenue to the cent);
* **warehouse**: after compacting the soak's event days, Iceberg holds every landable event of
  the soak, each once.

The report (JSON, and Markdown for docs/reliability.md) lists the faults with their recovery,
the supervisor's actions, the maximum lag and each oracle's verdict. ``--quick`` is the profile
``make test`` runs; the default one is a million events and twenty-four faults (the
disk-full one only where root can loop-mount a file system: elsewhere the report names it as
not injectable on that machine).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import random
import signal
import statistics
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, timedelta
from itertools import islice
from pathlib import Path
from typing import Any

import psutil

from devstack import demo, scratchfs, supervisor
from devstack.services import Context, S3Link
from include import connections, dag_params, pipeline
from include.analytics import store
from include.events.generator import EXPECTED_REASON_PREFIX, GeneratorConfig, iter_events
from include.events.producer import produce
from include.events.runs import id_hash
from include.events.tally import Tally
from include.supervision import control, lease

log = logging.getLogger("chaos")
ROOT = Path(__file__).resolve().parent.parent

# --- profiles ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Profile:
    name: str
    events: int
    faults: tuple[str, ...]  # in plan order before the seeded shuffle
    spacing_s: float  # a fault starts at least this long after the previous one started
    chunk: int = 10_000  # events per recorded producer run
    warmup_s: float = 45.0  # traffic before the first fault
    recovery_timeout_s: float = 600.0
    s3_outage_s: float = 60.0
    kafka_outage_s: float = 20.0
    long_kafka_outage_s: float = 300.0
    s3_partition_s: float = 60.0
    disk_full_s: float = 60.0

    @property
    def rate(self) -> float:
        """Events/s: the traffic spans the fault plan (and its warm-up)."""
        return self.events / (self.warmup_s + self.spacing_s * len(self.faults))


QUICK = Profile(
    "quick",
    events=100_000,
    faults=("driver_kill", "driver_freeze", "broker_kill", "s3_down", "scheduler_kill"),
    spacing_s=45.0,
    warmup_s=20.0,
    s3_outage_s=30.0,
)
DEFAULT = Profile(
    "default",
    events=1_000_000,
    faults=(
        *["driver_kill"] * 5,
        "driver_freeze",
        "driver_freeze",
        "broker_kill",
        "broker_kill",
        "broker_pause",
        "broker_pause",
        "kafka_down_long",
        "s3_down",
        "s3_down",
        "postgres_restart",
        "postgres_restart",
        "scheduler_kill",
        "scheduler_kill",
        "dag_processor_kill",
        "api_server_kill",
        "compaction_kill_writing",
        "compaction_kill_committed",
        "s3_partition",
        "disk_full",
    ),
    spacing_s=90.0,
)
PROFILES = {p.name: p for p in (QUICK, DEFAULT)}


# Faults only some machines can inject: why not here ('' when they can). A fault this machine
# cannot inject is left out of the plan and listed in the report; one planned and then not
# injected fails the soak.
def machine_limits(ctx: Context, faults: list[str]) -> dict[str, str]:
    checks = {"disk_full": lambda: scratchfs.unavailable(ctx.settings.spark_local_dir)}
    return {k: why for k in sorted(set(faults) & set(checks)) if (why := checks[k]())}


NOT_INJECTED_MARK = "not injected:"  # a planned fault that could not be injected fails the soak

# The soak's traffic: every kind of trouble the contract knows, at modest shares.
TRAFFIC = {
    "bad_share": 0.02,
    "irrelevant_share": 0.03,
    "duplicate_share": 0.02,
    "out_of_order_share": 0.05,
    "late_share": 0.01,
}


# --- records ----------------------------------------------------------------------------------


@dataclass
class FaultRecord:
    kind: str
    started: str
    ended: str = ""
    detail: str = ""
    recovered: str = ""
    recovery_s: float | None = None
    needed_operator: str = ""


@dataclass
class Soak:
    ctx: Context
    profile: Profile
    seed: int  # the fault plan's
    traffic_seed: int
    tally: Tally = field(default_factory=Tally)
    run_ids: list[str] = field(default_factory=list)
    faults: list[FaultRecord] = field(default_factory=list)
    samples: list[dict] = field(default_factory=list)
    traffic_error: str = ""
    done: threading.Event = field(default_factory=threading.Event)
    faults_done: threading.Event = field(default_factory=threading.Event)
    compaction_run: str = ""  # the compact_warehouse run a compaction fault hit
    compaction_killed_after_s: float = 0.0  # how long that run had worked when killed
    scratch: scratchfs.Volume | None = None  # Spark's scratch on its own file system (disk_full)

    @property
    def settings(self):
        return self.ctx.settings

    def pg(self):
        return store.connect(self.ctx.analytics_db)

    @property
    def lease_name(self) -> str:
        return lease.lease_name(pipeline.s3a(self.settings.bucket, pipeline.CHECKPOINT_PREFIX))


def _rows(soak: Soak, sql: str, args: tuple = ()) -> list[tuple]:
    """The rows of one statement on the stack's analytics schema."""
    conn = soak.pg()
    try:
        with conn.cursor() as cur:
            cur.execute(sql, args)
            rows = cur.fetchall()
        conn.commit()
        return rows
    finally:
        conn.close()


def _now() -> datetime:
    return datetime.now(UTC)


def _say(msg: str) -> None:
    print(f"==> [{_now():%H:%M:%S}] {msg}", flush=True)


# --- traffic and samples ----------------------------------------------------------------------


def traffic(soak: Soak) -> None:
    """Recorded producer runs of ``chunk`` events at the profile's rate until ``events``."""
    # Its own seed: the same ids sent again within the stream's dedupe horizon would rightly be
    # dropped as copies (a second soak with the same plan seed must send new events).
    cfg = GeneratorConfig(seed=soak.traffic_seed, live=True, **TRAFFIC)
    events = soak.tally.counted(iter_events(cfg))
    kafka = {
        "bootstrap.servers": soak.settings.kafka_bootstrap,
        # Ride out a broker outage: keep retrying a delivery for 15 minutes.
        "message.timeout.ms": 900_000,
        "log_level": 0,  # the faults' connection errors are expected; the report says the rest
    }
    left = soak.profile.events
    try:
        # At least ``events``, and on until the last fault was recovered from: every recovery
        # is measured under traffic. Past ``events``, runs of ~5 s: the traffic ends soon
        # after the last recovery instead of finishing a whole chunk.
        overtime = max(100, min(soak.profile.chunk, int(soak.profile.rate * 5)))
        while left > 0 or not soak.faults_done.is_set():
            n = overtime if left <= 0 else min(soak.profile.chunk, left)
            record = produce(
                islice(events, n),
                topic=pipeline.EVENTS_TOPIC,
                config=kafka,
                rate=soak.profile.rate,
                flush_timeout=900,
            )
            _record_run(soak, record)
            soak.run_ids.append(record.run_id)
            left -= n
    except Exception as exc:  # reported: the oracles cannot hold without the records
        soak.traffic_error = f"{type(exc).__name__}: {exc}"
        log.exception("traffic failed")
    finally:
        soak.done.set()


def _record_run(soak: Soak, record) -> None:
    """Record a run in ``ingest_runs``, retrying while Postgres is away (a fault may be on)."""
    deadline = time.monotonic() + soak.profile.recovery_timeout_s
    while True:
        try:
            conn = soak.pg()
            try:
                store.record_run(conn, record)
                return
            finally:
                conn.close()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)


def sampler(soak: Soak, stop: threading.Event) -> None:
    """Every 5 s: the stream's lag (log-end minus its last batch's end offsets)."""
    from confluent_kafka.admin import AdminClient

    from include.supervision.retention import log_end_offsets

    admin = AdminClient({"bootstrap.servers": soak.settings.kafka_bootstrap, "log_level": 0})
    while not stop.wait(5):
        sample: dict[str, Any] = {"t": _now().isoformat()}
        try:
            ends = log_end_offsets(admin, pipeline.EVENTS_TOPIC, timeout=3)
            conn = soak.pg()
            try:
                read = store.latest_end_offsets(conn, pipeline.EVENTS_TOPIC).get(
                    pipeline.STREAM_QUERY, {}
                )
            finally:
                conn.close()
            sample["lag"] = sum(max(0, end - read.get(p, 0)) for p, end in ends.items())
        except Exception as exc:
            sample["error"] = str(exc).splitlines()[0][:120] if str(exc) else type(exc).__name__
        soak.samples.append(sample)


# --- faults -----------------------------------------------------------------------------------


def _holder(soak: Soak) -> lease.Holder | None:
    """Who holds the stream's lease now."""
    conn = soak.pg()
    try:
        return lease.holder(conn, soak.lease_name)
    finally:
        conn.close()


def _driver(soak: Soak) -> list[psutil.Process]:
    """The live stream driver: its Python process (the lease holder) and spark-submit's JVM."""
    holder = _holder(soak)
    if holder is None or holder.expired:
        raise ChaosError("no live stream driver holds the lease")
    proc = psutil.Process(holder.pid)
    parent = proc.parent()
    procs = [proc]
    if parent is not None and "java" in parent.name():
        procs.append(parent)
    return procs


def _service(soak: Soak, name: str) -> psutil.Process:
    proc = supervisor.running_process(soak.settings, name)
    if proc is None:
        raise ChaosError(f"{name} is not running under the process supervisor")
    return proc


def _signal_all(procs: list[psutil.Process], sig: int) -> None:
    for p in procs:
        with contextlib.suppress(psutil.NoSuchProcess):
            p.send_signal(sig)


def _restarted(soak: Soak, name: str, since: float) -> str:
    st = supervisor.wait_started(soak.settings, name, since=since, timeout=180)
    return f"{name} restarted by the process supervisor (pid {st.pid})"


def driver_kill(soak: Soak) -> str:
    procs = _driver(soak)
    _signal_all(procs, signal.SIGKILL)
    return f"SIGKILL driver pids {[p.pid for p in procs]}"


def driver_freeze(soak: Soak) -> str:
    procs = _driver(soak)
    hold = 60 + 15  # past the driver's lease TTL (StreamJob.lease_ttl, 60 s)
    _signal_all(procs, signal.SIGSTOP)
    time.sleep(hold)
    _signal_all(procs, signal.SIGCONT)
    return f"SIGSTOP driver pids {[p.pid for p in procs]} for {hold}s, then SIGCONT"


def _kill_service(name: str) -> Callable[[Soak], str]:
    def inject(soak: Soak) -> str:
        t = time.time()
        proc = _service(soak, name)
        proc.kill()
        return f"SIGKILL {name} pid {proc.pid}; " + _restarted(soak, name, t)

    return inject


def _pause_service(name: str, seconds: Callable[[Profile], float]) -> Callable[[Soak], str]:
    def inject(soak: Soak) -> str:
        proc = _service(soak, name)
        hold = seconds(soak.profile)
        proc.suspend()
        time.sleep(hold)
        proc.resume()
        return f"SIGSTOP {name} pid {proc.pid} for {hold:.0f}s, then SIGCONT"

    return inject


def _outage(name: str, seconds: Callable[[Profile], float]) -> Callable[[Soak], str]:
    def inject(soak: Soak) -> str:
        hold = seconds(soak.profile)
        supervisor.stop(soak.settings, name)
        time.sleep(hold)
        t = time.time()
        supervisor.resume(soak.settings, name)
        supervisor.wait_started(soak.settings, name, since=t, timeout=180)
        return f"{name} stopped for {hold:.0f}s, then started"

    return inject


# A compaction run killed mid-commit: the nightly job's Spark app (launched by the scheduler's
# compact_warehouse run for today) is SIGKILLed at a state the harness observes, either while
# it writes (a data file of the new write is in S3, the catalog still points at the old
# metadata) or between its commits (the events table committed, the marts and the run record
# not yet). Airflow's retry must finish the day, verified; the warehouse oracle checks the rest.
COMPACTION_STAGES = ("writing", "committed")


def _compaction_procs() -> list[psutil.Process]:
    """The compaction app's processes: spark-submit's JVM and its Python driver."""
    found = []
    for p in psutil.process_iter(["cmdline"]):
        cmd = p.info["cmdline"] or []
        if any(a.endswith("compact_events.py") for a in cmd):
            found.append(p)
    return found


def _events_snapshot(conn, s3, seen: dict[str, int | None]) -> int | None:
    """The warehouse events table's current snapshot id, as the catalog has it now (the JDBC
    catalog's pointer, then that metadata file; each file is read once)."""
    from urllib.parse import urlparse

    from include.warehouse import catalog

    with conn.cursor() as cur:
        cur.execute(
            "SELECT metadata_location FROM iceberg_tables WHERE table_namespace = %s "
            "AND table_name = %s",
            (pipeline.WAREHOUSE_NAMESPACE, catalog.EVENTS_TABLE),
        )
        row = cur.fetchone()
    conn.commit()
    if row is None:
        return None
    if row[0] not in seen:
        url = urlparse(row[0])
        body = s3.get_object(Bucket=url.netloc, Key=url.path.lstrip("/"))["Body"].read()
        seen[row[0]] = json.loads(body).get("current-snapshot-id")
    return seen[row[0]]


def _compacted_since(conn, day: date, since: datetime) -> bool:
    with conn.cursor() as cur:
        cur.execute("SELECT 1 FROM compaction_runs WHERE day = %s AND run_at >= %s", (day, since))
        found = cur.fetchone() is not None
    conn.commit()
    return found


def _compaction_kill(stage: str) -> Callable[[Soak], str]:
    from include.warehouse import catalog

    data = (
        f"{pipeline.WAREHOUSE_PREFIX}/{pipeline.WAREHOUSE_NAMESPACE}/{catalog.EVENTS_TABLE}/data/"
    )

    def inject(soak: Soak) -> str:
        day = _now().date()
        s3 = soak.ctx.s3(connections.WAREHOUSE_S3).client()

        def data_files() -> set[str]:
            return {
                o["Key"]
                for page in s3.get_paginator("list_objects_v2").paginate(
                    Bucket=soak.settings.bucket, Prefix=data
                )
                for o in page.get("Contents", [])
            }

        conn = soak.pg()
        seen: dict[str, int | None] = {}
        try:
            before = _events_snapshot(conn, s3, seen)
            files = data_files()
            client = demo.api(soak.ctx)
            client.login()
            client.unpause("compact_warehouse")  # a triggered run of a paused DAG only queues
            soak.compaction_run = client.trigger("compact_warehouse", {"day": day.isoformat()})
            t0 = _now()
            deadline = time.monotonic() + soak.profile.recovery_timeout_s
            procs: list[psutil.Process] = []
            while True:  # observe the state, then kill (no sleep decides when)
                if time.monotonic() > deadline:
                    raise ChaosError(f"compaction of {day} never reached '{stage}'")
                if _compacted_since(conn, day, t0):
                    raise ChaosError(f"compaction of {day} finished before '{stage}' was seen")
                # Found before the state is seen, killed the moment it is: a small day's last
                # data file lands a second or less before its commit.
                procs = _compaction_procs() or procs
                if stage == "writing" and data_files() - files:
                    break
                if _events_snapshot(conn, s3, seen) != before:
                    break
                time.sleep(0.05)
            if not procs:
                raise ChaosError(f"no compaction process to kill at '{stage}'")
            _signal_all(procs, signal.SIGKILL)
            soak.compaction_killed_after_s = (_now() - t0).total_seconds()
            committed = _events_snapshot(conn, s3, seen) != before
        finally:
            conn.close()
        return f"compact_warehouse run for {day}: SIGKILL pids {[p.pid for p in procs]} " + (
            "after the events table's commit, before the marts and the run record"
            if committed
            else "while writing: a new data file in S3, the catalog not moved yet"
        )

    return inject


def await_compaction(soak: Soak, fault: FaultRecord, ended: datetime) -> None:
    """Recovered when Airflow's retry recorded the day verified (measured from the kill: the
    fault's start is the trigger, and the run's first minutes are not a fault)."""
    from devstack.airflow_api import AirflowApiError

    if not soak.compaction_run:
        return
    client = demo.api(soak.ctx)
    client.login()
    # The retry redoes the whole day after its delay: give it at least twice what the killed
    # run had done (a day grows all day; a fixed window failed a soak by 10 s on a big day).
    delay = dag_params.idempotent_retries()["retry_delay"].total_seconds()
    window = max(soak.profile.recovery_timeout_s, delay + 2 * soak.compaction_killed_after_s + 60)
    try:
        state = client.wait_for_run("compact_warehouse", soak.compaction_run, window)
    except AirflowApiError as exc:
        state = str(exc)
    rows = _rows(
        soak,
        "SELECT status, run_at FROM compaction_runs WHERE run_at >= %s ORDER BY run_at DESC",
        (ended,),
    )
    if state == "success" and rows and rows[0][0] == "verified":
        fault.recovered = rows[0][1].isoformat()
        fault.recovery_s = round((rows[0][1] - ended).total_seconds(), 1)  # from the kill
    else:
        fault.detail += f"; the run ended {state}, compaction records since the kill: {rows}"
    soak.compaction_run = ""


def s3_partition(soak: Soak) -> str:
    """The stream cut from S3 (its link through Toxiproxy holds every byte both ways), the
    rest of the stack untouched; healed after the profile's window."""
    link, hold = S3Link(), soak.profile.s3_partition_s
    link.partition(soak.ctx)
    try:
        time.sleep(hold)
    finally:
        link.heal(soak.ctx)
    return f"the stream's S3 link partitioned for {hold:.0f}s (Toxiproxy), then healed"


def disk_full(soak: Soak) -> str:
    """Spark's scratch file system (the stream's state store, shuffle files) filled to the
    last block for the profile's window, then emptied."""
    vol = soak.scratch
    if vol is None or not vol.mounted:
        raise ChaosError("Spark's scratch directory is not on its own file system")
    hold = soak.profile.disk_full_s
    t0 = time.monotonic()
    try:
        taken = vol.fill()
        left = vol.free()  # statfs: what Spark would find now
        filled_s = time.monotonic() - t0
        time.sleep(hold)
    finally:
        t1 = time.monotonic()
        vol.drain()
    return (
        f"Spark's scratch file system filled in {filled_s:.0f}s ({taken / 1024**3:.1f} GB "
        f"allocated, {left:,} bytes left), held full for {hold:.0f}s, then emptied (in "
        f"{time.monotonic() - t1:.0f}s)"
    )


FAULTS: dict[str, Callable[[Soak], str]] = {
    "driver_kill": driver_kill,
    "driver_freeze": driver_freeze,
    "broker_kill": _kill_service("kafka"),
    "broker_pause": _pause_service("kafka", lambda p: p.kafka_outage_s),
    "kafka_down_long": _outage("kafka", lambda p: p.long_kafka_outage_s),
    "s3_down": _outage("minio", lambda p: p.s3_outage_s),
    "postgres_restart": _outage("postgres", lambda p: 5),
    "scheduler_kill": _kill_service("airflow-scheduler"),
    "dag_processor_kill": _kill_service("airflow-dag-processor"),
    "api_server_kill": _kill_service("airflow-api-server"),
    **{f"compaction_kill_{stage}": _compaction_kill(stage) for stage in COMPACTION_STAGES},
    "s3_partition": s3_partition,
    "disk_full": disk_full,
}
# How a fault's recovery is measured: the stream's next batch with input, unless named here.
RECOVERY: dict[str, Callable[[Soak, FaultRecord, datetime], None]] = {
    f"compaction_kill_{stage}": await_compaction for stage in COMPACTION_STAGES
}


class ChaosError(RuntimeError):
    """The soak could not go on; the message says why."""


# --- the soak ---------------------------------------------------------------------------------


def plan(profile: Profile, seed: int) -> list[str]:
    unknown = set(profile.faults) - set(FAULTS)
    if unknown:
        raise ChaosError(f"unknown fault(s) {sorted(unknown)}; known: {sorted(FAULTS)}")
    faults = list(profile.faults)
    random.Random(seed).shuffle(faults)
    return faults


def _next_batch_end(soak: Soak, after: datetime) -> datetime | None:
    """The end of the first batch that read input and started after ``after``."""
    ((at,),) = _rows(
        soak,
        "SELECT min(ts + batch_duration_ms * interval '1 millisecond') FROM stream_progress "
        "WHERE query_name = %s AND ts >= %s AND input_rows > 0",
        (pipeline.STREAM_QUERY, after),
    )
    return at


def _stopped(soak: Soak) -> str | None:
    try:
        return demo.stream_stopped(soak.ctx)
    except Exception:
        return None  # Postgres may be what is down


def _operator_restart(soak: Soak, why: str) -> None:
    """What a human would do for a halted stream: stream_control's restart, recorded."""
    conn = soak.pg()
    try:
        control.set_state(
            conn, soak.lease_name, control.RUNNING, f"chaos harness: {why}", "chaos (operator)"
        )
    finally:
        conn.close()


def await_recovery(soak: Soak, fault: FaultRecord, ended: datetime) -> None:
    deadline = time.monotonic() + soak.profile.recovery_timeout_s
    while time.monotonic() < deadline:
        try:
            at = _next_batch_end(soak, ended)
        except Exception:
            at = None  # Postgres restarting
        if at is not None:
            fault.recovered = at.isoformat()
            fault.recovery_s = round(
                (at - datetime.fromisoformat(fault.started)).total_seconds(), 1
            )
            return
        stopped = _stopped(soak)
        if stopped and not fault.needed_operator:
            fault.needed_operator = stopped
            _say(f"the stream is {stopped}: restarting it as an operator would (recorded)")
            _operator_restart(soak, f"after {fault.kind}")
        time.sleep(2)


def operator_restart(soak: Soak) -> dict:
    """An operator restarts the stream from the Airflow CLI (`airflow dags trigger
    stream_control`), as on a fresh `make run`: the run must not queue behind a paused toggle,
    the driver must hand over to a new one and the stream must commit a batch again."""
    import subprocess

    from devstack import environment

    old = _holder(soak)
    started = _now()
    conf = {"action": "restart", "reason": "chaos soak: an operator's restart from the CLI"}
    airflow = str(environment.venv_bin() / "airflow")
    subprocess.run(
        [airflow, "dags", "trigger", "stream_control", "-c", json.dumps(conf)],
        env=soak.ctx.env,
        check=True,
        capture_output=True,
        timeout=180,
    )
    out: dict[str, Any] = {"triggered": started.isoformat(), "old_pid": old.pid if old else None}
    deadline = time.monotonic() + soak.profile.recovery_timeout_s
    while time.monotonic() < deadline:
        new = _holder(soak)
        if new is not None and (old is None or new.owner != old.owner):
            took_over = _now()
            out["new_pid"] = new.pid
            while time.monotonic() < deadline:
                at = _next_batch_end(soak, took_over)
                if at is not None:
                    out["recovery_s"] = round((at - started).total_seconds(), 1)
                    return out
                time.sleep(2)
        time.sleep(2)
    out["recovery_s"] = None
    return out


def setup(soak: Soak, client) -> None:
    from include.events.catalog import build_catalog

    demo.run_dag(client, "kafka_topics")
    conn = soak.pg()
    try:
        store.publish_catalog(conn, build_catalog())  # what the stream enriches purchases with
        state = control.get(conn, soak.lease_name)
        if state.state != control.RUNNING:  # a previous soak or an operator stopped it
            control.set_state(conn, soak.lease_name, control.RUNNING, "chaos soak starts", "chaos")
    finally:
        conn.close()
    for dag_id in ("stream_events", "stream_health", *demo.OPERATOR_DAGS):
        client.wait_for_dag(dag_id)
        client.unpause(dag_id)
    _say("stream_events and stream_health are on; waiting for a driver")
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline:
        try:
            _driver(soak)
            return
        except (ChaosError, psutil.Error):
            time.sleep(3)
    raise ChaosError("no stream driver started within 10 minutes (see the stream_events logs)")


def _halt_stream(ctx: Context, why: str) -> Soak:
    """As an operator stops the stream: its DAGs paused, the control state stopped (the
    launch gate stays shut, a running driver stops gracefully)."""
    client = demo.api(ctx)
    client.login()
    for dag_id in ("stream_events", "stream_health"):
        client.pause(dag_id)
    soak = Soak(ctx, QUICK, 0, 0)
    conn = soak.pg()
    try:
        control.set_state(conn, soak.lease_name, control.STOPPED, why, "chaos")
    finally:
        conn.close()
    return soak


def stop_stream(ctx: Context, timeout: float = 300) -> None:
    """Leave the stack as a test found it: the stream's DAGs paused, its driver stopped
    gracefully (an operator's stop), the control state back to running for the next start."""
    soak = _halt_stream(ctx, "chaos soak ended")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            _driver(soak)
        except (ChaosError, psutil.Error):
            break
        time.sleep(2)
    conn = soak.pg()
    try:
        control.set_state(conn, soak.lease_name, control.RUNNING, "chaos soak ended", "chaos")
    finally:
        conn.close()


def sales_snapshot(soak: Soak) -> dict[tuple[str, str, str], dict[str, float]]:
    rows = _rows(
        soak,
        "SELECT window_start, category, currency, purchases, units, revenue::float8 "
        "FROM category_sales_minute",
    )
    return {
        (ws.astimezone(UTC).replace(tzinfo=None).isoformat(), cat, cur): {
            "purchases": n,
            "units": u,
            "revenue": r,
        }
        for ws, cat, cur, n, u, r in rows
    }


def wait_caught_up(soak: Soak, timeout: float) -> float:
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        try:
            done, _ = demo.caught_up(soak.ctx)
        except Exception:
            done = False
        if done:
            return time.monotonic() - t0
        stopped = _stopped(soak)
        if stopped:
            raise ChaosError(f"the stream is {stopped} after the last fault")
        time.sleep(3)
    raise ChaosError(f"the stream did not catch up within {timeout:.0f}s")


def run(ctx: Context, profile: Profile, seed: int) -> dict:
    soak = Soak(ctx, profile, seed, traffic_seed=time.time_ns() % (1 << 31))
    client = demo.api(ctx)
    client.login()
    faults = plan(profile, seed)
    limits = machine_limits(ctx, faults)
    faults = [f for f in faults if f not in limits]
    started = _now()
    _say(
        f"chaos soak '{profile.name}': {profile.events:,} events at {profile.rate:,.0f}/s, "
        f"{len(faults)} faults (seed {seed}): {', '.join(faults)}"
    )
    for kind, why in limits.items():
        _say(f"  {kind} left out: this machine cannot inject it ({why})")
    if "disk_full" in faults:
        soak.scratch = mount_scratch(ctx)
    try:
        report = _soak(soak, client, faults, started)
    finally:
        if soak.scratch is not None:
            unmount_scratch(ctx, soak.scratch)
    report["not_injected"] = limits
    report["ok"] = verdict(report)
    return report


def mount_scratch(ctx: Context) -> scratchfs.Volume:
    """Spark's scratch directory on a file system of its own for the soak (disk_full). No
    Spark app may hold files there meanwhile, so the stream is stopped as an operator stops it
    (its launch gate stays shut while the control state says stopped, its DAGs are paused)
    and the mount waits for every Spark app to end; :func:`setup` starts the stream again."""
    _halt_stream(ctx, "chaos soak: Spark's scratch directory moves to its own file system")
    _say("the stream is stopped while Spark's scratch directory gets its own file system")
    busy = _no_spark_apps(timeout=600)
    if busy:
        raise ChaosError(f"Spark apps {busy} still run after 10 minutes; cannot mount")
    try:
        vol = scratchfs.mount(ctx.settings.spark_local_dir, ctx.settings.scratch_image)
    except scratchfs.ScratchError as exc:
        raise ChaosError(f"Spark's scratch file system: {exc}") from exc
    _say(f"Spark's scratch directory is on its own file system ({vol.free() / 1024**3:.0f} GB)")
    return vol


def _no_spark_apps(timeout: float) -> list[int]:
    """Wait until no Spark app has run for 15 s (a launch under way has had time to show);
    return the ones still running at the timeout ([] when quiet)."""
    deadline, quiet_since = time.monotonic() + timeout, None
    while True:
        busy = scratchfs.spark_apps()
        now = time.monotonic()
        if busy:
            quiet_since = None
            if now > deadline:
                return busy
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= 15:
            return []
        time.sleep(1)


def unmount_scratch(ctx: Context, vol: scratchfs.Volume) -> None:
    """Stop the stream, give the scratch directory back to the disk, start the stream again.
    Never raises: the soak's report matters more than a mount left behind (named)."""
    stop_stream(ctx)
    _no_spark_apps(timeout=300)
    try:
        vol.unmount()
    except (scratchfs.ScratchError, OSError) as exc:
        _say(f"Spark's scratch file system left mounted at {vol.mountpoint}: {exc}")
        return
    client = demo.api(ctx)
    client.login()
    for dag_id in ("stream_events", "stream_health"):
        client.unpause(dag_id)
    _say("Spark's scratch file system unmounted; the stream is on again")


def _soak(soak: Soak, client, faults: list[str], started: datetime) -> dict:
    profile = soak.profile
    setup(soak, client)
    before = sales_snapshot(soak)
    since = _now()
    stop_sampling = threading.Event()
    threads = [
        threading.Thread(target=traffic, args=(soak,), name="traffic", daemon=True),
        threading.Thread(target=sampler, args=(soak, stop_sampling), name="lag", daemon=True),
    ]
    for t in threads:
        t.start()
    time.sleep(profile.warmup_s)
    for i, kind in enumerate(faults, 1):
        fault = FaultRecord(kind, _now().isoformat())
        _say(f"fault {i}/{len(faults)}: {kind}")
        try:
            fault.detail = FAULTS[kind](soak)
        except (ChaosError, psutil.Error) as exc:
            fault.detail = f"{NOT_INJECTED_MARK} {exc}"
        ended = _now()
        fault.ended = ended.isoformat()
        soak.faults.append(fault)
        RECOVERY.get(kind, await_recovery)(soak, fault, ended)
        _say(
            f"  {fault.detail}; "
            + (
                f"recovered in {fault.recovery_s}s"
                if fault.recovery_s is not None
                else "NOT recovered"
            )
        )
        wait = datetime.fromisoformat(fault.started).timestamp() + profile.spacing_s - time.time()
        if wait > 0 and i < len(faults):
            time.sleep(wait)
    _say("an operator restarts the stream from the Airflow CLI (stream_control)")
    restart = operator_restart(soak)
    _say(
        f"  driver {restart['old_pid']} -> {restart.get('new_pid')}; "
        + (
            f"a batch again {restart['recovery_s']}s after the trigger"
            if restart["recovery_s"] is not None
            else "NOT restarted"
        )
    )
    soak.faults_done.set()
    _say("faults done; waiting for the traffic to end")
    soak.done.wait()
    catch_up_s = wait_caught_up(soak, profile.recovery_timeout_s)
    until = _now()
    stop_sampling.set()
    _say(f"the stream caught up {catch_up_s:.0f}s after the traffic ended; checking")
    report = {
        "profile": asdict(profile) | {"rate": round(profile.rate, 1)},
        "seed": soak.seed,
        "traffic_seed": soak.traffic_seed,
        "started": started.isoformat(),
        "traffic": {"since": since.isoformat(), "until": until.isoformat()},
        "events": soak.tally.events,
        "by_kind": dict(sorted(soak.tally.kinds.items())),
        "runs": len(soak.run_ids),
        "traffic_error": soak.traffic_error,
        "faults": [asdict(f) for f in soak.faults],
        "operator_restart": restart,
        "catch_up_s": round(catch_up_s, 1),
        "max_lag": max((s["lag"] for s in soak.samples if "lag" in s), default=None),
        "samples": soak.samples,
        "batches": batches(soak, since),
        "supervision": supervision_actions(soak, since),
        "oracles": oracles(soak, before, since, until),
    }
    recoveries = [f.recovery_s for f in soak.faults if f.recovery_s is not None]
    report["recovery_s"] = {
        "p50": round(statistics.median(recoveries), 1) if recoveries else None,
        "max": max(recoveries) if recoveries else None,
    }
    return report


def verdict(report: dict) -> bool:
    """The soak passes when the traffic was recorded, every planned fault was injected and
    recovered from without a human, the operator's restart worked and every oracle holds."""
    return (
        not report["traffic_error"]
        and all(o["ok"] for o in report["oracles"].values())
        and all(
            f["recovery_s"] is not None
            and not f["needed_operator"]
            and not f["detail"].startswith(NOT_INJECTED_MARK)
            for f in report["faults"]
        )
        and report["operator_restart"]["recovery_s"] is not None
    )


# --- supervision's record and the oracles ------------------------------------------------------


def supervision_actions(soak: Soak, since: datetime) -> dict:
    name = soak.lease_name
    restarts = [
        {"ts": t.isoformat(), "action": a, "reason": r}
        for t, a, r in _rows(
            soak,
            "SELECT ts, action, left(reason, 300) FROM stream_restarts "
            "WHERE name = %s AND ts >= %s ORDER BY ts, id",
            (name, since),
        )
    ]
    runs = [
        {
            "started": s.isoformat(),
            "ended": e.isoformat() if e else None,
            "exit_code": c,
            "reason": r,
        }
        for s, e, c, r in _rows(
            soak,
            "SELECT started_at, ended_at, exit_code, left(exit_reason, 300) FROM stream_runs "
            "WHERE name = %s AND started_at >= %s ORDER BY started_at",
            (name, since - timedelta(minutes=10)),
        )
    ]
    health = dict(
        _rows(
            soak,
            "SELECT status, count(*) FROM stream_health WHERE name = %s AND ts >= %s "
            "GROUP BY status ORDER BY status",
            (name, since),
        )
    )
    return {"actions": restarts, "driver_runs": runs, "health_verdicts": health}


def batches(soak: Soak, since: datetime) -> list[dict]:
    """Each batch of the soak: when it ended and how many records it read."""
    rows = _rows(
        soak,
        "SELECT ts + batch_duration_ms * interval '1 millisecond', input_rows FROM "
        "stream_progress WHERE query_name = %s AND ts >= %s ORDER BY ts",
        (pipeline.STREAM_QUERY, since),
    )
    return [{"end": end.isoformat(), "rows": n} for end, n in rows]


def oracles(soak: Soak, before: dict, since: datetime, until: datetime) -> dict:
    out = {}
    out["lake"], reasons = lake_oracle(soak, since, until)
    out["dead_letters"] = dead_letter_oracle(soak, reasons)
    out["aggregates"] = aggregate_oracle(soak, before)
    out["warehouse"] = warehouse_oracle(soak)
    return out


def lake_oracle(soak: Soak, since: datetime, until: datetime) -> tuple[dict, dict]:
    from devstack.spark import reconcile
    from include.spark.jobs import ReconcileJob

    b = soak.settings.bucket
    job = ReconcileJob(
        topic=pipeline.EVENTS_TOPIC,
        lake_path=pipeline.s3a(b, pipeline.RAW_EVENTS_PREFIX),
        dead_letter_path=pipeline.s3a(b, pipeline.DEAD_LETTER_PREFIX),
        since=since - timedelta(seconds=1),
        until=until + timedelta(seconds=1),
    )
    report, _ = reconcile(soak.ctx, job)
    mine = [a for a in report["accounts"] if a["run_id"] in set(soak.run_ids)]
    totals = {k: sum(a[k] for a in mine) for k in ("produced", "landed", "missing", "duplicated")}
    problems = {a["run_id"]: a["problems"] for a in mine if a["problems"]}
    expected = soak.tally.landable
    ok = (
        len(mine) == len(soak.run_ids)
        and not problems
        and totals["landed"] == expected
        and totals["produced"] == soak.tally.events
    )
    verdict = {
        "ok": ok,
        "runs_reconciled": len(mine),
        "landable_sent": expected,
        **totals,
        "problems": problems,
        "other_runs_in_window": len(report["accounts"]) - len(mine),
    }
    return verdict, report.get("dead_letter_reasons", {})


def dead_letter_oracle(soak: Soak, reasons: dict[str, int]) -> dict:
    """Per bad kind the generator sent, the dead letters whose reason it expects. Reasons are
    over the reconciled window (the soak's runs alone when nothing else produced meanwhile)."""
    got: dict[str, int] = {}
    unexpected: dict[str, int] = {}
    for reason, n in reasons.items():
        kind = next(
            (k for k, pre in EXPECTED_REASON_PREFIX.items() if reason.startswith(pre)), None
        )
        if kind is None:
            unexpected[reason] = n
        else:
            got[kind] = got.get(kind, 0) + n
    sent = {k: soak.tally.kinds.get(k, 0) for k in EXPECTED_REASON_PREFIX}
    return {
        "ok": got == {k: n for k, n in sent.items() if n} and not unexpected,
        "sent": sent,
        "dead_lettered": got,
        "unexpected_reasons": unexpected,
    }


def aggregate_oracle(soak: Soak, before: dict) -> dict:
    after = sales_snapshot(soak)
    added: dict[tuple[str, str, str], dict[str, float]] = {}
    for key, row in after.items():
        old = before.get(key, {"purchases": 0, "units": 0, "revenue": 0.0})
        delta = {m: row[m] - old[m] for m in ("purchases", "units", "revenue")}
        if any(round(v, 2) for v in delta.values()):
            added[key] = delta
    want = soak.tally.sales
    mismatches = []
    for key in sorted(set(added) | set(want)):
        a = added.get(key, {"purchases": 0, "units": 0, "revenue": 0.0})
        w = want.get(key, {"purchases": 0, "units": 0, "revenue": 0.0})
        if any(round(a[m], 2) != round(w[m], 2) for m in ("purchases", "units", "revenue")):
            mismatches.append(
                {"window": key[0], "category": key[1], "currency": key[2], "postgres": a, "sent": w}
            )
    return {
        "ok": not mismatches,
        "windows": len(want),
        "purchases_sent": sum(int(w["purchases"]) for w in want.values()),
        "revenue_sent": {
            currency: round(sum(w["revenue"] for k, w in want.items() if k[2] == currency), 2)
            for currency in sorted({k[2] for k in want})
        },
        "mismatches": mismatches[:20],
        "mismatched_windows": len(mismatches),
        "closed_by_watermark": [],  # the live aggregates add late events to their windows
    }


def warehouse_oracle(soak: Soak) -> dict:
    """Compact every event day the soak touched; Iceberg must hold each landable event of the
    soak, each once (the day may hold other events too: earlier runs on the same stack)."""
    from devstack.spark import compact
    from include.spark.jobs import CompactJob
    from include.warehouse import catalog

    b = soak.settings.bucket
    days = sorted(date.fromisoformat(d) for d in soak.tally.days)
    compacted = {}
    for day in days:
        job = CompactJob(
            day=day,
            lake_path=pipeline.s3a(b, pipeline.RAW_EVENTS_PREFIX),
            warehouse=pipeline.s3a(b, pipeline.WAREHOUSE_PREFIX),
        )
        code, report = compact(soak.ctx, job, log_name=f"chaos-compact-{day}.log")
        compacted[day.isoformat()] = "verified" if code == 0 else report.get("error", report)
    table = catalog.load_pyiceberg(
        soak.ctx.analytics_db,
        pipeline.PG_SCHEMA,
        pipeline.s3a(b, pipeline.WAREHOUSE_PREFIX),
        soak.ctx.s3(connections.WAREHOUSE_S3),
    ).load_table(f"{pipeline.WAREHOUSE_NAMESPACE}.{catalog.EVENTS_TABLE}")
    # Every event id of the table (one column): each of the soak's must be there, none twice.
    ids = table.scan(selected_fields=("event_id",)).to_arrow().column("event_id").to_pylist()
    rows = len(ids)
    found = {id_hash(e) for e in ids}
    del ids
    missing = len(soak.tally.ids - found)
    return {
        "ok": all(v == "verified" for v in compacted.values())
        and not missing
        and rows == len(found),
        "days": compacted,
        "iceberg_rows": rows,
        "iceberg_distinct": len(found),
        "soak_events_missing": missing,
    }


# --- the report -------------------------------------------------------------------------------


def markdown(report: dict) -> str:
    p = report["profile"]
    lines = [
        "# Reliability: the chaos soak",
        "",
        f"`make chaos` (profile `{p['name']}`, seed {report['seed']}), started "
        f"{report['started'][:16].replace('T', ' ')} UTC: **{report['events']:,} events** in "
        f"{report['runs']} recorded producer runs at {p['rate']:,.0f} events/s through the "
        f"supervised stream, **{len(report['faults'])} faults**. Verdict: "
        f"**{'PASS' if report['ok'] else 'FAIL'}**.",
        "",
        "The stream runs as in production: the scheduler launches `stream_events` "
        "(continuous) and `stream_health` supervises it, on the stack's own topic, lake and "
        "schema. Recorded producer runs send live traffic with bad, duplicate, late and "
        "out-of-order shares while a seeded plan of faults hits the driver and the services "
        "under it, the stream's network path to S3 (partitioned through Toxiproxy), Spark's "
        "scratch disk (filled to the last block) and the nightly compaction's Spark app "
        "mid-commit, one at a time; the next "
        "fault waits for the recovery from the last. Written by `devstack/chaos.py` (`make "
        "chaos`); `make test` runs the quick "
        "profile (100,000 events, five faults) and fails on any loss, duplicate or mismatch.",
        "",
        "## Oracles (each from the generator's own record)",
        "",
        "| oracle | verdict | figures |",
        "|---|---|---|",
    ]
    o = report["oracles"]
    lake = o["lake"]
    lines.append(
        f"| lake = landable events sent | {'ok' if lake['ok'] else 'FAIL'} | "
        f"{lake['landable_sent']:,} sent, {lake['landed']:,} landed, {lake['missing']:,} missing, "
        f"{lake['duplicated']:,} duplicated ({lake['runs_reconciled']} runs) |"
    )
    dl = o["dead_letters"]
    lines.append(
        f"| dead letters = bad events sent, by reason | {'ok' if dl['ok'] else 'FAIL'} | "
        + ", ".join(f"{k} {dl['dead_lettered'].get(k, 0):,}/{n:,}" for k, n in dl["sent"].items())
        + " |"
    )
    agg = o["aggregates"]
    lines.append(
        f"| Postgres sales = purchases sent | {'ok' if agg['ok'] else 'FAIL'} | "
        f"{agg['purchases_sent']:,} purchases, revenue "
        + " + ".join(f"{c} {v:,.2f}" for c, v in agg["revenue_sent"].items())
        + f" over {agg['windows']:,} minute x category x currency windows; "
        f"{agg['mismatched_windows']} differ |"
    )
    wh = o["warehouse"]
    lines.append(
        f"| Iceberg = landable events sent | {'ok' if wh['ok'] else 'FAIL'} | days "
        f"{', '.join(wh['days'])}: {wh['iceberg_rows']:,} rows, {wh['soak_events_missing']} of "
        "the soak's events missing |"
    )
    rec = report["recovery_s"]
    lines += [
        "",
        "## Faults",
        "",
        "Recovery: fault -> end of the stream's next batch that read input; for a compaction "
        "killed mid-commit, the kill -> the day recorded verified by Airflow's retry (one "
        "minute's retry delay, then the whole run again). "
        f"p50 {rec['p50']} s, "
        f"max {rec['max']} s. Max lag {report['max_lag']:,} records; caught up "
        f"{report['catch_up_s']} s after the traffic ended.",
        "",
        "| # | fault | at (UTC) | what was done | recovery s | needed an operator |",
        "|---:|---|---|---|---:|---|",
    ]
    for i, f in enumerate(report["faults"], 1):
        lines.append(
            f"| {i} | {f['kind']} | {f['started'][11:19]} | {f['detail']} | "
            f"{f['recovery_s'] if f['recovery_s'] is not None else 'NOT recovered'} | "
            f"{f['needed_operator'] or 'no'} |"
        )
    op = report["operator_restart"]
    lines += [
        "",
        f"Then an operator's restart from the Airflow CLI (`airflow dags trigger stream_control`, "
        f"action `restart`): driver {op['old_pid']} -> {op.get('new_pid')}, a batch again "
        f"{op['recovery_s'] if op['recovery_s'] is not None else 'NEVER'} s after the trigger.",
    ]
    sup = report["supervision"]
    lines += [
        "",
        "## What supervision did",
        "",
        f"Health verdicts: {', '.join(f'{k} {v}' for k, v in sup['health_verdicts'].items()) or 'none'}.",
        "",
        "| at (UTC) | action | reason |",
        "|---|---|---|",
        *[
            f"| {a['ts'][11:19]} | {a['action']} | {a['reason'].replace('|', '/')} |"
            for a in sup["actions"]
        ],
        "",
        "Driver runs (exit code and reason):",
        "",
        *[
            f"- {r['started'][11:19]} -> {(r['ended'] or '')[11:19] or 'running'}: "
            f"{r['exit_code'] if r['exit_code'] is not None else 'no end recorded (killed)'}"
            f"{' ' + r['reason'] if r['reason'] else ''}"
            for r in sup["driver_runs"]
        ],
        "",
        "## Faults this machine could not inject",
        "",
        *(
            [f"- {k}: {v}" for k, v in report["not_injected"].items()]
            or ["None: every fault of the profile was injected."]
        ),
        "",
    ]
    return "\n".join(lines)


def plot(report: dict, path: Path) -> Path:
    """Lag and records read per minute over the soak, each fault marked (matplotlib, Agg)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def t(iso: str) -> datetime:
        return datetime.fromisoformat(iso)

    fig, (lag_ax, rate_ax) = plt.subplots(2, 1, figsize=(9, 5), sharex=True)
    lags = [(t(x["t"]), x["lag"]) for x in report["samples"] if "lag" in x]
    if lags:
        lag_ax.plot([a for a, _ in lags], [b for _, b in lags], lw=1, color="#c44e52")
    lag_ax.set_ylabel("lag (records)")
    per_minute: dict[datetime, int] = {}
    for b in report["batches"]:
        minute = t(b["end"]).replace(second=0, microsecond=0)
        per_minute[minute] = per_minute.get(minute, 0) + b["rows"]
    if per_minute:
        xs = sorted(per_minute)
        rate_ax.bar(
            xs, [per_minute[x] / 60 for x in xs], width=1 / 1440, align="edge", color="#4c72b0"
        )
    rate_ax.set_ylabel("records read /s\n(per minute)")
    for i, f in enumerate(report["faults"], 1):
        for ax in (lag_ax, rate_ax):
            ax.axvline(t(f["started"]), color="grey", lw=0.8, ls="--")
        lag_ax.annotate(
            f"{i} {f['kind']}",
            (t(f["started"]), 1),
            xycoords=("data", "axes fraction"),
            rotation=90,
            fontsize=6,
            va="top",
            ha="right",
        )
    rate_ax.xaxis.set_major_formatter(matplotlib.dates.DateFormatter("%H:%M", tz=UTC))
    rate_ax.set_xlabel("UTC")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(
    report: dict, json_path: Path, md_path: Path | None, png_path: Path | None = None
) -> None:
    json_path.parent.mkdir(parents=True, exist_ok=True)
    json_path.write_text(json.dumps(report, indent=2, default=str))
    if png_path is not None:
        plot(report, png_path)
    if md_path is not None:
        text = markdown(report)
        if png_path is not None:
            rel = os.path.relpath(png_path, md_path.parent)
            text = text.replace(
                "\n## Faults\n", f"\n![lag and throughput]({rel})\n\n## Faults\n", 1
            )
        md_path.write_text(text)


def main(ctx: Context, quick: bool, seed: int | None) -> int:
    """`make chaos`: the report in the logs directory (JSON), docs/reliability.md and its plot."""
    profile = QUICK if quick else DEFAULT
    seed = seed if seed is not None else int(time.time()) % 1_000_000
    report = run(ctx, profile, seed)
    out = ctx.settings.logs_dir
    md, png = ROOT / "docs" / "reliability.md", ROOT / "docs" / "img" / "chaos.png"
    write_report(report, out / f"chaos-{profile.name}.json", md, png)
    print(markdown(report))
    return 0 if report["ok"] else 1
