"""The real local stack for integration tests: reused if it runs, else started (and stopped
at the end of the run). Every test works in its own topic, S3 prefix and Postgres schema, so
tests never see the demo's data nor each other's, and two workers can share the stack."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from devstack import class_archive, environment, stack
from devstack import settings as devstack_settings
from devstack.services import Context, S3Server
from devstack.settings import Settings
from include import pipeline
from include.analytics import migrations, store
from include.lake.s3 import sandbox_prefix
from include.spark.jobs import StreamJob
from tests.conftest import ROOT, TEST_JAVA_OPTS
from tests.integration.dag_runner import PREFIX as DAG_RUNNER_PREFIX
from tests.integration.phases import timed

# spark-submit's JVM in the tests (tests/conftest.py says why), without a web UI nobody looks at
# (a Spark setting as a system property: SparkConf reads every ``spark.*`` one); the drivers
# `make run` launches keep theirs.
TEST_SPARK_SUBMIT_OPTS = f"{TEST_JAVA_OPTS} -Dspark.ui.enabled=false"


def started_marker(settings: Settings) -> Path:
    """Present while a test run owns the stack it started (removed when it stops it)."""
    return settings.run_dir / "started-by-tests"


@pytest.fixture(scope="session")
def ctx() -> Context:
    """The running stack, or one started for the run, in the tests' sandbox context: their
    Spark runs, ``airflow dags test`` runs and dashboards use the sandbox twins of the S3 users,
    which write only under ``it/*/``; a test about the real users takes
    :func:`production_context`. With several workers (``make test``), the first to take the
    lock starts it; the run's controller stops it at the end (``stop_stack_started_by_tests``,
    from tests/conftest.py)."""
    context = stack.context()
    context.settings.run_dir.mkdir(parents=True, exist_ok=True)
    with open(context.settings.run_dir / "tests.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not stack.is_up(context):
            stack.up(context)
            started_marker(context.settings).write_text(str(os.getpid()))
        else:  # a stack started before the sandbox users existed gets them (idempotent)
            S3Server().bootstrap(context)
    sandboxed = stack.context(context.settings, sandbox=True)
    sandboxed.env["SPARK_SUBMIT_OPTS"] = spark_submit_opts(context.settings)
    return sandboxed


def production_context() -> Context:
    """The stack as its operators and its scheduler use it: the real S3 users (the chaos soak,
    the access tests)."""
    context = stack.context()
    context.env["SPARK_SUBMIT_OPTS"] = spark_submit_opts(context.settings)
    return context


def spark_submit_opts(settings: Settings) -> str:
    """The tests' JVM options, with the stack's class-data archive (devstack/class_archive.py)."""
    return class_archive.with_archive(TEST_SPARK_SUBMIT_OPTS, settings)


def stop_stack_started_by_tests() -> str | None:
    """Stop the stack if this test run started it (unless ``RTAP_KEEP_STACK=1``, or
    ``RTAP_STACK_HANDOFF=1``: a next run takes it over, marker and all); return a problem to
    report, or None."""
    marker = started_marker(devstack_settings.load())
    if not marker.exists():
        return None
    if os.environ.get("RTAP_STACK_HANDOFF") == "1":
        return None  # the next pytest run of `make test` (the chaos soak) uses it, then stops it
    if os.environ.get("RTAP_KEEP_STACK") == "1":
        marker.unlink()  # kept: from now on it is the developer's stack, like one started by hand
        return None
    context = stack.context()
    stack.down(context)
    marker.unlink(missing_ok=True)
    left = stack.leftovers(context)
    return f"processes left after stopping the stack: {[p.pid for p in left]}" if left else None


@pytest.fixture(scope="session", autouse=True)
def _lake_reader(ctx: Context):
    """The in-process lake reader (tests/integration/lake_checks.py) stops before the stack."""
    from tests.integration.lake_checks import stop_reader

    yield
    stop_reader()


@dataclass
class Sandbox:
    """Names one test owns: topic, lake prefixes, Postgres schema."""

    id: str
    topic: str
    prefix: str
    pg_schema: str

    @property
    def lake_prefix(self) -> str:
        return f"{self.prefix}/raw/events"

    @property
    def dead_letter_prefix(self) -> str:
        return f"{self.prefix}/dead_letter/events"

    @property
    def checkpoint_prefix(self) -> str:
        return f"{self.prefix}/_checkpoints"

    def stream_conf(self, bucket: str) -> dict:
        return {
            "mode": "bounded",
            "topic": self.topic,
            "bucket": bucket,
            "lake_prefix": self.lake_prefix,
            "dead_letter_prefix": self.dead_letter_prefix,
            "checkpoint_prefix": self.checkpoint_prefix,
            "pg_schema": self.pg_schema,
        }

    def supervision_conf(self, bucket: str, **extra) -> dict:
        """Params of ``stream_health`` / ``stream_control`` for this sandbox's stream."""
        return {
            "bucket": bucket,
            "checkpoint_prefix": self.checkpoint_prefix,
            "pg_schema": self.pg_schema,
            **extra,
        }

    def launch_supervised(self, ctx: Context, log_name: str) -> subprocess.Popen:
        """The stream as production runs it: `airflow dags test stream_events` in continuous mode
        (2 s trigger, relaunched 5 s after a failure instead of 30), in the background; stop it
        with ``stream_control`` or kill its group."""
        conf = {
            **self.stream_conf(ctx.settings.bucket),
            "mode": "continuous",
            "trigger": "2 seconds",
        }
        airflow = str(environment.venv_bin() / "airflow")
        return spawn(
            ctx,
            [airflow, "dags", "test", "stream_events", "-c", json.dumps(conf)],
            {**ctx.env, "RTAP_STREAM_RETRY_DELAY_S": "5"},
            log_name,
        )

    def stream_job(self, ctx: Context, **options) -> StreamJob:
        """The stream job Airflow launches, on this sandbox, for a direct spark-submit."""
        b = ctx.settings.bucket
        return StreamJob(
            bootstrap_servers=ctx.settings.kafka_bootstrap,
            topic=self.topic,
            lake_path=pipeline.s3a(b, self.lake_prefix),
            dead_letter_path=pipeline.s3a(b, self.dead_letter_prefix),
            checkpoint_root=pipeline.s3a(b, self.checkpoint_prefix),
            pg_schema=self.pg_schema,
            **options,
        )


@pytest.fixture
def sandbox(ctx):
    from confluent_kafka.admin import AdminClient, NewTopic

    sid = uuid.uuid4().hex[:10]
    box = Sandbox(
        id=sid, topic=f"it.events.{sid}", prefix=sandbox_prefix(sid), pg_schema=f"it_{sid}"
    )
    admin = AdminClient({"bootstrap.servers": ctx.settings.kafka_bootstrap})
    admin.create_topics([NewTopic(box.topic, num_partitions=3, replication_factor=1)])[
        box.topic
    ].result(30)
    migrate_schema(ctx, box.pg_schema)
    yield box
    admin.delete_topics([box.topic])[box.topic].result(30)
    drop_sandbox(ctx, box.prefix, box.pg_schema)


def migrate_schema(ctx: Context, pg_schema: str) -> None:
    """A test's own Postgres schema, made by the migrations like the stack's (make up)."""
    conn = store.connect(ctx.analytics_db, schema=pg_schema)
    try:
        migrations.migrate(conn, pg_schema)
    finally:
        conn.close()


def drop_sandbox(ctx: Context, prefix: str, pg_schema: str) -> None:
    """Delete a test's Postgres schema and its S3 prefix."""
    conn = store.connect(ctx.analytics_db)
    with conn.cursor() as cur:
        cur.execute(f'DROP SCHEMA IF EXISTS "{pg_schema}" CASCADE')
    conn.commit()
    conn.close()
    client = s3(ctx)
    for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=ctx.settings.bucket, Prefix=prefix + "/"
    ):
        keys = [{"Key": o["Key"]} for o in page.get("Contents", [])]
        if keys:
            client.delete_objects(Bucket=ctx.settings.bucket, Delete={"Objects": keys})


def s3(ctx: Context):
    """MinIO's root user: the tests' own checks and clean-up (the pipeline runs as its roles)."""
    return ctx.s3_root.client()


def dags_test_log(ctx: Context, dag_id: str) -> Path:
    """Where the output of the last ``airflow dags test <dag_id>`` of this worker is kept."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    return ctx.settings.logs_dir / f"dags-test-{dag_id}{'-' + worker if worker else ''}.log"


class DagRunner:
    """This worker's `airflow dags test` process (tests/integration/dag_runner.py), started on
    first use and reused by every run; restarted if it dies or a run outlives its timeout."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.proc: subprocess.Popen | None = None

    def _start(self) -> subprocess.Popen:
        worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
        env = {
            **self.ctx.env,
            "RTAP_DAG_RUNNER_LOG": str(self.ctx.log_file(f"dag-runner-{worker}")),
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.dag_runner"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            cwd=ROOT,
            text=True,
            start_new_session=True,
        )
        self.proc = proc
        self._answer(300, "start")
        return proc

    def _answer(self, timeout: float, what: str) -> dict:
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(left, 0))
            if not ready:
                self.close()
                raise AssertionError(f"`airflow dags test` ({what}) did not end in {timeout:.0f}s")
            line = self.proc.stdout.readline()
            if not line:
                self.close()
                raise AssertionError(f"the `airflow dags test` process died ({what})")
            if line.startswith(DAG_RUNNER_PREFIX):
                return json.loads(line[len(DAG_RUNNER_PREFIX) :])

    def run(
        self, dag_id: str, conf: dict | None, env: dict[str, str], log: Path, timeout: float
    ) -> int:
        if self.proc is None or self.proc.poll() is not None:
            self._start()
        assert self.proc is not None and self.proc.stdin is not None
        request = {"dag_id": dag_id, "conf": conf, "env": env, "log": str(log)}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        return int(self._answer(timeout, dag_id)["exit"])

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(30)
        self.proc = None


_DAG_RUNNER: DagRunner | None = None


@pytest.fixture(scope="session", autouse=True)
def _dag_runner():
    """Stops this worker's `airflow dags test` process at the end of its session."""
    yield
    if _DAG_RUNNER is not None:
        _DAG_RUNNER.close()


@timed
def airflow_dags_run(
    ctx: Context,
    dag_id: str,
    conf: dict | None = None,
    timeout: float = 900,
    env: dict[str, str] | None = None,
) -> tuple[str, str]:
    """Run Airflow's ``dags test`` command (in-process executor, the same code as the CLI, in
    this worker's long-lived Airflow process); return the final state of the run and the output
    (also saved under the stack's logs). ``env`` overrides variables of the stack's environment
    for this run (e.g. an ``AIRFLOW_CONN_*``)."""
    global _DAG_RUNNER
    if _DAG_RUNNER is None:
        _DAG_RUNNER = DagRunner(ctx)
    log = dags_test_log(ctx, dag_id)
    _DAG_RUNNER.run(dag_id, conf, env or {}, log, timeout)
    output = log.read_text()
    match = re.findall(r"DagRun Finished: dag_id=" + re.escape(dag_id) + r".*?state=(\w+)", output)
    assert match, f"`airflow dags test {dag_id}` did not finish a run; output in {log}"
    return match[-1], output


def run_id_of(output: str, dag_id: str) -> str:
    """The run id of the last ``airflow dags test <dag_id>`` run in its output."""
    found = re.findall(
        r"DagRun Finished: dag_id=" + re.escape(dag_id) + r",.*?run_id=([^,\s]+)", output
    )
    assert found, f"no finished run of {dag_id} in the output"
    return found[-1]


def airflow_dags_test(
    ctx: Context,
    dag_id: str,
    conf: dict | None = None,
    timeout: float = 900,
    env: dict[str, str] | None = None,
) -> str:
    """``airflow dags test`` that must exit cleanly; returns the final state."""
    state, _ = airflow_dags_run(ctx, dag_id, conf, timeout, env)
    log = dags_test_log(ctx, dag_id)
    assert state == "success", f"`airflow dags test {dag_id}` ended {state}; output in {log}"
    return state


def spawn(ctx: Context, argv: list[str], env: dict, log_name: str) -> subprocess.Popen:
    """Start a long-running process in its own session (so the test can kill its whole group),
    its output in ``<logs>/<log_name>``."""
    with open(ctx.settings.logs_dir / log_name, "w") as log:
        return subprocess.Popen(
            argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )


def run_submit(ctx: Context, job, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run a Spark app's job to its end with spark-submit (the arguments and environment
    Airflow's operator gives it); its output captured."""
    from devstack.spark import submit_argv, submit_env

    return subprocess.run(
        submit_argv(ctx, job),
        env=submit_env(ctx, job),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def stop_group(proc: subprocess.Popen, grace: float = 60) -> None:
    """Stop a process started by :func:`spawn` and its children: SIGTERM, then SIGKILL."""
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(30)
