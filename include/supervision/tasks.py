"""What the supervision DAGs' tasks do: Airflow connections in, the pure modules' decisions out.

``stream_events`` (launch): :func:`migrate`, :func:`gate`, :func:`preflight`,
:func:`retention_guard`, :func:`single_writer`; ``stream_health``: :func:`assess_health`, :func:`act_on_health`;
``stream_control``: :func:`operate`.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from include import connections, pipeline
from include.supervision import checkpoint, control, health, notify, retention
from include.supervision import preflight as checks

if TYPE_CHECKING:
    from datetime import datetime

log = logging.getLogger(__name__)


_kafka_admin = connections.kafka_admin
_s3 = connections.s3_client
_postgres = connections.postgres


def migrate(params: dict[str, Any]) -> list[str]:
    """The analytics schema brought up to date before a launch (``include/analytics/
    migrations``): a new ``pg_schema``, a live aggregate a module in ``aggregate_modules``
    declares. What it applied (by file name) is the task's XCom."""
    from include.analytics import migrations, store

    added = store.load_aggregate_modules(params.get("aggregate_modules", ""))
    conn = _postgres(params["pg_schema"])
    try:
        applied = migrations.migrate(conn, params["pg_schema"])
    finally:
        conn.close()
    log.info(
        "schema %s at migration %s; applied: %s; aggregates added by modules: %s",
        params["pg_schema"],
        migrations.latest(),
        ", ".join(applied) or "none",
        ", ".join(added) or "none",
    )
    return applied


def _refusals_recorded(check):
    """Record a launch refused by ``check`` (``stream_restarts``: launch_refused), so that the
    gate halts a stream whose launches keep being refused instead of letting ``@continuous``
    start failing runs back to back."""

    def wrapper(params: dict, *args: Any) -> Any:
        try:
            return check(params, *args)
        except Exception as exc:
            try:
                conn = _postgres(params["pg_schema"])
                try:
                    control.record_restart(
                        conn, _lease_name(params), None, None, "launch_refused", str(exc)
                    )
                finally:
                    conn.close()
            except Exception as record_error:  # the refusal itself is what matters
                log.warning("could not record the refused launch: %s", record_error)
            raise

    wrapper.__name__ = check.__name__
    wrapper.__doc__ = check.__doc__
    return wrapper


@_refusals_recorded
def preflight(params: dict) -> None:
    partitions = checks.check_topic(_kafka_admin(), params["topic"])
    s3 = _s3()
    checks.check_bucket(s3, params["bucket"])
    positions = checks.checkpoint_positions(
        s3, params["bucket"], params["checkpoint_prefix"], params["topic"]
    )
    sinks = {k: params[k] for k in ("lake_prefix", "dead_letter_prefix")}
    _, list_keys = checkpoint.s3_reader(s3, params["bucket"])
    checks.check_sink_logs(list_keys, params["bucket"], sinks, positions)
    log.info("topic %s (%s partitions), bucket and checkpoint ok", params["topic"], partitions)


@_refusals_recorded
def retention_guard(params: dict, dag_run: Any = None) -> dict:
    """Returns the gaps found and whether the driver should drain past them (accepted by the
    run's param or by a pending ``stream_control`` acceptance, consumed here)."""
    positions = checks.checkpoint_positions(
        _s3(), params["bucket"], params["checkpoint_prefix"], params["topic"]
    )
    gaps = checks.guard_retention(_kafka_admin(), params["topic"], positions, accept=True)
    if not gaps:
        return {"gaps": [], "accept": False}
    name = _lease_name(params)
    conn = _postgres(params["pg_schema"])
    try:
        if params.get("accept_retention_gap"):
            who = getattr(dag_run, "triggering_user_name", None) or "unknown user"
            run_id = getattr(dag_run, "run_id", "?")
            accepted_by = f"{who} (param accept_retention_gap of run {run_id})"
        else:
            accepted_by = control.take_gap_acceptance(conn, name)
        if accepted_by is None:
            raise retention.RetentionGapError(gaps)
        # The acceptance of a loss is kept where the health page and audits read it, and its
        # ranges where reconcile does (the records in them are not missing: accepted lost).
        lake_path = pipeline.s3a(params["bucket"], params["lake_prefix"])
        for gap in gaps:
            log.warning("ACCEPTED by the operator %s: %s", accepted_by, gap.describe())
            control.record_accepted_gap(
                conn,
                name,
                lake_path,
                gap.topic,
                gap.partition,
                gap.next_offset,
                gap.earliest - 1,
                accepted_by,
                f"accepted by {accepted_by}: {gap.describe()}",
            )
    finally:
        conn.close()
    return {"gaps": [g.describe() for g in gaps], "accept": True}


