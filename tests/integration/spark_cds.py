"""A class-data-sharing archive for the tests' Spark drivers (JDK 17 AppCDS, dynamic archive).

Each driver JVM of the suite spends seconds loading and verifying the same ~30,000 classes
(Spark, Hadoop's S3A, the AWS SDK, Kafka's client). With an archive of them, a bounded stream
run took ~25 s instead of ~34 s on the 2-core machine (three runs each, alternating), and the
crash-recovery test 112 s instead of 186 s. The archive is made
once per state directory by a training run (the stream app, bounded, on a small sandbox
topic) and keyed by everything that must match when it is used: the JDK, Spark's version and
the connector jars. A JVM that finds it does not match runs without it (``-Xshare:auto``, the
default), so this can make the suite faster and never change what it proves.
``RTAP_TEST_SPARK_CDS=0`` runs without it.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

from devstack.services import Context
from devstack.settings import SPARK_VERSION

QUIET = "-Xlog:cds*=off"  # nothing on the drivers' stdout, which the tests read


def archive_path(ctx: Context, jvm_opts: str) -> Path:
    key = "\n".join(
        [
            ctx.env.get("JAVA_HOME", ""),
            SPARK_VERSION,
            ctx.env.get("RTAP_SPARK_JARS", ""),
            jvm_opts,
        ]
    )
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    return ctx.settings.state_dir / "spark-cds" / f"{digest}.jsa"


def options(ctx: Context, jvm_opts: str) -> str:
    """``jvm_opts`` plus the archive's options, training it first if it does not exist yet
    (call under the tests' stack lock). Without an archive (training failed), ``jvm_opts``."""
    if os.environ.get("RTAP_TEST_SPARK_CDS") == "0":  # to compare, or to rule it out
        return jvm_opts
    path = archive_path(ctx, jvm_opts)
    if not path.exists() and not _train(ctx, jvm_opts, path):
        return jvm_opts
    return f"{jvm_opts} -XX:SharedArchiveFile={path} {QUIET}"


def _train(ctx: Context, jvm_opts: str, path: Path) -> bool:
    from confluent_kafka.admin import AdminClient, NewTopic

    from devstack.spark import submit_argv, submit_env
    from include.events.generator import generate
    from include.events.producer import produce
    from tests.integration.conftest import Sandbox, drop_sandbox

    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".partial")
    partial.unlink(missing_ok=True)
    sid = uuid.uuid4().hex[:10]
    box = Sandbox(id=sid, topic=f"it.cds.{sid}", prefix=f"it/{sid}", pg_schema=f"it_{sid}")
    admin = AdminClient({"bootstrap.servers": ctx.settings.kafka_bootstrap})
    admin.create_topics([NewTopic(box.topic, num_partitions=3, replication_factor=1)])[
        box.topic
    ].result(30)
    try:
        start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
        events = generate(300, seed=7, start=start, bad_share=0.05)
        produce(events, topic=box.topic, bootstrap_servers=ctx.settings.kafka_bootstrap)
        env = submit_env(ctx)
        env["SPARK_SUBMIT_OPTS"] = f"{jvm_opts} -XX:ArchiveClassesAtExit={partial} {QUIET}"
        argv = submit_argv(ctx, "stream_events.py", box.stream_args(ctx, "--mode", "bounded"))
        log = ctx.settings.logs_dir / "spark-cds-training.log"
        with open(log, "w") as out:
            done = subprocess.run(argv, env=env, stdout=out, stderr=subprocess.STDOUT, timeout=600)
        if done.returncode != 0 or not partial.exists():
            print(f"\nno Spark class-data archive (training failed, see {log})", file=sys.stderr)
            return False
        os.replace(partial, path)
        return True
    finally:
        admin.delete_topics([box.topic])[box.topic].result(30)
        drop_sandbox(ctx, box.prefix, box.pg_schema)
