"""The local stack's process supervisor: supervisord (the ``supervisor`` package, PyPI).

Why supervisord: a kept, widely deployed supervisor that is a Python package (it comes with the
lock, no extra download), restarts a dead program by policy (``autorestart``, with a growing
back-off between failed starts and a ``FATAL`` state once ``startretries`` is spent), rotates
each program's log and answers XML-RPC on a Unix socket, which ``make status`` reads. The
alternative, process-compose from the Go module proxy, needs a Go build at install time and
an HTTP port; it adds nothing we use.

One supervisord runs per state directory, started in its own session (``make stop`` ends the
session and everything in it). Each service is one *program*. Its command is
``devstack/launch.py <spec>``: the spec file (mode 0600) holds the argv, the environment, the
working directory and the OS user, so no secret reaches supervisord's config, its log or
any process's command line.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time
import xmlrpc.client
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil

from devstack import process
from devstack.settings import ROOT, Settings
from include.private_file import write_private

PROGRAM = "rtap"  # supervisord's identifier
LAUNCHER = ROOT / "devstack" / "launch.py"
REAPER = ROOT / "devstack" / "reap.py"  # ends what a dead program left in its process group

# The restart policy of every service (supervisord's options, its documentation names them).
POLICY = {
    "autostart": "true",
    "autorestart": "true",  # whatever the exit: a service of the stack never ends by itself
    "startsecs": "5",  # up this long to count as started; a faster death is a failed start
    "startretries": "5",  # failed starts in a row (waiting 1 s, 2 s, ... between) before FATAL
    "stopwaitsecs": "30",  # then SIGKILL
    "stopasgroup": "true",
    "killasgroup": "true",
    "redirect_stderr": "true",
    "stdout_logfile_maxbytes": "50MB",
    "stdout_logfile_backups": "2",
}

# supervisord's process states (supervisor.states.ProcessStates)
RUNNING = "RUNNING"
STARTING = "STARTING"  # alive, not yet up for startsecs
GAVE_UP = "FATAL"


class SupervisorError(RuntimeError):
    pass


@dataclass(frozen=True)
class Program:
    """One supervised service process."""

    name: str
    argv: list[str]
    env: dict[str, str]
    log_file: Path
    cwd: Path | None = None
    user: str | None = None  # we are root and the program refuses to run as root
    stopsignal: str = "TERM"


@dataclass(frozen=True)
class State:
    """What supervisord says about one program."""

    name: str
    state: str  # RUNNING, STARTING, BACKOFF, STOPPED, EXITED, FATAL, ...
    pid: int
    description: str  # e.g. "pid 123, uptime 0:05:01" or "Exited too quickly"
    started_at: float  # epoch seconds of the last start, 0 if never


def _dir(settings: Settings) -> Path:
    return settings.run_dir / "supervisor"


def socket_path(settings: Settings) -> Path:
    return settings.run_dir / "supervisor.sock"


def config_path(settings: Settings) -> Path:
    return _dir(settings) / "supervisord.conf"


def pid_file(settings: Settings) -> Path:
    return settings.run_dir / "supervisord.pid"


def main_config(settings: Settings) -> str:
    sock = socket_path(settings)
    return "\n".join(
        [
            "[unix_http_server]",
            f"file={sock}",
            "chmod=0700",
            "",
            "[supervisord]",
            "nodaemon=true",
            f"identifier={PROGRAM}",
            f"logfile={settings.logs_dir / 'supervisord.log'}",
            "logfile_maxbytes=10MB",
            "logfile_backups=2",
            f"pidfile={_dir(settings) / 'supervisord.pid'}",
            f"childlogdir={settings.logs_dir}",
            "",
            "[rpcinterface:supervisor]",
            "supervisor.rpcinterface_factory = supervisor.rpcinterface:make_main_rpcinterface",
            "",
            "[supervisorctl]",
            f"serverurl=unix://{sock}",
            "",
            "[eventlistener:reap]",
            f"command={sys.executable} -I {REAPER}",
            "events=PROCESS_STATE_EXITED",
            "autorestart=true",
            f"stderr_logfile={settings.logs_dir / 'supervisor-reap.log'}",
            "",
            "[include]",
            f"files={_dir(settings) / 'programs'}/*.conf",
            "",
        ]
    )


def spec_path(settings: Settings, name: str) -> Path:
    return _dir(settings) / "programs" / f"{name}.json"


def program_config(settings: Settings, program: Program) -> str:
    lines = [
        f"[program:{program.name}]",
        f"command={sys.executable} -I {LAUNCHER} {spec_path(settings, program.name)}",
        f"stdout_logfile={program.log_file}",
        f"stopsignal={program.stopsignal}",
        *(f"{k}={v}" for k, v in POLICY.items()),
        "",
    ]
    return "\n".join(lines)


def client(settings: Settings) -> Any:
    """An XML-RPC proxy to this stack's supervisord (its Unix socket)."""
    from supervisor.xmlrpc import SupervisorTransport

    transport = SupervisorTransport(None, None, f"unix://{socket_path(settings)}")
    return xmlrpc.client.ServerProxy("http://localhost", transport=transport)


