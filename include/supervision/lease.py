"""A single-writer lease in Postgres: at most one driver writes through a checkpoint.

Two drivers on one checkpoint corrupt it: S3 has no atomic rename, so Spark's own guard (a
rename that fails if the batch file exists) does not hold there. Airflow cannot be the guard
either: it may believe a task dead (a lost heartbeat, a restarted worker) while its
``spark-submit`` still runs. So the driver itself takes a lease row keyed by the checkpoint
before it starts, renews it every ``ttl / 3`` and stops writing if it loses it.

A lease is free when it expired, or when its holder ran on this host and its process is gone
(a ``kill -9``: the restart need not wait for the expiry). A stopped (``SIGSTOP``) driver keeps
its process, so its lease stays held until it expires or supervision kills it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import threading
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

log = logging.getLogger(__name__)


class LeaseHeld(RuntimeError):
    """Another live driver holds the lease."""


class LeaseLost(RuntimeError):
    """This driver's lease was taken over or removed."""


@dataclass(frozen=True)
class Holder:
    name: str
    owner: str
    host: str
    pid: int
    acquired_at: datetime
    heartbeat_at: datetime
    expires_at: datetime
    now: datetime

    @property
    def expired(self) -> bool:
        return self.expires_at <= self.now

    @property
    def heartbeat_age_s(self) -> float:
        return (self.now - self.heartbeat_at).total_seconds()

    def process_gone(self, host: str | None = None) -> bool:
        """True when the holder ran on this host and its process no longer exists."""
        if self.host != (host or socket.gethostname()):
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return _is_zombie(self.pid)  # killed, not yet reaped by its (dead) parent

    @property
    def free(self) -> bool:
        return self.expired or self.process_gone()

    def describe(self) -> str:
        return (
            f"held by driver pid {self.pid} on {self.host} since {self.acquired_at:%Y-%m-%d %H:%M:%S}Z, "
            f"last heartbeat {self.heartbeat_age_s:.0f}s ago, expires {self.expires_at:%H:%M:%S}Z"
        )


def _is_zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def lease_name(checkpoint_root: str) -> str:
    """The lease of a checkpoint root (``s3a://bucket/prefix``): the driver takes it, the
    launch DAG's preflight checks it."""
    return f"stream:{checkpoint_root.rstrip('/')}"


SINK_PREFIX = "sink:"


def sink_lease_name(path: str) -> str:
    """The lease of a file sink's path (``s3a://bucket/prefix``): the driver takes one for each
    of its outputs beside its checkpoint's. Two streams with different checkpoints committing
    to one sink's ``_spark_metadata`` log would each number their batches from its own
    checkpoint, and the sink skips a batch id its log already holds: silently lost."""
    return f"{SINK_PREFIX}{path.rstrip('/')}"


def driver_leases(checkpoint_root: str, outputs: Sequence[str]) -> list[str]:
    """Every lease a driver takes: its checkpoint's first, then one per output path."""
    return [lease_name(checkpoint_root), *(sink_lease_name(p) for p in outputs)]


def holder(conn, name: str) -> Holder | None:
    with conn.cursor() as cur:
        cur.execute(
            "SELECT name, owner, host, pid, acquired_at, heartbeat_at, expires_at, now() "
            "FROM stream_leases WHERE name = %s",
            (name,),
        )
        row = cur.fetchone()
    conn.commit()
    return Holder(*row) if row else None


def refuse_if_held(conn, name: str) -> Holder | None:
    """Raise :class:`LeaseHeld` when a live driver holds ``name``; return a stale holder."""
    current = holder(conn, name)
    if current is not None and not current.free:
        harm = (
            "A second stream committing to the same output path would have its batches "
            "skipped as already committed: give each stream its own lake and dead-letter "
            "prefixes, or stop the running one first"
            if name.startswith(SINK_PREFIX)
            else "A second driver on the same checkpoint would corrupt it: stop the running "
            "one first"
        )
        raise LeaseHeld(
            f"single-writer lease {name!r} is {current.describe()}. {harm} (stream_control, "
            "action=stop) or wait for its lease to expire."
        )
    return current


def new_owner() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def acquire(conn, name: str, owner: str, ttl_s: float) -> Holder:
    """Take the lease, or raise :class:`LeaseHeld` naming the live holder."""
    stale = refuse_if_held(conn, name)
    host, pid = socket.gethostname(), os.getpid()
    with conn.cursor() as cur:
        # The WHERE clause re-checks in the same statement: of two racing drivers, one wins.
        cur.execute(
            """
            INSERT INTO stream_leases AS l
                (name, owner, host, pid, acquired_at, heartbeat_at, expires_at)
            VALUES (%(name)s, %(owner)s, %(host)s, %(pid)s, now(), now(),
                    now() + make_interval(secs => %(ttl)s))
            ON CONFLICT (name) DO UPDATE SET
                owner = EXCLUDED.owner, host = EXCLUDED.host, pid = EXCLUDED.pid,
                acquired_at = now(), heartbeat_at = now(), expires_at = EXCLUDED.expires_at
            WHERE l.owner = EXCLUDED.owner OR l.expires_at <= now() OR l.owner = %(stale)s
            RETURNING owner
            """,
            {
                "name": name,
                "owner": owner,
                "host": host,
                "pid": pid,
                "ttl": ttl_s,
                "stale": stale.owner if stale is not None else None,
            },
        )
        won = cur.fetchone() is not None
    conn.commit()
    if not won:
        refuse_if_held(conn, name)  # raises with the winner named
        raise LeaseHeld(f"single-writer lease {name!r} was taken by another driver meanwhile")
    if stale is not None:
        log.warning("took over lease %r from a dead or expired driver (%s)", name, stale.describe())
    current = holder(conn, name)
    assert current is not None
    return current


