"""Health of the streaming app, from facts that exist whatever the traffic.

:func:`assess` is pure: it takes the driver's lease, what is known of each query (:class:`Query`:
its committed offsets from the checkpoint, a batch planned and not committed yet, its last sign
of life), the recent progress rows, the log-end offsets of the topic and the recent failed runs,
and returns a :class:`Health` with a status, the reasons and the figures. The health DAG
gathers the inputs and acts on the status.

* **stalled** — a driver holds the lease but stopped heart-beating (frozen, e.g. ``SIGSTOP``);
  or one query has a batch planned (``offsets/<n>`` in its checkpoint) and not committed for
  longer than the batch limit (a wedged sink; counted from the driver's start when a
  relaunched driver re-runs it, and extended for that driver's first batch by the time its
  state changelogs take to replay: ``replay_bytes_per_s``); or records wait for a query that
  has neither planned a batch nor reported itself idle for ``stall_after_s``. Each query is
  judged on its own. The health DAG restarts it.
* **down** — no live driver holds the lease and no operator stopped it: the launch DAG
  should be starting one (its retries and its next run do); reported, not restarted.
* **degraded** — it runs, but something trends wrong: lag growing while processing is slower
  than input, batches much longer than before, a high dead-letter rate, recent restarts.
* **healthy** — none of the above; **idle** when nothing waits (however long ago the last batch
  ran: an idle stream is healthy). **stopped** — an operator stopped it or supervision halted
  it (``stream_control``); the reason says which, who and why.

Lag is the broker's log-end offsets minus the offsets the query's checkpoint committed (the
Kafka source commits nothing to a consumer group, and the checkpoint is what a restart resumes
from). Signs of life are the end of a batch (``stream_progress``) and Spark's idle reports
(``onQueryIdle``, recorded by the driver's listener in ``stream_idle``): a query that waits
for data says so every few seconds, so sparse traffic and long idle periods are never read as
a stall.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from statistics import median
from typing import Any

from include import pipeline

HEALTHY, DEGRADED, STALLED, DOWN, STOPPED = "healthy", "degraded", "stalled", "down", "stopped"


@dataclass(frozen=True)
class Policy:
    stall_after_s: float = pipeline.STALL_AFTER_S  # no heartbeat; or data waiting, no sign of life
    max_dead_letter_rate: float = 0.05  # share of input rows dead-lettered, recent batches
    slow_batch_factor: float = 3.0  # recent median batch duration vs the earlier median
    # failed driver runs within restart_window_min: restarts stop
    max_restarts: int = pipeline.MAX_RESTARTS
    restart_window_min: float = pipeline.RESTART_WINDOW_MIN
    # A relaunched driver's first batch may run its batch limit plus its state's replay at
    # this rate (pipeline.REPLAY_MIB_PER_S).
    replay_bytes_per_s: float = pipeline.REPLAY_MIB_PER_S * 2**20


@dataclass(frozen=True)
class Batch:
    """One progress row of a query (``stream_progress``)."""

    query: str
    ts: datetime
    input_rows: int
    input_rows_per_s: float
    processed_rows_per_s: float
    duration_ms: int
    end_offsets: Mapping[int, int]  # partition -> offset after the batch
    dead_lettered: int = 0


@dataclass(frozen=True)
class Driver:
    pid: int
    host: str
    heartbeat_age_s: float
    expired: bool
    alive: bool  # False: the process is gone (checked on this host)


@dataclass
class Health:
    status: str
    reasons: list[str] = field(default_factory=list)
    metrics: dict[str, Any] = field(default_factory=dict)
    driver: Driver | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "reasons": self.reasons,
            "metrics": self.metrics,
            "driver": asdict(self.driver) if self.driver else None,
        }


@dataclass(frozen=True)
class Query:
    """What is known of one streaming query, whatever the traffic."""

    name: str
    committed: Mapping[int, int] | None  # partition -> next offset (checkpoint); None: none yet
    in_flight_s: float | None = None  # a batch planned and not committed: seconds since planned
    last_alive: datetime | None = None  # its newest batch end or idle report
    replay_bytes: int = 0  # state changelogs a restarted driver replays before the batch runs


def lag_per_partition(
    committed: Mapping[int, int] | None, log_end: Mapping[int, int]
) -> dict[int, int]:
    """Records the query has not read yet, per partition (log end minus committed offsets; a
    query without a committed batch has the whole log before it)."""
    done = committed or {}
    return {p: max(0, end - int(done.get(p, 0))) for p, end in sorted(log_end.items())}


def _batch_limit_s(query: str, batches: Sequence[Batch], policy: Policy) -> float:
    """How long a planned batch may run before the query counts as wedged: ``stall_after_s``,
    or ``slow_batch_factor`` times the query's recent median batch when that is longer."""
    recent = [b.duration_ms for b in batches if b.query == query][-10:]
    typical = median(recent) / 1000 if recent else 0.0
    return max(policy.stall_after_s, policy.slow_batch_factor * typical)


def replay_allowance_s(replay_bytes: int, policy: Policy) -> float:
    """Seconds a relaunched driver's first batch gets on top of its batch limit to replay
    ``replay_bytes`` of state changelogs."""
    return replay_bytes / policy.replay_bytes_per_s


def first_batch_of_driver(last_alive: datetime | None, driver_started: datetime) -> bool:
    """Whether a query's batch in flight is the first of the driver started at
    ``driver_started``: the query has shown no sign of life since (the only batch that
    replays the state's changelogs before it runs)."""
    return last_alive is None or last_alive < driver_started


