"""Start, find and stop background processes by pid file.

A pid file records the pid *and* the process start time, so a recycled pid is never mistaken
for ours. Each service runs in its own session (process group): stopping it signals the
whole group, which takes its children (Airflow workers, spark-submit, the JVM) with it.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from pathlib import Path

import psutil


class ProcessError(RuntimeError):
    pass


def _since_boot(proc: psutil.Process) -> float:
    """When ``proc`` started, in seconds since the machine booted: unlike its start time on
    the wall clock (``create_time``: boot time + that), a clock step (NTP) leaves it alone.
    Once the clock jumped 38 s mid-run and every service of the stack read as stopped."""
    return proc.create_time() - psutil.boot_time()


def _read(pid_file: Path) -> tuple[int, float] | None:
    """The pid and its start (seconds since boot) recorded in ``pid_file``."""
    try:
        data = json.loads(pid_file.read_text())
        if "since_boot" not in data:  # written before 2026-12: the wall-clock start time
            return int(data["pid"]), float(data["create_time"]) - psutil.boot_time()
        return int(data["pid"]), float(data["since_boot"])
    except (OSError, ValueError, KeyError):
        return None


def find(pid_file: Path) -> psutil.Process | None:
    """The live process recorded in ``pid_file``, or None."""
    record = _read(pid_file)
    if record is None:
        return None
    pid, created = record
    try:
        proc = psutil.Process(pid)
        if abs(_since_boot(proc) - created) > 1.0 or proc.status() == psutil.STATUS_ZOMBIE:
            return None
        return proc
    except psutil.Error:
        return None


def start(
    argv: list[str],
    *,
    pid_file: Path,
    log_file: Path,
    env: dict[str, str],
    cwd: Path | None = None,
    user: str | None = None,
) -> psutil.Process:
    """Start ``argv`` detached in a new session, output appended to ``log_file``; as ``user``
    when given (we are root and the program refuses to run as root)."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "ab") as log:
        log.write(f"\n==== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {argv[0]}\n".encode())
        log.flush()
        try:
            popen = subprocess.Popen(
                argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=env,
                cwd=cwd,
                user=user,
                start_new_session=True,
            )
        except FileNotFoundError as exc:
            raise ProcessError(f"cannot start {argv[0]}: {exc.strerror}") from exc
    proc = psutil.Process(popen.pid)
    pid_file.write_text(json.dumps({"pid": popen.pid, "since_boot": _since_boot(proc)}))
    return proc


def group_members(proc: psutil.Process) -> list[psutil.Process]:
    """The process and what it started. For a session leader (what :func:`start` starts): every
    process in its session, children that re-parented included. Otherwise (a program of the
    process supervisor, which shares supervisord's session): its descendants."""
    try:
        sid = os.getsid(proc.pid)
    except OSError:
        return []
    if sid != proc.pid:
        try:
            return [proc, *proc.children(recursive=True)]
        except psutil.Error:
            return []
    members = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getsid(p.pid) == sid:
                members.append(p)
        except OSError:
            continue
    return members


def tree_rss(proc: psutil.Process) -> int:
    """Resident bytes of ``proc`` and every process in its session."""
    total = 0
    for p in group_members(proc) or [proc]:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def tree_cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU seconds of ``proc`` and every process in its session."""
    total = 0.0
    for p in group_members(proc) or [proc]:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


def stop(pid_file: Path, *, timeout: float = 30.0) -> bool:
    """SIGTERM the recorded process's session, then SIGKILL what is left. True if it ran."""
    proc = find(pid_file)
    if proc is None:
        pid_file.unlink(missing_ok=True)
        return False
    end(group_members(proc) or [proc], timeout=timeout)
    pid_file.unlink(missing_ok=True)
    return True


def end(procs: list[psutil.Process], *, timeout: float = 30.0) -> None:
    """SIGTERM ``procs``, then SIGKILL those still alive after ``timeout``."""
    for p in procs:
        with contextlib.suppress(psutil.Error):
            p.send_signal(signal.SIGTERM)
    _, alive = psutil.wait_procs(procs, timeout=timeout)
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    psutil.wait_procs(alive, timeout=10)


def wait_until(check, *, timeout: float, interval: float = 0.5, what: str = "condition"):
    """Poll ``check()`` until it returns a truthy value; raise with ``what`` on timeout."""
    deadline = time.monotonic() + timeout
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            result = check()
            if result:
                return result
        except Exception as exc:  # the service is still coming up
            last_error = exc
        time.sleep(interval)
    detail = f" (last error: {last_error})" if last_error else ""
    raise ProcessError(f"timed out after {timeout:.0f}s waiting for {what}{detail}")