def acquire_all(conn, names: Sequence[str], owner: str, ttl_s: float) -> Holder:
    """Take every lease of ``names`` (:func:`driver_leases`), or none: on a held one, release
    those taken and raise its :class:`LeaseHeld`. The first name's holder."""
    held: list[Holder] = []
    try:
        for name in names:
            held.append(acquire(conn, name, owner, ttl_s))
    except LeaseHeld:
        release_all(conn, [h.name for h in held], owner)
        raise
    return held[0]


def release_all(conn, names: Sequence[str], owner: str) -> None:
    for name in names:
        release(conn, name, owner)


def renew(conn, name: str, owner: str, ttl_s: float) -> None:
    with conn.cursor() as cur:
        cur.execute(
            "UPDATE stream_leases SET heartbeat_at = now(), "
            "expires_at = now() + make_interval(secs => %s) WHERE name = %s AND owner = %s",
            (ttl_s, name, owner),
        )
        kept = cur.rowcount == 1
    conn.commit()
    if not kept:
        raise LeaseLost(f"single-writer lease {name!r} is no longer held by {owner}")


def fence(cur, name: str, owner: str) -> None:
    """Inside a writer's transaction: the lease is still ``owner``'s and unexpired, and stays so
    until the transaction ends (``FOR SHARE`` blocks a takeover meanwhile); else LeaseLost and
    the caller's transaction must not commit. A frozen driver that wakes up after another took
    over cannot overwrite the newer driver's writes."""
    cur.execute(
        "SELECT 1 FROM stream_leases WHERE name = %s AND owner = %s AND expires_at > now() "
        "FOR SHARE",
        (name, owner),
    )
    if cur.fetchone() is None:
        raise LeaseLost(f"single-writer lease {name!r} is no longer held by {owner}: not writing")


def release(conn, name: str, owner: str) -> None:
    with conn.cursor() as cur:
        cur.execute("DELETE FROM stream_leases WHERE name = %s AND owner = %s", (name, owner))
    conn.commit()


class LeaseKeeper(threading.Thread):
    """Renews a lease (and the leases ``also`` names) every ``ttl / 3``; calls ``on_lost`` once
    if one is lost, or if it cannot be renewed before it would expire (another driver may then
    take it).

    With ``should_stop`` (``conn -> reason | None``, e.g. an operator's stop request), it also
    calls ``on_stop(reason)`` once when a stop is asked for, and keeps renewing meanwhile.
    """

    def __init__(
        self,
        connect: Callable[[], object],
        name: str,
        owner: str,
        ttl_s: float,
        on_lost: Callable[[str], None],
        should_stop: Callable[[object], str | None] | None = None,
        on_stop: Callable[[str], None] | None = None,
        also: Sequence[str] = (),
    ) -> None:
        super().__init__(name="lease-keeper", daemon=True)
        self.connect, self.lease, self.owner, self.ttl_s = connect, name, owner, ttl_s
        self.also = tuple(also)  # the output paths' leases, renewed with it
        self.on_lost, self.should_stop, self.on_stop = on_lost, should_stop, on_stop
        self.lost: str | None = None
        self.stop_requested: str | None = None
        self._stop_event = threading.Event()

    def stop(self) -> None:
        self._stop_event.set()

    def run(self) -> None:
        import time

        conn = None
        last_ok = time.monotonic()
        while not self._stop_event.wait(self.ttl_s / 3):
            try:
                if conn is None:
                    conn = self.connect()
                for lease in (self.lease, *self.also):
                    renew(conn, lease, self.owner, self.ttl_s)
                last_ok = time.monotonic()
                if self.should_stop and self.stop_requested is None:
                    reason = self.should_stop(conn)
                    if reason:
                        self.stop_requested = reason
                        log.warning("%s; stopping gracefully after the current batch", reason)
                        if self.on_stop:
                            self.on_stop(reason)
            except LeaseLost as exc:
                self._lose(str(exc))
                return
            except Exception as exc:  # Postgres unreachable: retry until the lease would expire
                log.warning("could not renew lease %r: %s", self.lease, exc)
                if conn is not None:
                    with contextlib.suppress(Exception):
                        conn.close()
                conn = None
                if time.monotonic() - last_ok >= self.ttl_s:
                    self._lose(f"lease {self.lease!r} not renewed for {self.ttl_s:.0f}s: {exc}")
                    return

    def _lose(self, reason: str) -> None:
        self.lost = reason
        log.error("%s; stopping the queries", reason)
        self.on_lost(reason)
