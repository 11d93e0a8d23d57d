"""SparkSubmitOperator wired to the lake: S3 and Postgres settings from Airflow connections.

:class:`LakeSparkSubmitOperator` resolves, at execute time (never at DAG parse time):

* the S3 connection -> ``spark.hadoop.fs.s3a.*`` settings (endpoint, path style, region) and
  the credentials as ``AWS_*`` environment variables of spark-submit (not on its command line,
  which Airflow logs);
* the Postgres connection -> libpq's ``PG*`` environment variables for the driver;
* with ``kafka_conn_id``, the Kafka connection's TLS / SASL settings -> ``RTAP_KAFKA_*``
  environment variables of the driver (``include/kafka/security.py``);
* spark-submit's environment: only what Spark and Python need from the task's (``INHERITED``),
  plus the role's own credentials above. Airflow's configuration (its database DSN, Fernet
  key, JWT secret) and every other connection (``AIRFLOW_CONN_*``) stay out: the stream's
  driver does not hold the warehouse writer's keys, compaction does not hold the stream's;
* the connector jars from ``RTAP_SPARK_JARS`` (set by the local stack) or the jars in
  ``RTAP_SPARK_JARS_DIR`` (the compose image), so no job downloads anything at run time: on a
  ``local`` master on the driver's class path (:func:`connector_classpath`), elsewhere
  ``--jars``.

On a cluster (a ``spark://``, ``k8s://`` or ``yarn`` master) executors run elsewhere and do not
inherit spark-submit's environment: the S3 credentials also go to the executors as
``spark.executorEnv.AWS_*``, written to a private properties file for the run (mode 0600,
removed afterwards) rather than on the command line. Spark redacts them in its UI
(``spark.redaction.regex``). The Spark connection's password, when set, is the cluster's
shared secret: the same file turns on ``spark.authenticate`` with it (the master, the workers
and every driver must hold the same one; a standalone cluster takes it from configuration
only, see :func:`auth_properties`).
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook
from airflow.providers.apache.spark.operators.spark_submit import SparkSubmitOperator

from include import connections
from include.endpoints import S3Endpoint
from include.reports import REPORT_URI_TEMPLATE, read_report
from include.spark.jobs import JOBS, SPARK_DEFAULT_HEAP

# Settings every job of the platform runs with (sized for one machine; see docs/footprint.md).
# The drivers' JVM logging: warnings and errors only (Spark's INFO would flood the task logs).
LOG4J2_FILE = Path(__file__).resolve().parents[2] / "spark_apps" / "log4j2.properties"

BASE_CONF: dict[str, str] = {
    "spark.driver.extraJavaOptions": f"-Dlog4j2.configurationFile={LOG4J2_FILE}",
    "spark.sql.session.timeZone": "UTC",
    # About the executors' cores (docs/deployment.md): a local master's are this machine's.
    # Each shuffle partition of the stream is a task and a state store commit per batch
    # whatever the batch's size; 4 on 2 cores made the p99 latency 6.9 s instead of 4.0 s
    # (bench/limits.md). A stateful query keeps the value its checkpoint recorded.
    "spark.sql.shuffle.partitions": str(os.cpu_count() or 2),
    # Spark's cache of compiled generated classes (static: set at launch). Its default, 100
    # entries, is a Guava cache of 4 segments that evicts within a segment of ~25: the stream's
    # ~80 classes (the read, the checks, the lake's write, the dead letters, the aggregates)
    # did not fit, so every micro-batch generated and compiled ~20-40 of them again and the JIT
    # compiled them again after that. 1,000,000-event drains, alternated: 21,402-22,998
    # events/s against 19,276-20,613 (bench/limits.md). The stream logs what each batch
    # compiled (spark_apps/stream_events.py) and a test holds it at nothing once warm.
    "spark.sql.codegen.cache.maxEntries": "1000",
    "spark.hadoop.fs.s3a.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
    "spark.hadoop.fs.s3a.path.style.access": "true",
    "spark.hadoop.fs.s3a.aws.credentials.provider": "software.amazon.awssdk.auth.credentials.EnvironmentVariableCredentialsProvider",
    "spark.sql.streaming.stateStore.providerClass": "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
    # Keep credentials of data source options (JDBC URLs, Kafka's JAAS line) out of plans/UI.
    "spark.sql.redaction.options.regex": "(?i)url|jaas|password|certificates",
}


def driver_conf(env: dict[str, str] | os._Environ) -> dict[str, str]:
    """Where the driver listens and what executors call it: loopback unless the deployment
    says otherwise (compose's cluster profile: the Airflow container's name, bound to all
    interfaces of the container)."""
    return {
        "spark.driver.host": env.get("RTAP_SPARK_DRIVER_HOST") or "127.0.0.1",
        "spark.driver.bindAddress": env.get("RTAP_SPARK_DRIVER_BIND_ADDRESS") or "127.0.0.1",
    }


def driver_env(env: dict[str, str] | os._Environ) -> dict[str, str]:
    """The driver's web UI binds to ``SPARK_LOCAL_IP`` (there is no spark.ui.host): the
    driver's bind address, so on loopback by default."""
    return {"SPARK_LOCAL_IP": driver_conf(env)["spark.driver.bindAddress"]}


