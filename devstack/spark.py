"""Run a Spark app from the command line with the same settings Airflow's operator uses."""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from devstack import environment
from devstack.services import Context
from include.endpoints import S3Endpoint
from include.reports import ReportMissing, read_report
from include.spark.jobs import (
    CompactJob,
    JobSpec,
    LakeReportJob,
    RebuildMartsJob,
    ReconcileJob,
    StreamJob,
    UpgradeJob,
)
from include.spark.submit import (
    BASE_CONF,
    HEAP_EXHAUSTED,
    connector_classpath,
    driver_conf,
    executor_env_file,
    is_local_master,
    master_conf,
    out_of_heap,
)


class SparkAppError(RuntimeError):
    """A Spark app run from the command line failed; the message names its log."""


def submit_env(ctx: Context, job: JobSpec | type[JobSpec] | str) -> dict[str, str]:
    """spark-submit's environment for a job: the S3 user of the job's connection
    (``S3_CONN``; or a connection id for a script that has no spec), as Airflow runs it, so
    the per-service policies hold on this path too; the analytics database's owner."""
    s3 = ctx.s3(job if isinstance(job, str) else job.S3_CONN)
    return {
        **ctx.env,
        **s3.aws_env(),
        "TZ": "UTC",  # Python-side datetimes of collected rows are in UTC, like the session
        **ctx.analytics_db.libpq_env(),
    }


def submit_argv(
    ctx: Context,
    app: JobSpec | str,
    args: Sequence[str] = (),
    properties_file: str = "",
    extra_conf: Mapping[str, str] | None = None,
) -> list[str]:
    """spark-submit's command line for a job (its spec) or another script (a path and its
    arguments); ``properties_file``: from :func:`cluster_properties`; ``extra_conf``: more Spark
    properties (e.g. the benchmark's event log)."""
    if isinstance(app, JobSpec):
        app, args = app.application(), app.to_argv()
    master = ctx.settings.spark_master
    conf = {
        **BASE_CONF,
        **master_conf(master),
        **driver_conf(ctx.env),
        **S3Endpoint(ctx.settings.s3_endpoint).s3a_conf(),  # credentials: submit_env's
        **(extra_conf or {}),
    }
    argv = ["spark-submit", "--master", master]
    jars, class_path = connector_classpath(master, ",".join(environment.spark_jars(ctx.settings)))
    if jars:
        argv += ["--jars", jars]
    if class_path:
        argv += ["--driver-class-path", class_path]
    if properties_file:
        argv += ["--properties-file", properties_file]
    for k, v in conf.items():
        argv += ["--conf", f"{k}={v}"]
    return [*argv, app, *args]


@contextlib.contextmanager
def cluster_properties(ctx: Context, env: dict[str, str], secret: str = "") -> Iterator[str]:
    """On a cluster master (``ctx.settings.spark_master`` not ``local``), the private
    properties file that gives the executors the S3 keys of ``env`` and makes the driver
    authenticate with the cluster's shared ``secret``, as Airflow's operator does
    (include/spark/submit.py); removed after. On a local master: no file (``""``)."""
    if is_local_master(ctx.settings.spark_master):
        yield ""
        return
    with executor_env_file(env, secret) as path:
        yield path


@dataclass(frozen=True)
class Submit:
    """How a run is submitted beyond the stack's defaults: a standalone cluster's shared
    ``secret`` (:func:`cluster_properties`), more Spark properties (``extra_conf``), and what
    a failure names to raise when the driver runs out of heap (``heap_setting``)."""

    secret: str = ""
    extra_conf: Mapping[str, str] = field(default_factory=dict)
    heap_setting: str = "spark.driver.memory"  # named when the driver runs out of heap


