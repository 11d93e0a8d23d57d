"""Command line of the local stack: ``python -m devstack <command>`` (the Makefile's verbs).

Commands: install, up, demo, reconcile, upgrade, compact, marts, down, status, password, env. Errors of the environment end with a
one-paragraph message and exit code 2, never a stack trace.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from devstack import stack
from devstack.airflow_api import AirflowApiError
from devstack.demo import DemoError
from devstack.install import InstallError
from devstack.preflight import PreflightError
from devstack.process import ProcessError
from devstack.secrets import SecretError
from devstack.services import ServiceError
from devstack.settings import SettingError
from devstack.spark import SparkAppError
from include.airflow_users import ROLES
from include.spark.jobs import JobSpecError

_FRIENDLY = (
    SettingError,
    SecretError,
    PreflightError,
    InstallError,
    ServiceError,
    ProcessError,
    AirflowApiError,
    DemoError,
    SparkAppError,
    JobSpecError,
)


def _reconcile(ctx, args) -> int:
    from datetime import UTC, datetime, timedelta

    from devstack.spark import reconcile
    from include import pipeline
    from include.spark.jobs import ReconcileJob
    from include.supervision.reconcile import COLUMNS

    now = datetime.now(UTC)
    job = ReconcileJob.parse(  # a wrong --since/--until stops here, the option named
        since=args.since or (now - timedelta(hours=24)).isoformat(),
        until=args.until or now.isoformat(),
        topic=args.topic or pipeline.EVENTS_TOPIC,
        lake_path=pipeline.s3a(ctx.settings.bucket, pipeline.RAW_EVENTS_PREFIX),
        dead_letter_path=pipeline.s3a(ctx.settings.bucket, pipeline.DEAD_LETTER_PREFIX),
    )
    report, table = reconcile(ctx, job)
    print(table)
    keys = ("runs", *COLUMNS)
    print("totals: " + ", ".join(f"{k} {report[k]:,}" for k in keys))
    print("==> every event accounted for" if report["ok"] else "==> PROBLEMS (see the table)")
    return 0 if report["ok"] else 1


def _upgrade(ctx, args) -> int:
    from devstack.spark import upgrade
    from include import pipeline
    from include.spark.jobs import UpgradeJob

    b = ctx.settings.bucket
    done = upgrade(
        ctx,
        UpgradeJob(
            topic=args.topic or pipeline.EVENTS_TOPIC,
            lake_path=pipeline.s3a(b, pipeline.RAW_EVENTS_PREFIX),
            dead_letter_path=pipeline.s3a(b, pipeline.DEAD_LETTER_PREFIX),
            checkpoint_root=pipeline.s3a(b, pipeline.CHECKPOINT_PREFIX),
            s3_endpoint=ctx.settings.s3_endpoint,
        ),
    )
    print(done.stderr, end="", file=sys.stderr, flush=True)
    print(done.stdout, end="")
    return done.returncode


def _memory(value: str) -> str:
    """A JVM size for ``--driver-memory`` (``6g``, ``4096m``)."""
    import re

    from include.spark.jobs import MEMORY_PATTERN

    if not re.match(MEMORY_PATTERN, value):
        raise argparse.ArgumentTypeError(f"{value!r}: a size such as 6g or 4096m")
    return value


def _compact(ctx, args) -> int:
    from datetime import UTC, datetime, timedelta

    from devstack.spark import compact
    from include import pipeline
    from include.spark.jobs import CompactJob

    day = args.day or (datetime.now(UTC).date() - timedelta(days=1)).isoformat()
    job = CompactJob.parse(
        day=day,
        lake_path=pipeline.s3a(ctx.settings.bucket, pipeline.RAW_EVENTS_PREFIX),
        warehouse=pipeline.s3a(ctx.settings.bucket, pipeline.WAREHOUSE_PREFIX),
        target_file_mb=args.target_file_mb or None,
    )
    code, report = compact(ctx, job, driver_memory=args.driver_memory)
    if code != 0:
        print(report.get("error", report))
        return 1
    src, dst = report["source"], report["target"]
    print(
        f"==> {day}: {src['files']:,} raw files ({src['bytes']:,} B, {src['rows']:,} rows) -> "
        f"{dst['files']:,} files ({dst['bytes']:,} B), {dst['rows']:,} distinct events in "
        f"{report['table']}; marts: {', '.join(report['marts'])}"
    )
    return 0


def _marts(ctx, args) -> int:
    from devstack.spark import rebuild_marts
    from include import pipeline
    from include.spark.jobs import RebuildMartsJob

    job = RebuildMartsJob.parse(
        warehouse=pipeline.s3a(ctx.settings.bucket, pipeline.WAREHOUSE_PREFIX),
        since=args.since or None,
        until=args.until or None,
        marts=args.marts or None,
    )
    code, report = rebuild_marts(ctx, job)
    if code != 0:
        print(report.get("error", report))
        return 1
    if not report["marts"]:
        print("==> no events in that range: no mart changed")
        return 0
    rows = ", ".join(f"{name} {n:,} rows" for name, n in report["marts"].items())
    print(f"==> {report['first']}..{report['last']}: {rows}")
    return 0


def _scaleout(ctx, args) -> int:
    import os

    from devstack.scaleout import KafkaCluster, SparkStandalone, scaleout_ports

    ports = scaleout_ports(os.environ)
    spark = SparkStandalone(ctx, ports, workers=args.workers)
    kafka = KafkaCluster(ctx, ports, brokers=args.brokers)
    if args.action == "up":
        spark.start()
        kafka.start()
        spark.wait_healthy()
        kafka.wait_healthy()
    elif args.action == "down":
        spark.stop()
        kafka.stop()
        return 0
    healthy = True
    for what, health, where in (
        ("spark", spark.health(), f"{spark.master_url} (UI {spark.ui_url})"),
        ("kafka", kafka.health(), f"{kafka.bootstrap} (SASL_SSL {kafka.sasl_bootstrap})"),
    ):
        healthy &= health.ok
        print(f"{what:6} {'ok' if health.ok else 'DOWN':5} {where}: {health.detail}")
    print(
        "use them: AIRFLOW_CONN_SPARK_DEFAULT with host "
        f"{spark.master_url} and as password the cluster's secret (spark.authenticate.secret "
        f"in {spark.auth_file}); kafka_default with bootstrap.servers {kafka.bootstrap}"
    )
    return 0 if healthy else 1


def _print_stream(ctx) -> None:
    """The stream's part of the status (driver, lag, control state, last health verdict)."""
    from devstack.stream_status import stream_status

    print()
    try:
        print("\n".join(stream_status(ctx)))
    except Exception as exc:  # Postgres down or not installed: the services above say why
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        print(f"stream: unavailable ({first[:200]})")