@_refusals_recorded
def single_writer(params: dict) -> str:
    conn = _postgres(params["pg_schema"])
    try:
        message = checks.check_lease(
            conn,
            pipeline.s3a(params["bucket"], params["checkpoint_prefix"]),
            [
                pipeline.s3a(params["bucket"], params[k])
                for k in ("lake_prefix", "dead_letter_prefix")
            ],
        )
    finally:
        conn.close()
    log.info("%s", message)
    return message


def await_orphaned_driver(params: dict, poll_s: float = 10.0) -> None:
    """Before the stream task launches a driver: while a live driver holds the lease (one a
    restarted scheduler orphaned: its task instance was reset, the driver runs on), watch it
    instead of launching a second one the lease would refuse; return when it has ended. If
    the stream was stopped or halted meanwhile, fail without launching (no retry)."""
    import time

    from airflow.sdk.exceptions import AirflowFailException

    from include.supervision import lease

    name = _lease_name(params)
    watched = None
    while True:
        conn = _postgres(params["pg_schema"])
        try:
            holder = lease.holder(conn, name)
            state = control.get(conn, name)
        finally:
            conn.close()
        if holder is None or holder.expired or holder.process_gone():
            break
        if watched != holder.owner:
            log.warning(
                "a live driver holds the lease (%s): orphaned by a scheduler restart? This task "
                "adopts it and launches a new driver only when it has ended",
                holder.describe(),
            )
            watched = holder.owner
        time.sleep(poll_s)
    if watched is not None and state.state != control.RUNNING:
        raise AirflowFailException(
            f"the adopted driver ended and the stream is {state.state} by "
            f"{state.set_by or '?'} ({state.reason}): not relaunched"
        )


# --- the launch gate ------------------------------------------------------------------------


def policy_from(params: dict) -> health.Policy:
    defaults = health.Policy()
    return health.Policy(
        stall_after_s=float(params.get("stall_after_s", defaults.stall_after_s)),
        max_restarts=int(params.get("max_restarts", defaults.max_restarts)),
        restart_window_min=float(params.get("restart_window_min", defaults.restart_window_min)),
        replay_bytes_per_s=float(
            params.get("replay_mib_per_s", defaults.replay_bytes_per_s / 2**20)
        )
        * 2**20,
    )


def gate(params: dict, dag_run: Any = None) -> bool:
    """True when the stream may be launched: not stopped or halted by an operator or by
    supervision, and not in a crash loop (which this halts, with an alert). With
    ``gate_timeout_s``, fails instead of waiting longer than that."""
    from airflow.sdk.exceptions import AirflowFailException

    if not _gate_open(params):
        limit = int(params.get("gate_timeout_s") or 0)
        started = getattr(dag_run, "start_date", None)
        if limit and started is not None:
            from datetime import UTC, datetime

            waited = (datetime.now(UTC) - started).total_seconds()
            if waited > limit:
                raise AirflowFailException(
                    f"the stream is not running (see the log above); gave up after {waited:.0f}s "
                    f"(gate_timeout_s={limit})"
                )
        return False
    return True


def _dependencies_down(params: dict) -> list[str]:
    """The stream's dependencies that do not answer now, each with its error: the broker
    (metadata of the topic) and the S3 server (the bucket). Postgres answered: the caller
    holds a connection."""
    from include.supervision import dependencies

    return dependencies.down(
        {
            "kafka": dependencies.kafka(_kafka_admin, params["topic"]),
            "s3": dependencies.s3(_s3, params["bucket"]),
        }
    )


def _window_start(conn, name: str, state: control.Control):
    """Failed runs count toward a crash loop only after the operator's last decision, after
    the last time supervision saw a dependency down (runs that failed because Kafka or S3 was
    away are the outage's, not the app's) and after the stream's last batch that read input: a
    run that moved the stream forward before it died is not looping (a driver killed from
    outside, an outage of Postgres), as Kubernetes resets a container's back-off once it ran.
    A loop is failures with no progress between them."""
    from include.analytics import store

    event = control.last_dependency_event(conn, name)
    progress = store.last_progress_at(conn)
    times = [t for t in (state.updated_at, event[1] if event else None, progress) if t is not None]
    return max(times) if times else None


