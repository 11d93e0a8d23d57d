"""Bring the whole stack up or down, and report its status."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
import time
from dataclasses import dataclass

import psutil

from devstack import class_archive, compose, environment, install, preflight, scratchfs, supervisor
from devstack.secrets import load_or_create
from devstack.services import ALL, Context, Postgres, S3Server
from devstack.settings import SPARK_VERSION, Settings, load


def context(settings: Settings | None = None, sandbox: bool = False) -> Context:
    """This stack's context; ``sandbox``: the tests' and benchmarks' (their S3 users write only
    under it/*/)."""
    settings = settings or load()
    secrets = load_or_create(settings.secrets_file)
    env = environment.stack_env(settings, secrets, sandbox=sandbox)
    # Every spark-submit of the stack maps the drivers' class-data archive once it is built.
    env["SPARK_SUBMIT_OPTS"] = class_archive.with_archive(
        env.get("SPARK_SUBMIT_OPTS", ""), settings
    )
    return Context(settings=settings, secrets=secrets, env=env, sandbox=sandbox)


def _say(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def check_spark_versions(ctx: Context) -> str:
    """Fail if the Python pyspark differs from the JVM Spark that spark-submit runs."""
    import pyspark

    out = subprocess.run(
        ["spark-submit", "--version"], capture_output=True, text=True, env=ctx.env, timeout=120
    )
    match = re.search(r"version (\d+\.\d+\.\d+)", out.stdout + out.stderr)
    jvm = match.group(1) if match else "unknown"
    if pyspark.__version__ != jvm or jvm != SPARK_VERSION:
        raise preflight.PreflightError(
            f"Spark versions disagree: Python pyspark {pyspark.__version__}, JVM Spark {jvm}, "
            f"expected {SPARK_VERSION}. pyspark-client may have overwritten pyspark's files: "
            "run `rm -rf .venv && make install`"
        )
    return jvm


def install_all(ctx: Context) -> None:
    cold = install.is_cold(ctx.settings)
    preflight.check_all(ctx.settings, ctx.env.get("JAVA_HOME"), cold=cold)
    install.install_all(ctx.settings)
    compose.schema(ctx.settings)  # the Compose Specification schema, for the compose file's checks
    build_class_archive(ctx)


def build_class_archive(ctx: Context) -> None:
    """The Spark drivers' class-data archive (devstack/class_archive.py), once per set of
    jars; the context's spark-submit options name it from then on."""
    if not class_archive.path(ctx.settings).exists():
        log = ctx.settings.logs_dir / "class-archive.log"
        print("==> spark: building the drivers' class-data archive (once per set of jars)")
        t = time.monotonic()
        if class_archive.ensure(ctx, log) is None:
            print(f"==> spark: no class-data archive (drivers start without one); see {log}")
        else:
            print(f"==> spark: class-data archive built in {time.monotonic() - t:.0f}s")
    opts = ctx.env.get("SPARK_SUBMIT_OPTS", "")
    ctx.env["SPARK_SUBMIT_OPTS"] = class_archive.with_archive(opts, ctx.settings)


def up(ctx: Context) -> None:
    if ctx.sandbox:  # the services run as the stack's own users, never as the sandbox's
        ctx = context(ctx.settings)
    install_all(ctx)
    check_spark_versions(ctx)
    for svc in ALL:
        _start(ctx, svc)
        if isinstance(svc, Postgres | S3Server):
            svc.bootstrap(ctx)  # idempotent: roles, databases, bucket, read-only users


def _start(ctx: Context, svc) -> None:
    running = svc.running(ctx)
    if all(running.values()):
        if svc.health(ctx).ok:
            _say(f"{svc.name}: already running")
            return
        svc.wait_healthy(ctx, timeout=60)
        return
    if any(running.values()):
        _say(f"{svc.name}: partly running; restarting it")
        svc.stop(ctx)
    preflight.check_ports(_port_settings(ctx, svc), ctx.settings.host)
    _say(f"{svc.name}: starting")
    t0 = time.monotonic()
    svc.start(ctx)
    svc.wait_healthy(ctx, timeout=240)
    _say(f"{svc.name}: healthy after {time.monotonic() - t0:.1f}s")


def _port_settings(ctx: Context, svc) -> dict[str, int]:
    """Ports of ``svc`` keyed by the name of the setting that moves them."""
    p = ctx.settings.ports
    return {
        "postgres": {"pg": p.postgres},
        "minio": {"s3": p.s3, "s3_console": p.s3_console},
        "toxiproxy": {"s3_link": p.s3_link, "toxiproxy": p.toxiproxy},
        "kafka": {"kafka": p.kafka, "kafka_controller": p.kafka_controller},
        "airflow": {
            "airflow": p.airflow,
            "airflow_worker_logs": p.airflow_worker_logs,
            "airflow_trigger_logs": p.airflow_trigger_logs,
            "airflow_scheduler_health": p.airflow_scheduler_health,
        },
        "dashboard": {"dashboard": p.dashboard},
    }[svc.name]


def leftovers(ctx: Context) -> list[psutil.Process]:
    """Processes still running with this stack's state dir in their environment or command."""
    marker = str(ctx.settings.state_dir)
    found = []
    me = os.getpid()
    for proc in psutil.process_iter(["pid", "cmdline"]):
        if proc.pid == me:
            continue
        try:
            cmd = " ".join(proc.info["cmdline"] or [])
            env_hit = proc.environ().get("RTAP_STATE_DIR") == marker
        except psutil.Error:
            continue
        if marker in cmd or env_hit:
            found.append(proc)
    return found


def down(ctx: Context) -> None:
    for svc in reversed(ALL):
        if any(svc.running(ctx).values()):
            _say(f"{svc.name}: stopping")
            svc.stop(ctx)
    if supervisor.shutdown(ctx.settings):
        _say("process supervisor: stopped")
    rest = leftovers(ctx)
    for proc in rest:
        with contextlib.suppress(psutil.Error):
            proc.terminate()
    _, alive = psutil.wait_procs(rest, timeout=15)
    for proc in alive:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    if rest:
        _say(f"stopped {len(rest)} leftover process(es) of this stack")
    # A chaos soak that did not end cleanly may have left Spark's scratch on its own file
    # system (devstack/scratchfs.py): this stack's Spark apps are gone now, so give it back.
    scratch = scratchfs.Volume(
        ctx.settings.spark_local_dir, ctx.settings.scratch_image, users=lambda: []
    )
    if scratch.mounted or scratch.image.exists():
        try:
            scratch.unmount()
            _say("Spark's scratch file system (left by a chaos soak): unmounted")
        except scratchfs.ScratchError as exc:
            _say(f"Spark's scratch file system stays mounted: {exc}")
    freed = prune_spark_local(ctx)
    if freed:
        _say(f"removed {freed / 1024**2:,.0f} MiB of Spark scratch left by killed drivers")
    _say("stack stopped")


def prune_spark_local(ctx: Context) -> int:
    """Remove Spark's scratch directories of this stack when none of its Spark apps runs
    (killed drivers leave their copy of the jars there); return the bytes freed."""
    root = ctx.settings.spark_local_dir
    if not root.is_dir() or any("org.apache.spark" in _cmdline(p) for p in leftovers(ctx)):
        return 0
    freed = 0
    for child in root.iterdir():
        with contextlib.suppress(OSError):
            freed += sum(f.stat().st_size for f in child.rglob("*") if f.is_file())
        shutil.rmtree(child, ignore_errors=True)
    return freed


def _cmdline(proc: psutil.Process) -> str:
    try:
        return " ".join(proc.cmdline())
    except psutil.Error:
        return ""


@dataclass
class Row:
    service: str
    component: str
    ports: str
    pid: str
    supervisor: str
    health: str


def status_rows(ctx: Context) -> list[Row]:
    rows = []
    for svc in ALL:
        running = svc.running(ctx)
        ports = ", ".join(f"{k}:{v}" for k, v in svc.ports(ctx).items())
        health = svc.health(ctx) if all(running.values()) else None
        supervised = svc.supervised(ctx)
        for comp, proc in running.items():
            if proc is None:
                state = "stopped"
            elif health is None:
                state = "running (other components down)"
            else:
                state = ("healthy: " if health.ok else "UNHEALTHY: ") + health.detail
            rows.append(
                Row(
                    svc.name,
                    comp,
                    ports,
                    str(proc.pid) if proc else "-",
                    _supervisor_cell(supervised[comp]),
                    state,
                )
            )
    rows.append(
        Row(
            "spark",
            f"master {ctx.settings.spark_master}",
            "-",
            "-",
            "-",
            "per job (spark-submit from Airflow tasks)",
        )
    )
    return rows


def _supervisor_cell(state: supervisor.State | None) -> str:
    """The supervisor's word on one component: its state, uptime or why it is down."""
    if state is None:
        return "-"
    detail = state.description.removeprefix(f"pid {state.pid}, ") if state.pid else ""
    detail = detail or state.description
    return f"{state.state} ({detail})" if detail else state.state


def print_status(ctx: Context) -> bool:
    rows = status_rows(ctx)
    fields = ("service", "component", "ports", "pid", "supervisor")
    widths = [max(len(getattr(r, f)) for r in rows) for f in fields]
    header = ("SERVICE", "COMPONENT", "PORTS", "PID", "SUPERVISOR")
    widths = [max(w, len(h)) for w, h in zip(widths, header, strict=True)]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths) + "  {}"
    print(fmt.format(*header, "HEALTH"))
    for r in rows:
        print(fmt.format(r.service, r.component, r.ports, r.pid, r.supervisor, r.health))
    print(f"\nstate and logs: {ctx.settings.state_dir}  (logs in {ctx.settings.logs_dir})")
    print(
        "restart policy: devstack/supervisor.py; supervisorctl -c "
        f"{supervisor.config_path(ctx.settings)} status"
    )
    return all(r.health.startswith(("healthy", "per job")) for r in rows)


def is_up(ctx: Context) -> bool:
    return all(all(svc.running(ctx).values()) and svc.health(ctx).ok for svc in ALL)