def is_running(settings: Settings) -> bool:
    if process.find(pid_file(settings)) is None:
        return False
    try:
        return client(settings).supervisor.getState()["statename"] == RUNNING
    except (OSError, xmlrpc.client.Error):
        return False


def ensure(settings: Settings, path_env: str) -> None:
    """Start this stack's supervisord unless it runs."""
    if is_running(settings):
        return
    process.stop(pid_file(settings))  # a supervisord that does not answer
    socket_path(settings).unlink(missing_ok=True)
    write_private(config_path(settings), main_config(settings))
    programs = _dir(settings) / "programs"
    programs.mkdir(parents=True, exist_ok=True)
    for stale in programs.iterdir():  # a new supervisord starts what `up` asks for, nothing else
        stale.unlink()
    env = {
        "PATH": path_env,
        "HOME": os.environ.get("HOME", "/tmp"),
        "RTAP_STATE_DIR": str(settings.state_dir),  # `make stop` finds leftovers by it
    }
    process.start(
        [str(Path(sys.executable).parent / "supervisord"), "-c", str(config_path(settings))],
        pid_file=pid_file(settings),
        log_file=settings.logs_dir / "supervisord.out",
        env=env,
    )
    process.wait_until(
        lambda: is_running(settings), timeout=30, what="the process supervisor (supervisord)"
    )


def start(settings: Settings, program: Program, path_env: str) -> None:
    """(Re)define ``program`` and start it under the supervisor's restart policy."""
    ensure(settings, path_env)
    rpc = client(settings).supervisor
    if program.name in {p["name"] for p in rpc.getAllProcessInfo()}:
        _stop(rpc, program.name)
        rpc.removeProcessGroup(program.name)
    program.log_file.parent.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": program.argv,
        "env": program.env,
        "cwd": str(program.cwd) if program.cwd else None,
        "user": program.user,
    }
    write_private(spec_path(settings, program.name), json.dumps(spec))
    write_private(
        _dir(settings) / "programs" / f"{program.name}.conf", program_config(settings, program)
    )
    rpc.reloadConfig()
    rpc.addProcessGroup(program.name)  # autostart: supervisord starts it now


def _stop(rpc: Any, name: str) -> None:
    with contextlib.suppress(xmlrpc.client.Fault):  # NOT_RUNNING
        rpc.stopProcess(name, True)


def _state(info: dict) -> State:
    return State(
        name=info["name"],
        state=info["statename"],
        pid=int(info["pid"]),
        description=info["description"],
        started_at=float(info["start"]),
    )


def states(settings: Settings) -> dict[str, State]:
    """Every program supervisord knows, by name; empty when it does not run."""
    if process.find(pid_file(settings)) is None:
        return {}
    try:
        return {i["name"]: _state(i) for i in client(settings).supervisor.getAllProcessInfo()}
    except (OSError, xmlrpc.client.Error):
        return {}


def running_process(settings: Settings, name: str) -> psutil.Process | None:
    """The live process of program ``name``, or None (stopped, restarting or gave up)."""
    st = states(settings).get(name)
    if st is None or st.state not in (RUNNING, STARTING) or not st.pid:
        return None
    try:
        return psutil.Process(st.pid)
    except psutil.Error:
        return None


def stop(settings: Settings, name: str) -> None:
    """Stop program ``name`` (its stop signal, then SIGKILL) and keep it stopped."""
    if process.find(pid_file(settings)) is None:
        return
    with contextlib.suppress(OSError, xmlrpc.client.Fault):
        _stop(client(settings).supervisor, name)


def resume(settings: Settings, name: str) -> None:
    """Start program ``name`` again after :func:`stop` (its definition unchanged)."""
    with contextlib.suppress(xmlrpc.client.Fault):  # ALREADY_STARTED
        client(settings).supervisor.startProcess(name, True)


def shutdown(settings: Settings, timeout: float = 60.0) -> bool:
    """Stop supervisord, then whatever still runs in its session (what a program that died
    left behind, Airflow's task processes). True if it ran."""
    proc = process.find(pid_file(settings))
    if proc is None:
        return False
    session = process.group_members(proc)
    with contextlib.suppress(OSError, xmlrpc.client.Error):
        client(settings).supervisor.shutdown()
        with contextlib.suppress(psutil.Error):
            proc.wait(timeout=timeout)
    process.stop(pid_file(settings))
    process.end(session)
    socket_path(settings).unlink(missing_ok=True)
    return True


def wait_started(settings: Settings, name: str, *, since: float, timeout: float) -> State:
    """Wait until ``name`` runs in a process started after ``since`` (epoch seconds)."""

    def check() -> State | None:
        st = states(settings).get(name)
        if st is not None and st.state == GAVE_UP:
            raise SupervisorError(f"{name}: the supervisor gave up on it ({st.description})")
        # supervisord keeps whole seconds
        fresh = st is not None and st.started_at >= int(since)
        return st if fresh and st.state == RUNNING else None

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        st = check()
        if st is not None:
            return st
        time.sleep(0.5)
    raise SupervisorError(f"{name} was not restarted within {timeout:.0f}s")