def run_app_status(
    ctx: Context, job: JobSpec, log_file: Path, timeout: float = 900, how: Submit = Submit()
) -> tuple[int, str]:
    """Run a Spark app; return its exit code and stdout. ``log_file`` gets spark-submit's
    stderr, then its stdout: Spark hands the Python driver's stderr (its log, a traceback) to
    spark-submit's stdout."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = submit_env(ctx, job)
    with open(log_file, "w") as log, cluster_properties(ctx, env, how.secret) as properties:
        proc = subprocess.run(
            submit_argv(ctx, job, properties_file=properties, extra_conf=how.extra_conf),
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env=env,
            timeout=timeout,
        )
        log.write(proc.stdout)
    return proc.returncode, proc.stdout


def failed(job: JobSpec, code: int, log_file: Path, how: Submit) -> SparkAppError:
    """The error of a run that exited ``code``; it says so when the driver's heap ran out
    (:data:`~include.spark.submit.HEAP_EXHAUSTED` in its log), with the heap it had."""
    why = ""
    with contextlib.suppress(OSError):
        if any(marker in log_file.read_text(errors="replace") for marker in HEAP_EXHAUSTED):
            why = f": {out_of_heap(how.extra_conf.get('spark.driver.memory'), how.heap_setting)}"
    return SparkAppError(f"spark app {job.APP} failed (exit {code}){why}; see {log_file}")


def run_app(
    ctx: Context, job: JobSpec, log_file: Path, timeout: float = 900, how: Submit = Submit()
) -> str:
    """Run a Spark app; return its stdout; raise if it fails."""
    code, out = run_app_status(ctx, job, log_file, timeout, how)
    if code != 0:
        raise failed(job, code, log_file, how)
    return out


def run_reporting_app(
    ctx: Context,
    job: JobSpec,
    log_file: Path,
    results: tuple[int, ...] = (0,),
    how: Submit = Submit(),
) -> tuple[int, dict, str]:
    """Run an app that writes its report (``--report``, ``include/reports.py``); return its
    exit code, its report and its stdout. Exit codes in ``results`` are results (e.g.
    reconcile's 2: something is missing), any other is an error."""
    with tempfile.TemporaryDirectory(prefix="rtap-report-") as tmp:
        path = Path(tmp) / "report.json"
        code, out = run_app_status(ctx, job.replace(report=str(path)), log_file, how=how)
        if code not in results:
            raise failed(job, code, log_file, how)
        try:
            return code, read_report(path), out
        except ReportMissing as exc:
            raise SparkAppError(f"{job.APP} (exit {code}): {exc}; see {log_file}") from None


def reconcile(ctx: Context, job: ReconcileJob) -> tuple[dict, str]:
    """Run the reconciliation; return its report and its printed table. Exit 2 of the app
    (something missing or duplicated) is a result, not an error."""
    log_file = ctx.settings.logs_dir / "reconcile.log"
    _, report, table = run_reporting_app(ctx, job, log_file, results=(0, 2))
    return report, table


def lake_report(ctx: Context, lake_path: str, dead_letter_path: str) -> dict:
    """Totals of the lake and the dead letters, read through the sinks' metadata."""
    job = LakeReportJob(lake_path=lake_path, dead_letter_path=dead_letter_path)
    return run_reporting_app(ctx, job, ctx.settings.logs_dir / "lake_report.log")[1]


def upgrade(ctx: Context, job: UpgradeJob) -> subprocess.CompletedProcess:
    """Upgrade a first-release deployment in place (``spark_apps/upgrade.py``: plain Python,
    with the stream's S3 user and the analytics database, as the stream runs); its output
    captured."""
    python = str(environment.venv_bin() / "python")
    return subprocess.run(
        [python, job.application(), *job.to_argv()],
        env=submit_env(ctx, StreamJob),
        capture_output=True,
        text=True,
        timeout=600,
    )


def compact(
    ctx: Context,
    job: CompactJob,
    log_name: str = "compact_events.log",
    driver_memory: str | None = None,
) -> tuple[int, dict]:
    """Compact one event day (``spark_apps/compact_events.py``) with ``driver_memory`` (by
    default the DAG's default); return its exit code and its report. Exit 1 (an expectation
    or a verification failed) is a result, not an error."""
    log_file = ctx.settings.logs_dir / log_name
    how = Submit(
        extra_conf={"spark.driver.memory": driver_memory or job.DRIVER_MEMORY},
        heap_setting="it (make compact MEMORY=6g, python -m devstack compact --driver-memory)",
    )
    code, report, _ = run_reporting_app(ctx, job, log_file, results=(0, 1), how=how)
    return code, report


def rebuild_marts(ctx: Context, job: RebuildMartsJob) -> tuple[int, dict]:
    """Rebuild marts from the Iceberg events table (``spark_apps/rebuild_marts.py``); return
    its exit code and its report. Exit 1 (no events table yet) is a result, not an error."""
    code, report, _ = run_reporting_app(
        ctx, job, ctx.settings.logs_dir / "rebuild_marts.log", results=(0, 1)
    )
    return code, report