def _waiting(conn, name: str) -> bool:
    """Supervision saw a dependency down and has not seen it answer since."""
    last = control.last_dependency_event(conn, name)
    return last is not None and last[0] == control.WAITING_DEPENDENCY


def _waiting_for_dependencies(conn, name: str, params: dict, failures: str, waiting: bool) -> bool:
    """Before halting a crash loop (or while ``waiting``): probe the dependencies. One down ->
    record it (``waiting_dependency``), alert, and wait instead of halting; the stream resumes
    by itself when they answer (``dependencies_back``), the failures before it not counted."""
    down = _dependencies_down(params)
    if not down:
        if waiting:
            control.record_restart(
                conn, name, None, None, control.DEPENDENCIES_BACK, "every dependency answers"
            )
            notify.alert("info", f"stream {name}: its dependencies answer again; resuming")
        return False
    reason = "; ".join(down)
    control.record_restart(conn, name, None, None, control.WAITING_DEPENDENCY, reason)
    if not waiting:
        notify.alert(
            "warning",
            f"stream {name} waits for its dependencies",
            f"{reason}. {failures} are not counted as a crash loop; the stream is relaunched "
            "when they answer.",
        )
    log.warning("stream %s waits for its dependencies: %s", name, reason)
    return True


def _gate_open(params: dict) -> bool:
    name = _lease_name(params)
    policy = policy_from(params)
    conn = _postgres(params["pg_schema"])
    try:
        state = control.get(conn, name)
        if state.state == control.RUNNING:
            # Counted since the operator's last decision (a restart gives a clean slate) and
            # the last dependency outage supervision saw.
            after = _window_start(conn, name, state)
            failures = control.failures_within(conn, name, policy.restart_window_min, None, after)
            refusals = control.refusals_within(conn, name, policy.restart_window_min, after)
            looping = health.crash_loop(failures + refusals, policy)
            waiting = _waiting(conn, name)
            if looping or waiting:
                counted = f"{failures} failed driver runs and {refusals} refused launches"
                if _waiting_for_dependencies(conn, name, params, counted, waiting):
                    return False
                if waiting:  # they answer again: the failures before the outage do not count
                    after = _window_start(conn, name, state)
                    failures = control.failures_within(
                        conn, name, policy.restart_window_min, None, after
                    )
                    refusals = control.refusals_within(conn, name, policy.restart_window_min, after)
                    looping = health.crash_loop(failures + refusals, policy)
            if not looping:
                return True
            reason = (
                f"crash loop: {failures} failed driver runs and {refusals} refused launches in "
                f"the last {policy.restart_window_min:.0f} min (max_restarts="
                f"{policy.max_restarts}), while every dependency answers"
            )
            control.set_state(conn, name, control.HALTED, reason, "stream_events gate")
            control.record_restart(conn, name, None, None, "refused_crash_loop", reason)
            notify.alert(
                "critical",
                f"stream {name} halted: {reason}",
                "Fix the cause (see the stream_events task logs), then trigger stream_control "
                "with action=restart.",
            )
            return False
        log.warning(
            "stream %s is %s (by %s: %s); waiting. Trigger stream_control with action=restart "
            "to resume.",
            name,
            state.state,
            state.set_by or "?",
            state.reason,
        )
        return False
    finally:
        conn.close()


# --- the health check -------------------------------------------------------------------------


def _lease_name(params: dict) -> str:
    from include.supervision import lease

    return lease.lease_name(pipeline.s3a(params["bucket"], params["checkpoint_prefix"]))


def _recent_batches(conn, topic: str, minutes: float = 60, per_query: int = 30) -> list:
    """The trend window: each query's latest progress rows of the last ``minutes``."""
    with conn.cursor() as cur:
        cur.execute(
            """
            SELECT query_name, ts, input_rows, input_rows_per_s, processed_rows_per_s,
                   batch_duration_ms, sources, observed
            FROM (SELECT *, row_number() OVER (PARTITION BY query_name ORDER BY ts DESC) AS n
                  FROM stream_progress WHERE ts > now() - make_interval(secs => %s)) p
            WHERE n <= %s ORDER BY ts
            """,
            (minutes * 60, per_query),
        )
        rows = cur.fetchall()
    conn.commit()
    from include.analytics import store

    batches = []
    for query, ts, n, in_rate, out_rate, ms, sources, observed in rows:
        ends = store.source_end_offsets(sources, topic)
        dead = int(((observed or {}).get("dead_letter") or {}).get("dead_lettered") or 0)
        batches.append(health.Batch(query, ts, n, in_rate, out_rate, ms, ends, dead))
    return batches