EXECUTOR_ENV = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_REGION")


# What spark-submit and the apps take from the environment they are started from.
INHERITED = frozenset(
    {
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "TZ",
        "TMPDIR",
        "JAVA_HOME",
        "HADOOP_CONF_DIR",
        "PYTHONPATH",
        "PYTHONUNBUFFERED",
        "PYTHONDONTWRITEBYTECODE",
    }
)
INHERITED_PREFIXES = ("LC_", "SPARK_", "PYSPARK_", "RTAP_")
_SECRET_NAME = re.compile(r"PASSWORD|SECRET|ACCESS_KEY|TOKEN|CREDENTIAL", re.IGNORECASE)


def submit_environment(inherited: Mapping[str, str], role: Mapping[str, str]) -> dict[str, str]:
    """spark-submit's whole environment: from ``inherited`` only what Spark and Python need
    (never a variable named like a credential), then ``role``: the job's own credentials."""
    base = {
        k: v
        for k, v in inherited.items()
        if (k in INHERITED or k.startswith(INHERITED_PREFIXES)) and not _SECRET_NAME.search(k)
    }
    return {**base, **role}


# What a driver JVM prints when its heap ran out (Spark's uncaught-exception handler, before
# it exits with 52): the same input needs as much heap again, so a retry at the same size fails
# the same way. Other OutOfMemoryErrors (no native thread left, direct buffers) come from the
# machine's state at the time and keep the task's retries.
HEAP_EXHAUSTED = (
    "java.lang.OutOfMemoryError: Java heap space",
    "java.lang.OutOfMemoryError: GC overhead limit exceeded",
)


def out_of_heap(heap: str | None, setting: str = "spark.driver.memory") -> str:
    """What to tell whoever ran an app whose driver ran out of ``heap``: which ``setting``
    gives it more."""
    return (
        f"the Spark driver ran out of heap (spark.driver.memory={heap or SPARK_DEFAULT_HEAP}), "
        f"and would again at that size: raise {setting} and run it again"
    )


class ScopedSparkSubmitHook(SparkSubmitHook):
    """The provider's hook starts spark-submit with a copy of the task's whole environment plus
    ``env_vars``; this one with :func:`submit_environment` instead. It also notes whether the
    driver's output said its heap ran out (:data:`HEAP_EXHAUSTED`)."""

    heap_exhausted = False

    def submit(self, application: str = "", **kwargs: Any) -> str | None:
        # Filled by _build_spark_submit_command, which the provider's submit calls before Popen.
        self._scoped_env: dict[str, str] = {}
        self.heap_exhausted = False
        return super().submit(application, env=self._scoped_env, **kwargs)

    def _process_spark_submit_log(self, itr: Iterator[Any]) -> None:
        def watched() -> Iterator[Any]:
            for line in itr:
                if not self.heap_exhausted and any(m in str(line) for m in HEAP_EXHAUSTED):
                    self.heap_exhausted = True
                yield line

        super()._process_spark_submit_log(watched())

    def _build_spark_submit_command(self, application: str) -> list[str]:
        command = super()._build_spark_submit_command(application)
        env = getattr(self, "_scoped_env", None)
        if env is not None:
            env.update(submit_environment(os.environ, self._env or {}))
            self._env = None  # so that the provider passes ours, not os.environ + env_vars
        return command


