"""Health of the streaming app, from what it records and what the broker holds.

:func:`assess` is pure: it takes the driver's lease, the latest progress of each query, the
log-end offsets of the topic and the recent driver starts, and returns a :class:`Health` with
a status, the reasons and the figures. The health DAG gathers the inputs and acts on the status.

* **stalled** — a driver holds the lease but stopped heart-beating (frozen, e.g. ``SIGSTOP``),
  or data waits and no batch finished for ``stall_after_s``. The health DAG restarts it.
* **down** — no live driver holds the lease and no operator stopped it: the launch DAG
  should be starting one (its retries and its next run do); reported, not restarted.
* **degraded** — it runs, but something trends wrong: lag growing while processing is slower
  than input, batches much longer than before, a high dead-letter rate, recent restarts.
* **healthy** — none of the above. **stopped** — an operator stopped it (``stream_control``).

Lag is read from Spark's own progress (the end offsets of the last batch) against the
broker's log-end offsets: the Kafka source commits nothing to a consumer group.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from statistics import median
from typing import Any

HEALTHY, DEGRADED, STALLED, DOWN, STOPPED = "healthy", "degraded", "stalled", "down", "stopped"


@dataclass(frozen=True)
class Policy:
    stall_after_s: float = 120.0  # no heartbeat / no finished batch with data waiting
    max_dead_letter_rate: float = 0.05  # share of input rows dead-lettered, recent batches
    slow_batch_factor: float = 3.0  # recent median batch duration vs the earlier median
    max_restarts: int = 3  # failed driver runs within restart_window_min: restarts stop
    restart_window_min: float = 30.0


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


def lag_per_partition(
    batches: Sequence[Batch], log_end: Mapping[int, int], query: str = "lake"
) -> dict[int, int]:
    """Records the query has not read yet, per partition (its last batch's end offsets)."""
    mine = [b for b in batches if b.query == query and b.end_offsets]
    last = max(mine, key=lambda b: b.ts).end_offsets if mine else {}
    return {p: max(0, end - int(last.get(p, 0))) for p, end in sorted(log_end.items())}


def assess(
    now: datetime,
    driver: Driver | None,
    batches: Sequence[Batch],
    log_end: Mapping[int, int],
    failures_in_window: int,
    operator_stopped: bool = False,
    policy: Policy = Policy(),
) -> Health:
    lag = lag_per_partition(batches, log_end)
    total_lag = sum(lag.values())
    last_ts = max((b.ts for b in batches), default=None)
    progress_age = (now - last_ts).total_seconds() if last_ts else None
    recent = sorted(batches, key=lambda b: b.ts)
    lake = [b for b in recent if b.query == "lake"]
    dead = lake  # the one query reports the dead letters of its batches too
    metrics: dict[str, Any] = {
        "lag": {str(p): n for p, n in lag.items()},
        "total_lag": total_lag,
        "last_progress_age_s": None if progress_age is None else round(progress_age, 1),
        "input_rows_per_s": round(median([b.input_rows_per_s for b in lake[-5:]]), 1)
        if lake
        else None,
        "processed_rows_per_s": round(median([b.processed_rows_per_s for b in lake[-5:]]), 1)
        if lake
        else None,
        "failures_in_window": failures_in_window,
    }
    if operator_stopped and (driver is None or not driver.alive):
        return Health(STOPPED, ["stopped by an operator (stream_control)"], metrics, driver)
    if driver is None or not driver.alive:
        why = "no driver holds the lease" if driver is None else f"driver pid {driver.pid} is gone"
        return Health(DOWN, [why + "; the launch DAG restarts it"], metrics, driver)

    reasons: list[str] = []
    if driver.heartbeat_age_s > policy.stall_after_s:
        reasons.append(
            f"driver pid {driver.pid} has not renewed its lease for {driver.heartbeat_age_s:.0f}s "
            f"(> {policy.stall_after_s:.0f}s): frozen"
        )
    if total_lag > 0 and (progress_age is None or progress_age > policy.stall_after_s):
        age = "ever" if progress_age is None else f"{progress_age:.0f}s"
        reasons.append(f"{total_lag} records waiting and no batch finished for {age}")
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
    return Health(DEGRADED if reasons else HEALTHY, reasons, metrics, driver)


def crash_loop(failures_in_window: int, policy: Policy) -> bool:
    """True when ``max_restarts`` driver runs failed within the window: stop restarting."""
    return failures_in_window >= policy.max_restarts
