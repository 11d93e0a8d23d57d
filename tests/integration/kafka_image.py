"""A stand-in for the ``apache/kafka`` image's start script (``/etc/kafka/docker/run``), so
tests/integration/test_compose_kafka.py can run docker/kafka-entrypoint.sh without a Docker
engine, on the stack's own Kafka jars.

What it does is what the image documents and does: every ``KAFKA_*`` variable except the
launcher's own options becomes a ``server.properties`` line (``KAFKA_`` dropped, lower case,
``___`` -> ``-``, ``__`` -> ``_``, ``_`` -> ``.``; the image's kafka-propertiesSpec.json and
its ``ub`` tool), the storage is formatted with ``CLUSTER_ID`` unless it already is, and the
broker starts with ``KAFKA_OPTS`` on its command line (``kafka-server-start.sh``).

Run as ``python kafka_image.py`` with ``KAFKA_HOME`` (a directory with ``libs/``).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

# The image's kafka-propertiesSpec.json "excludes" (its launcher's options, not properties).
EXCLUDED = {
    "KAFKA_VERSION",
    "KAFKA_HEAP_OPT",
    "KAFKA_LOG4J_OPTS",
    "KAFKA_OPTS",
    "KAFKA_JMX_OPTS",
    "KAFKA_JVM_PERFORMANCE_OPTS",
    "KAFKA_GC_LOG_OPTS",
    "KAFKA_LOG4J_ROOT_LOGLEVEL",
    "KAFKA_LOG4J_LOGGERS",
    "KAFKA_TOOLS_LOG4J_LOGLEVEL",
    "KAFKA_HOME",  # the stand-in's own (the image's is fixed, /opt/kafka)
}


def property_name(variable: str) -> str:
    name = variable.removeprefix("KAFKA_").lower()
    return name.replace("___", "-").replace("__", "\0").replace("_", ".").replace("\0", "_")


def server_properties(env: Mapping[str, str]) -> str:
    lines = [
        f"{property_name(k)}={v}"
        for k, v in sorted(env.items())
        if k.startswith("KAFKA_") and k not in EXCLUDED
    ]
    return "\n".join([*lines, ""])


def main() -> None:
    home = Path(os.environ["KAFKA_HOME"])
    props = home / "server.properties"
    props.write_text(server_properties(os.environ))
    java = [
        str(Path(os.environ["JAVA_HOME"]) / "bin" / "java")
        if os.environ.get("JAVA_HOME")
        else "java",
        "-Xmx512m",
        f"-Dlog4j2.configurationFile={home / 'log4j2.properties'}",
        "-cp",
        str(home / "libs" / "*"),
    ]
    cluster = f"--cluster-id={os.environ['CLUSTER_ID']}"
    fmt = subprocess.run(
        [*java, "kafka.tools.StorageTool", "format", cluster, "-c", str(props)],
        capture_output=True,
        text=True,
    )
    if fmt.returncode != 0 and "already formatted" not in (fmt.stdout + fmt.stderr):
        sys.exit(f"kafka_image: format failed: {(fmt.stdout + fmt.stderr)[-800:]}")
    opts = os.environ.get("KAFKA_OPTS", "").split()
    os.execvp(java[0], [*java, *opts, "kafka.Kafka", str(props)])


if __name__ == "__main__":
    main()