class LakeSparkSubmitOperator(SparkSubmitOperator):
    """A SparkSubmitOperator that knows where the lake and the analytics database are."""

    template_fields = (*SparkSubmitOperator.template_fields, "report_uri")

    def __init__(
        self,
        *,
        s3_conn_id: str | None = None,
        postgres_conn_id: str | None = connections.POSTGRES,
        kafka_conn_id: str | None = None,
        report: bool = False,
        before_submit: str | None = None,
        memory_param: str | None = None,
        **kwargs: Any,
    ) -> None:
        """``s3_conn_id``: by default the one the app's job spec names (``S3_CONN``,
        ``include/spark/jobs.py``). ``report``: the app writes its result (``--report``,
        ``include/reports.py``) under the bucket's ``_reports/`` and the task returns it (its
        XCom ``return_value``). ``before_submit``: ``"module:function"`` called with the task's
        params before each try submits (resolved when the task runs: DAG files stay light).
        ``memory_param``: the DAG param that sets the driver's heap, named when a reporting
        app's driver ran out of heap (:meth:`heap_exhausted`)."""
        kwargs.setdefault("conn_id", connections.SPARK)
        super().__init__(**kwargs)
        job = JOBS.get(Path(str(kwargs.get("application", ""))).name)
        self.s3_conn_id = s3_conn_id or (job.S3_CONN if job else connections.S3)
        self.postgres_conn_id = postgres_conn_id
        self.kafka_conn_id = kafka_conn_id
        self.report_uri = REPORT_URI_TEMPLATE if report else ""
        self.before_submit = before_submit
        self.memory_param = memory_param

    def _get_hook(self) -> SparkSubmitHook:
        hook = super()._get_hook()
        # The provider builds its hook from ~30 operator attributes that change between
        # versions; the subclass adds no state, only how spark-submit's environment is made.
        hook.__class__ = ScopedSparkSubmitHook
        return hook

    def execute(self, context: Any) -> dict[str, Any] | None:
        if self.before_submit:
            import importlib

            module, _, function = self.before_submit.partition(":")
            getattr(importlib.import_module(module), function)(dict(context["params"]))
        s3 = connections.s3(self.s3_conn_id)
        if not self.report_uri:
            self._submit(context, s3)
            return None
        args = list(self.application_args or [])
        if "--report" not in args:  # not twice when the same operator object runs again
            self.application_args = [*args, "--report", self.report_uri]
        try:
            self._submit(context, s3)
        except Exception:
            reported = self._reported_error(s3) or self.heap_exhausted()
            if reported:
                from airflow.sdk.exceptions import AirflowFailException

                # The app ended on a condition it diagnosed (a check failed, a table is
                # missing), or its heap ran out: the same input gives the same verdict, so
                # retries would only repeat it. Any other crash keeps the task's retries.
                raise AirflowFailException(f"{self.task_id}: {reported}") from None
            raise
        return read_report(self.report_uri, s3.client())

    def heap_exhausted(self) -> str:
        """Why the try failed when its driver ran out of heap before it could report (the
        setting to raise, and its value), else ''."""
        if not getattr(self._hook, "heap_exhausted", False):
            return ""
        heap = (self.conf or {}).get("spark.driver.memory") or self._driver_memory
        where = f"the {self.memory_param} param" if self.memory_param else "spark.driver.memory"
        return f"{out_of_heap(heap, where)} (not retried)"

    def _reported_error(self, s3: S3Endpoint) -> str:
        """The ``error`` of the report this try's app wrote before exiting non-zero ('' when
        it wrote none: it crashed or was killed). The report's URI holds the try's id."""
        try:
            return str(read_report(self.report_uri, s3.client()).get("error") or "")
        except Exception as exc:  # no readable report: the failure stands as it is
            self.log.info("no report of the failed try (%s)", exc)
            return ""

    def _submit(self, context: Any, s3: S3Endpoint) -> None:
        from airflow.sdk import BaseHook

        env = s3.aws_env()
        if self.postgres_conn_id:
            env.update(connections.postgres_endpoint(self.postgres_conn_id).libpq_env())
        if self.kafka_conn_id:
            from include.kafka.security import env_from_client_config

            env.update(
                env_from_client_config(BaseHook.get_connection(self.kafka_conn_id).extra_dejson)
            )
        self.env_vars = {**env, **driver_env(os.environ), **(self.env_vars or {})}
        spark = BaseHook.get_connection(self._conn_id)
        master = spark.host or ""
        self.conf = {
            **BASE_CONF,
            **master_conf(master),
            **driver_conf(os.environ),
            **s3.s3a_conf(),
            **(self.conf or {}),
        }
        if not self.jars and not self.driver_class_path:
            self.jars, self.driver_class_path = connector_classpath(
                master, connector_jars(os.environ)
            )
        if is_local_master(master) or self.properties_file:
            super().execute(context)
            return
        if not spark.password:
            self.log.warning(
                "connection %s: no password, so the driver and the cluster %s do not "
                "authenticate each other (set the cluster's spark.authenticate.secret as the "
                "connection's password)",
                self._conn_id,
                master,
            )
        with executor_env_file(self.env_vars, spark.password or "") as path:
            self.properties_file = path
            try:
                super().execute(context)
            finally:
                self.properties_file = None