def _queries(
    conn, s3: Any, params: dict, driver_started: datetime | None = None
) -> list[health.Query]:
    """Each query's facts, whatever the traffic: committed offsets and a planned, uncommitted
    batch from its checkpoint (S3; the planned batch's age on the server's clock) and, when
    that batch is the first of the driver started at ``driver_started``, the state changelogs
    the driver replays before it runs (listed only then); its last sign of life from Postgres
    (newest batch end, newest idle report)."""
    from include.analytics import store

    alive = store.last_signs_of_life(conn)
    root = params["checkpoint_prefix"].strip("/")
    positions = {
        p.query: p for p in checks.checkpoint_positions(s3, params["bucket"], root, params["topic"])
    }
    now = _db_now(conn)
    queries = []
    for name in pipeline.STREAM_QUERIES:
        pos = positions.get(name)
        in_flight, replay = None, 0
        if (
            pos is not None
            and pos.planned_batch is not None
            and (pos.committed_batch is None or pos.planned_batch > pos.committed_batch)
        ):
            key = f"{root}/{name}/offsets/{pos.planned_batch}"
            planned_at = s3.head_object(Bucket=params["bucket"], Key=key)["LastModified"]
            in_flight = max(0.0, (now - planned_at).total_seconds())
            if driver_started is not None and health.first_batch_of_driver(
                alive.get(name), driver_started
            ):
                state = checkpoint.s3_sizes(s3, params["bucket"])(f"{root}/{name}/state/")
                replay = checkpoint.replay_bytes(state, pos.committed_batch)
        committed = None if pos is None else pos.offsets.get(params["topic"])
        queries.append(health.Query(name, committed, in_flight, alive.get(name), replay))
    return queries


def assess_health(params: dict) -> dict:
    """Gather the inputs, classify, record the result in ``stream_health``, return it."""
    from include.supervision import lease

    name = _lease_name(params)
    policy = policy_from(params)
    conn = _postgres(params["pg_schema"])
    try:
        holder = lease.holder(conn, name)
        driver = None
        if holder is not None:
            gone = holder.process_gone()
            driver = health.Driver(
                holder.pid, holder.host, holder.heartbeat_age_s, holder.expired, not gone
            )
        state = control.get(conn, name)
        failures = control.failures_within(
            conn,
            name,
            policy.restart_window_min,
            holder.owner if holder else None,
            _window_start(conn, name, state),
        )
        driver_started = holder.acquired_at if holder else None
        report = health.assess(
            now=_db_now(conn),
            driver=driver,
            queries=_queries(conn, _s3(), params, driver_started),
            batches=_recent_batches(conn, params["topic"]),
            log_end=retention.log_end_offsets(_kafka_admin(), params["topic"]),
            failures_in_window=failures,
            stopped=None
            if state.state == control.RUNNING
            else f"{state.state} by {state.set_by or 'an operator'}: {state.reason} "
            "(stream_control)",
            policy=policy,
            driver_started=driver_started,
        ).as_dict()
        report["metrics"]["failures_in_window"] = failures
        control.record_health(conn, name, report)
    finally:
        conn.close()
    log.info("stream %s is %s: %s", name, report["status"], "; ".join(report["reasons"]) or "ok")
    log.info("figures: %s", json.dumps(report["metrics"], default=str))
    return report


def _db_now(conn):
    with conn.cursor() as cur:
        cur.execute("SELECT now()")
        now = cur.fetchone()[0]
    conn.commit()
    return now


