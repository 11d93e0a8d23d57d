"""Shared fixtures. Tests come in three layers:

* ``tests/dags``        DAG policy and a graph snapshot (no services; fake connections);
* ``tests/unit``        pure code, a local SparkSession for transforms, moto for our boto3 code;
* ``tests/integration`` the real local stack (Kafka, MinIO, Postgres, Spark, Airflow), started
                        by the session fixture if it is not running, stopped again afterwards.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# The JVM of every Spark driver the tests start (spark-submit's and the in-process sessions'):
# they live for seconds to minutes on two shared cores, so C1 alone compiles (one compiler
# thread), and the serial collector runs no concurrent GC threads. Measured on a bounded stream
# run of 2,000 events: ~33 s of CPU against ~46 s with the JVM's defaults. The stack's own
# services, and the drivers `make run` launches, keep the defaults. Every driver, the tests' as
# the stack's, also maps the stack's class-data archive (devstack/class_archive.py).
TEST_JAVA_OPTS = "-XX:TieredStopAtLevel=1 -XX:CICompilerCount=1 -XX:+UseSerialGC"
STATE_STORE = "spark.sql.streaming.stateStore.providerClass"
CODEGEN_CACHE = "spark.sql.codegen.cache.maxEntries"


# Integration modules, slowest first: ``make test`` spreads the modules over two workers
# (pytest-xdist, --dist loadfile: a module's tests stay on one worker, in order, sharing its
# module fixtures), which take them in this order, so the long ones start early and the short
# ones (unit tests last) fill in at the end. Modules not listed follow.
SLOWEST_FIRST = (
    "test_compaction",
    "test_supervision",
    "test_scaleout",
    "test_replay",
    "test_reconcile",
    "test_contract_corpus",
    "test_pipeline",
    "test_dashboard",
    "test_crash_recovery",
    "test_dags_test",
    "test_services",
)


def _rank(item: pytest.Item) -> tuple[int, int]:
    path = str(item.fspath).replace(os.sep, "/")
    if "tests/integration/" not in path:
        return (2, 0)
    name = Path(path).stem
    return (0, SLOWEST_FIRST.index(name)) if name in SLOWEST_FIRST else (1, 0)


def pytest_collection_modifyitems(config, items):
    for item in items:
        if "tests/integration/" in str(item.fspath).replace(os.sep, "/"):
            item.add_marker(pytest.mark.integration)
    items.sort(key=_rank)  # stable: the order within a module stays


def pytest_sessionfinish(session, exitstatus):
    """The run's controller (or the only process) stops the stack the tests started."""
    if hasattr(session.config, "workerinput"):
        return  # a pytest-xdist worker: others may still use the stack
    from tests.integration.conftest import stop_stack_started_by_tests

    problem = stop_stack_started_by_tests()
    if problem:
        print(f"\n{problem}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture(scope="session")
def spark():
    """One local SparkSession for the unit tests of transforms (no connectors, no S3; the
    stream's own JVM operators, built from this checkout in ~3 s when they changed)."""
    from pyspark.sql import SparkSession

    from devstack import install, settings
    from include.spark.submit import BASE_CONF

    operators = install.build_operators(settings.load())

    os.environ.setdefault("PYARROW_IGNORE_TIMEZONE", "1")
    # Spark's Python workers (reconcile's digests) import our packages.
    paths = [str(ROOT), *filter(None, os.environ.get("PYTHONPATH", "").split(os.pathsep))]
    os.environ["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (
        SparkSession.builder.master("local[2]")
        .appName("unit-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        # The stream's state store: its deduplication (transformWithState) needs RocksDB.
        .config(STATE_STORE, BASE_CONF[STATE_STORE])
        # The platform's bound on Spark's code cache: the suite's plans fit, compiled once.
        .config(CODEGEN_CACHE, BASE_CONF[CODEGEN_CACHE])
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.extraClassPath", str(operators))
        .config("spark.driver.extraJavaOptions", TEST_JAVA_OPTS)
        .config("spark.driver.bindAddress", "127.0.0.1")
        .config("spark.driver.host", "127.0.0.1")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