def is_local_master(master: str) -> bool:
    """True for ``local``/``local[N]`` masters (executors live in the driver's JVM)."""
    return master.strip().startswith("local")


# The Python workers' daemon that spares each task a re-read of every zip on the workers' path
# (``spark_apps/python_daemon.py`` says why). A local master's workers run with the driver's
# ``PYTHONPATH``, which holds the project; a cluster's may not, so they keep PySpark's own.
PYTHON_DAEMON_CONF = {"spark.python.daemon.module": "spark_apps.python_daemon"}


def master_conf(master: str) -> dict[str, str]:
    """The Spark properties that depend on the master: :data:`PYTHON_DAEMON_CONF` on a local
    one."""
    return dict(PYTHON_DAEMON_CONF) if is_local_master(master) else {}


def executor_env_properties(env: dict[str, str]) -> str:
    """Spark properties giving executors the S3 credentials of ``env``."""
    lines = [f"spark.executorEnv.{k}={env[k]}" for k in EXECUTOR_ENV if env.get(k)]
    return "\n".join(lines) + "\n"


def auth_properties(secret: str) -> str:
    """Spark properties that make a process authenticate its RPC peers with ``secret`` (the
    cluster's shared secret): for the drivers (:class:`LakeSparkSubmitOperator`) and the
    standalone master and workers (``--properties-file``, devstack/scaleout.py and compose's
    docker/spark-daemon.sh). A standalone cluster reads the secret from configuration only
    (``spark.authenticate.secret``; the ``.file`` variants are for Kubernetes): a private file,
    never a ``-D`` option on a command line."""
    if not secret:
        return ""
    if "\n" in secret or "\r" in secret:
        raise ValueError("the Spark authentication secret has a line break")
    escaped = secret.replace("\\", "\\\\")  # java.util.Properties reads \\ as one backslash
    return f"spark.authenticate=true\nspark.authenticate.secret={escaped}\n"


@contextlib.contextmanager
def executor_env_file(env: dict[str, str], auth_secret: str = ""):
    """A private (0600) properties file with :func:`executor_env_properties` (and, with a
    secret, :func:`auth_properties`), removed after."""
    fd, path = tempfile.mkstemp(prefix="rtap-spark-", suffix=".properties")
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(executor_env_properties(env) + auth_properties(auth_secret))
        yield path
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def connector_classpath(master: str, jars: str) -> tuple[str | None, str | None]:
    """``(jars, driver_class_path)`` for spark-submit. On a ``local`` master the executors live
    in the driver's JVM: the jars go on its class path where they are, instead of ``--jars``,
    which copies all of them (~750 MB, the AWS SDK bundle most of it) into each app's scratch
    directory before its first task (~4 s per app on the 2-core machine). Elsewhere ``--jars``
    ships them to the executors."""
    if not jars:
        return None, None
    if is_local_master(master):
        return None, jars.replace(",", os.pathsep)
    return jars, None


def connector_jars(env: dict[str, str] | os._Environ) -> str:
    """Comma-separated connector jars: ``RTAP_SPARK_JARS`` (a list) or ``RTAP_SPARK_JARS_DIR``."""
    if env.get("RTAP_SPARK_JARS"):
        return env["RTAP_SPARK_JARS"]
    jar_dir = env.get("RTAP_SPARK_JARS_DIR")
    if jar_dir:
        return ",".join(sorted(str(p) for p in Path(jar_dir).glob("*.jar")))
    return ""