def act_on_health(report: dict, params: dict) -> str:
    """Restart a stalled driver (unless in a crash loop: then halt and alert); alert on the
    other unhealthy states. Returns what was done."""
    from airflow.sdk.exceptions import AirflowFailException

    from include.supervision import driver as drivers

    name = _lease_name(params)
    status, reasons = report["status"], "; ".join(report["reasons"])
    if status == health.DEGRADED:
        notify.alert("warning", f"stream {name} is degraded", reasons)
        return "alerted"
    if status == health.DOWN:
        notify.alert("warning", f"stream {name} is down", reasons)
        return "alerted"
    if status != health.STALLED:
        return "none"
    policy = policy_from(params)
    drv = report["driver"] or {}
    conn = _postgres(params["pg_schema"])
    try:
        failures = int(report["metrics"].get("failures_in_window", 0))
        if health.crash_loop(failures, policy) and _waiting_for_dependencies(
            conn, name, params, f"{failures} failed driver runs", _waiting(conn, name)
        ):
            return "waiting for dependencies"
        if health.crash_loop(failures, policy):
            reason = f"stalled ({reasons}) after {failures} failed runs: crash loop"
            control.set_state(conn, name, control.HALTED, reason, "stream_health")
            control.record_restart(conn, name, drv.get("pid"), drv.get("host"), "refused", reason)
            raise AirflowFailException(
                f"stream {name} not restarted: {reason}. Fix the cause, then trigger "
                "stream_control with action=restart."
            )
        if not params.get("restart", True):
            notify.alert("error", f"stream {name} is stalled (restart disabled)", reasons)
            return "alerted"
        killed = drivers.kill_driver(int(drv["pid"]), drv["host"])
        control.record_restart(conn, name, drv.get("pid"), drv.get("host"), "restarted", reasons)
    finally:
        conn.close()
    notify.alert(
        "error",
        f"stream {name} was stalled: killed driver pids {killed}; the launcher restarts it "
        "from its checkpoints",
        reasons,
    )
    return f"restarted (killed {killed})"


# --- operations -------------------------------------------------------------------------------


def _int_param(params: dict, key: str) -> int:
    value = params.get(key)
    if value is None or value == "":
        raise ValueError(f"action=quarantine needs the param `{key}`")
    try:
        return int(value)
    except (TypeError, ValueError):
        raise ValueError(f"param `{key}`={value!r}: expected an integer") from None


def operate(params: dict, dag_run: Any = None) -> str:
    """``stop``: the running driver stops between two batches and the launcher waits;
    ``restart``: the running driver stops the same way and the launcher starts a new one (a
    stopped or halted stream resumes); ``quarantine``: the offsets ``from_offset`` to
    ``to_offset`` of ``topic``/``partition`` go to the dead letters (reason ``quarantined``)
    instead of being processed, from the stream's next batch (a halted stream resumes). Stop
    and restart wait until the old driver has exited."""
    import time

    from include.supervision import lease

    action = params["action"]
    who = getattr(dag_run, "triggering_user_name", None) or "an operator"
    reason = params.get("reason") or f"{action} from the stream_control DAG"
    name = _lease_name(params)
    conn = _postgres(params["pg_schema"])
    try:
        before = lease.holder(conn, name)
        if action == "stop":
            control.set_state(conn, name, control.STOPPED, reason, who)
        elif action == "quarantine":
            qid = control.quarantine(
                conn,
                params["topic"],
                _int_param(params, "partition"),
                _int_param(params, "from_offset"),
                _int_param(params, "to_offset"),
                params.get("reason") or "",
                who,
            )
            log.warning(
                "stream %s: %s quarantined %s/%s offsets %s..%s (#%s: %s)",
                name,
                who,
                params["topic"],
                params["partition"],
                params["from_offset"],
                params["to_offset"],
                qid,
                reason,
            )
            # The running driver re-reads the quarantine every batch: no restart. A stream that
            # supervision halted (a crash loop on that record) resumes.
            if control.get(conn, name).state == control.HALTED:
                control.set_state(conn, name, control.RUNNING, reason, who)
            return f"{action}: #{qid}; the stream dead-letters those offsets from its next batch"
        elif action == "restart":
            control.set_state(conn, name, control.RUNNING, reason, who, restart=True)
        elif action == "accept_retention_gap":
            control.request_gap_acceptance(conn, name, reason, who)
            log.warning(
                "stream %s: %s accepts the next retention gap the launch guard finds (%s)",
                name,
                who,
                reason,
            )
            return f"{action}: the next launch drains past the gap its guard names"
        else:
            raise ValueError(
                f"unknown action {action!r} (param `action`): stop, restart, quarantine or "
                "accept_retention_gap"
            )
        log.info("stream %s: %s requested by %s (%s)", name, action, who, reason)
        if before is None or before.free:
            return f"{action}: no driver was running"
        deadline = time.monotonic() + float(params.get("wait_s", 600))
        while time.monotonic() < deadline:
            now = lease.holder(conn, name)
            if now is None or now.owner != before.owner or now.free:
                return f"{action}: driver pid {before.pid} stopped"
            time.sleep(2)
        raise TimeoutError(
            f"driver pid {before.pid} did not stop within {params.get('wait_s', 600)}s; the "
            "health check restarts a stalled one"
        )
    finally:
        conn.close()