def _stalled_query(
    now: datetime,
    q: Query,
    lag: int,
    batches: Sequence[Batch],
    driver_started: datetime | None,
    policy: Policy,
) -> str | None:
    if q.in_flight_s is not None:
        running = q.in_flight_s
        limit = _batch_limit_s(q.name, batches, policy)
        replay = ""
        if driver_started is not None:  # a relaunched driver re-runs the planned batch anew
            running = min(running, (now - driver_started).total_seconds())
            first = first_batch_of_driver(q.last_alive, driver_started)
            if first and q.replay_bytes > 0:  # its state is replayed before the batch runs
                allowance = replay_allowance_s(q.replay_bytes, policy)
                limit += allowance
                replay = (
                    f", {allowance:.0f}s of it for the first batch's replay of "
                    f"{q.replay_bytes / 2**20:.0f} MiB of state changelogs"
                )
        if running > limit:
            return (
                f"query {q.name}: a batch has run {running:.0f}s without committing "
                f"(limit {limit:.0f}s{replay}): wedged"
            )
        return None
    if lag <= 0:
        return None
    signs = [t for t in (q.last_alive, driver_started) if t is not None]
    silent = (now - max(signs)).total_seconds() if signs else None
    if silent is None or silent > policy.stall_after_s:
        age = "ever" if silent is None else f"{silent:.0f}s"
        return (
            f"query {q.name}: {lag} records waiting and no batch planned, finished or idle "
            f"report for {age}"
        )
    return None


def assess(
    now: datetime,
    driver: Driver | None,
    queries: Sequence[Query],
    batches: Sequence[Batch],
    log_end: Mapping[int, int],
    failures_in_window: int,
    stopped: str | None = None,
    policy: Policy = Policy(),
    driver_started: datetime | None = None,
) -> Health:
    lags = {q.name: lag_per_partition(q.committed, log_end) for q in queries}
    # Per partition, the query furthest behind (what the dashboard shows).
    lag = {p: max((lq[p] for lq in lags.values()), default=0) for p in sorted(log_end)}
    total_lag = sum(lag.values())
    recent = sorted(batches, key=lambda b: b.ts)
    lake = [b for b in recent if b.query == "lake"]
    dead = lake  # the one query reports the dead letters of its batches too
    metrics: dict[str, Any] = {
        "lag": {str(p): n for p, n in lag.items()},
        "total_lag": total_lag,
        "idle": total_lag == 0,
        "queries": {
            q.name: {
                "lag": sum(lags[q.name].values()),
                "batch_in_flight_s": None if q.in_flight_s is None else round(q.in_flight_s, 1),
                "replay_bytes": q.replay_bytes,
                "last_alive_age_s": None
                if q.last_alive is None
                else round((now - q.last_alive).total_seconds(), 1),
            }
            for q in queries
        },
        "input_rows_per_s": round(median([b.input_rows_per_s for b in lake[-5:]]), 1)
        if lake
        else None,
        "processed_rows_per_s": round(median([b.processed_rows_per_s for b in lake[-5:]]), 1)
        if lake
        else None,
        "failures_in_window": failures_in_window,
    }
    if stopped is not None and (driver is None or not driver.alive):
        return Health(STOPPED, [stopped], metrics, driver)
    if driver is None or not driver.alive:
        why = "no driver holds the lease" if driver is None else f"driver pid {driver.pid} is gone"
        return Health(DOWN, [why + "; the launch DAG restarts it"], metrics, driver)

    reasons: list[str] = []
    if driver.heartbeat_age_s > policy.stall_after_s:
        reasons.append(
            f"driver pid {driver.pid} has not renewed its lease for {driver.heartbeat_age_s:.0f}s "
            f"(> {policy.stall_after_s:.0f}s): frozen"
        )
    for q in queries:
        why = _stalled_query(now, q, sum(lags[q.name].values()), recent, driver_started, policy)
        if why is not None:
            reasons.append(why)
    if reasons:
        return Health(STALLED, reasons, metrics, driver)

    if len(lake) >= 6:
        earlier = median(b.duration_ms for b in lake[:-3])
        latest = median(b.duration_ms for b in lake[-3:])
        metrics["batch_ms_recent_vs_before"] = [latest, earlier]
        if earlier > 0 and latest > policy.slow_batch_factor * earlier:
            reasons.append(
                f"batches take {latest:.0f} ms, {latest / earlier:.1f}x the earlier median"
            )
    if len(lake) >= 3 and total_lag > 0:
        inp, out = metrics["input_rows_per_s"], metrics["processed_rows_per_s"]
        if out < inp:
            reasons.append(f"processing {out}/s is slower than input {inp}/s; lag {total_lag}")
    read = sum(b.input_rows for b in dead[-10:])
    dl = sum(b.dead_lettered for b in dead[-10:])
    rate = dl / read if read else 0.0
    metrics["dead_letter_rate"] = round(rate, 4)
    if rate > policy.max_dead_letter_rate:
        reasons.append(f"dead-letter rate {rate:.1%} > {policy.max_dead_letter_rate:.0%}")
    if failures_in_window > 0:
        reasons.append(
            f"{failures_in_window} failed driver run(s) in the last "
            f"{policy.restart_window_min:.0f} min"
        )
    if reasons:
        return Health(DEGRADED, reasons, metrics, driver)
    return Health(
        HEALTHY, ["idle: nothing waits to be read"] if total_lag == 0 else [], metrics, driver
    )


def crash_loop(failures_in_window: int, policy: Policy) -> bool:
    """True when ``max_restarts`` driver runs failed within the window: stop restarting."""
    return failures_in_window >= policy.max_restarts