def main(argv: list[str] | None = None) -> int:
    from include.spark.jobs import CompactJob

    p = argparse.ArgumentParser(prog="devstack", description="The local, Docker-free stack.")
    sub = p.add_subparsers(dest="command", required=True)
    inst = sub.add_parser("install", help="fetch and build everything into the cache (idempotent)")
    inst.add_argument(
        "--browser",
        action="store_true",
        help="also a headless Chromium for the dashboard's end-to-end test (`make test`)",
    )
    sub.add_parser("up", help="install, then start every service (idempotent)")
    demo = sub.add_parser("demo", help="run the pipeline once end to end and print a summary")
    demo.add_argument("--events", type=int, default=20_000)
    demo.add_argument("--seed", type=int, default=None)
    rec = sub.add_parser(
        "reconcile", help="account for every produced event (lake, dead letters, missing)"
    )
    rec.add_argument("--since", default=None, help="ISO time (default: 24 hours ago)")
    rec.add_argument("--until", default=None, help="ISO time (default: now)")
    rec.add_argument("--topic", default=None)
    upg = sub.add_parser(
        "upgrade", help="upgrade a first-release stream (four queries) in place (stream stopped)"
    )
    upg.add_argument("--topic", default=None)
    comp = sub.add_parser("compact", help="compact one event day into the Iceberg warehouse")
    comp.add_argument("--day", default=None, help="YYYY-MM-DD (default: yesterday, UTC)")
    comp.add_argument("--target-file-mb", default=None)
    comp.add_argument(
        "--driver-memory",
        default=None,
        type=_memory,
        help=f"the app's heap, e.g. 6g (default: {CompactJob.DRIVER_MEMORY}, as the DAG's param)",
    )
    mrt = sub.add_parser("marts", help="rebuild marts from the Iceberg events table")
    mrt.add_argument("--since", default=None, help="YYYY-MM-DD (default: the table's first day)")
    mrt.add_argument("--until", default=None, help="YYYY-MM-DD (default: the table's last day)")
    mrt.add_argument("--marts", default=None, help="comma-separated names (default: every mart)")
    so = sub.add_parser(
        "scaleout",
        help="a Spark standalone cluster and a 3-broker Kafka next to the stack (docs/deployment.md)",
    )
    so.add_argument("action", choices=("up", "down", "status"))
    so.add_argument("--workers", type=int, default=2)
    so.add_argument("--brokers", type=int, default=3)
    chaos = sub.add_parser(
        "chaos", help="a soak of live traffic and faults through the supervised stream, proven"
    )
    chaos.add_argument("--quick", action="store_true", help="~100k events, 5 faults")
    chaos.add_argument("--seed", type=int, default=None, help="the fault plan's and traffic's")
    sub.add_parser("down", help="stop everything this stack started")
    sub.add_parser("status", help="each service, its ports, pid and health; then the stream")
    sub.add_parser("password", help="print the Airflow admin login")
    sub.add_parser("env", help="print `export` lines for using the Airflow CLI against this stack")
    args = p.parse_args(argv)

    try:
        ctx = stack.context()
        if args.command == "install":
            stack.install_all(ctx)
            if args.browser:
                from devstack.install import install_chromium

                print(f"==> chromium: {install_chromium()}")
            print("==> everything installed")
        elif args.command == "up":
            stack.up(ctx)
        elif args.command == "demo":
            from devstack import demo as demo_mod

            if not stack.is_up(ctx):
                stack.up(ctx)
            return 0 if demo_mod.run(ctx, args.events, args.seed) else 1
        elif args.command == "reconcile":
            return _reconcile(ctx, args)
        elif args.command == "upgrade":
            return _upgrade(ctx, args)
        elif args.command == "compact":
            return _compact(ctx, args)
        elif args.command == "marts":
            return _marts(ctx, args)
        elif args.command == "scaleout":
            return _scaleout(ctx, args)
        elif args.command == "chaos":
            from devstack import chaos as chaos_mod

            if not stack.is_up(ctx):
                stack.up(ctx)
            return chaos_mod.main(ctx, args.quick, args.seed)
        elif args.command == "down":
            stack.down(ctx)
        elif args.command == "status":
            ok = stack.print_status(ctx)
            _print_stream(ctx)
            return 0 if ok else 1
        elif args.command == "password":
            for user, password in ctx.secrets.airflow_passwords().items():
                print(f"{user:<9} ({ROLES[user]:<6}) password: {password}")
        elif args.command == "env":
            keys = [
                k for k in ctx.env if k.startswith(("AIRFLOW", "RTAP_", "JAVA_HOME", "PYSPARK"))
            ]
            keys.append("PATH")
            for k in sorted(keys):
                print(f"export {k}={shlex.quote(ctx.env[k])}")
    except _FRIENDLY as exc:
        print(f"\nerror: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
