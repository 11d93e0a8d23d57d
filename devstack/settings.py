"""Settings of the local, Docker-free stack: ports, directories, pinned versions.

Every value can be overridden by an environment variable (``RTAP_*``), so two checkouts can
run side by side (different ports and state directories). A bad value stops with a message
that names the setting; nothing here starts or downloads anything.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from include import pipeline

ROOT = Path(__file__).resolve().parent.parent

# Pinned versions of everything the installer fetches. Python packages are pinned in
# requirements.lock; these are the non-Python parts.
KAFKA_VERSION = "4.3.1"
SPARK_VERSION = "4.1.3"  # must equal pyspark's version in requirements.lock
# Maven Central (as reachable here) lacks spark-token-provider-kafka 4.1.2/4.1.3; the Kafka
# source 4.1.3 runs with the 4.1.1 one (delegation tokens only). See docs/stack.md.
SPARK_TOKEN_PROVIDER_VERSION = "4.1.1"
HADOOP_VERSION = "3.4.2"  # the Hadoop that pyspark 4.1.3 ships; hadoop-aws must match
ICEBERG_VERSION = "1.11.0"
POSTGRES_JDBC_VERSION = "42.7.8"
LOG4J_VERSION = "2.25.2"
# MinIO's community edition is source-only; the Go module proxy serves the final commit of
# the community repository (Feb 2026, after RELEASE.2025-10-15T17-29-55Z). See docs/stack.md.
MINIO_MODULE = "github.com/minio/minio"
MINIO_VERSION = "v0.0.0-20260212201848-7aac2a2c5b7c"
# Toxiproxy (Shopify): the stream's network path to S3 runs through it, so the chaos soak can
# partition the stream from S3 without touching anything else. See docs/stack.md.
TOXIPROXY_MODULE = "github.com/Shopify/toxiproxy/v2/cmd/server"
TOXIPROXY_VERSION = "v2.12.0"
MAVEN_REPO = "https://repo.maven.apache.org/maven2"

MIN_JAVA = 17
MIN_FREE_DISK_GB_COLD = 6.0
MIN_FREE_DISK_GB_WARM = 1.0


class SettingError(ValueError):
    """A setting has a value we cannot use. The message names the setting."""


def _port(env: dict[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SettingError(f"{name}={raw!r} is not a port number (expected 1024-65535)") from None
    if not 1024 <= value <= 65535:
        raise SettingError(f"{name}={value} is out of range (expected 1024-65535)")
    return value


def _path(env: dict[str, str], name: str, default: Path) -> Path:
    raw = env.get(name)
    if not raw:
        return default
    path = Path(raw).expanduser()
    if not path.is_absolute():
        path = (ROOT / path).resolve()
    return path


@dataclass(frozen=True)
class Ports:
    kafka: int = 9092
    kafka_controller: int = 9093
    s3: int = 9000
    s3_console: int = 9001
    postgres: int = 5432
    airflow: int = 8080
    dashboard: int = 8501
    s3_link: int = 9010  # the stream's S3 endpoint: Toxiproxy's listener in front of MinIO
    toxiproxy: int = 8474  # Toxiproxy's API (loopback; the chaos soak's lever)
    # Airflow's own small servers: the scheduler's and the triggerer's task log servers, the
    # scheduler's health check (Airflow's defaults; a second stack moves them too).
    airflow_worker_logs: int = 8793
    airflow_trigger_logs: int = 8794
    airflow_scheduler_health: int = 8974

    def as_dict(self) -> dict[str, int]:
        return {
            "kafka": self.kafka,
            "kafka_controller": self.kafka_controller,
            "s3": self.s3,
            "s3_console": self.s3_console,
            "postgres": self.postgres,
            "airflow": self.airflow,
            "dashboard": self.dashboard,
            "s3_link": self.s3_link,
            "toxiproxy": self.toxiproxy,
            "airflow_worker_logs": self.airflow_worker_logs,
            "airflow_trigger_logs": self.airflow_trigger_logs,
            "airflow_scheduler_health": self.airflow_scheduler_health,
        }


@dataclass(frozen=True)
class Settings:
    """Where things live and which ports they use. Build with :func:`load`."""

    state_dir: Path
    cache_dir: Path
    ports: Ports = field(default_factory=Ports)
    host: str = "127.0.0.1"
    spark_master: str = "local[*]"
    bucket: str = pipeline.BUCKET
    events_topic: str = pipeline.EVENTS_TOPIC
    # `make run` turns the batch DAGs' schedules on (nightly compaction, weekly maintenance,
    # hourly reconcile); RTAP_SCHEDULES=off leaves them paused.
    schedules: bool = True

    # Directories under the state dir (one ignored directory holds all state and logs).
    @property
    def logs_dir(self) -> Path:
        return self.state_dir / "logs"

    @property
    def run_dir(self) -> Path:
        return self.state_dir / "run"

    @property
    def spark_local_dir(self) -> Path:
        """Spark's scratch space (SPARK_LOCAL_DIRS): each app's copy of the connector jars,
        shuffle and state-store files. A driver killed with SIGKILL never removes its copy
        (~750 MB); here ``make stop`` and the tests can (``stack.prune_spark_local``)."""
        return self.state_dir / "spark-local"

    @property
    def scratch_image(self) -> Path:
        """The chaos soak's file system image for ``spark_local_dir`` (devstack/scratchfs.py)."""
        return self.state_dir / "scratch.img"

    @property
    def secrets_file(self) -> Path:
        return self.state_dir / "secrets.env"

    @property
    def airflow_home(self) -> Path:
        return self.state_dir / "airflow"

    @property
    def kafka_dir(self) -> Path:
        return self.state_dir / "kafka"

    @property
    def s3_data_dir(self) -> Path:
        return self.state_dir / "s3"

    @property
    def postgres_dir(self) -> Path:
        return self.state_dir / "postgres"

    # Caches (downloads and builds), shared by checkouts of the same user.
    @property
    def kafka_jars_dir(self) -> Path:
        return self.cache_dir / f"kafka-{KAFKA_VERSION}" / "libs"

    @property
    def spark_jars_dir(self) -> Path:
        return self.cache_dir / f"spark-{SPARK_VERSION}-connectors" / "jars"

    @property
    def operators_jar(self) -> Path:
        """The stream's JVM operators (``spark_apps/jvm``), built from this checkout's sources."""
        return self.state_dir / "jars" / "rtap-operators.jar"

    @property
    def maven_local_repo(self) -> Path:
        return self.cache_dir / "m2"

    @property
    def minio_binary(self) -> Path:
        return self.cache_dir / f"minio-{MINIO_VERSION}" / "minio"

    @property
    def toxiproxy_binary(self) -> Path:
        return self.cache_dir / f"toxiproxy-{TOXIPROXY_VERSION}" / "server"

    @property
    def kafka_bootstrap(self) -> str:
        return f"{self.host}:{self.ports.kafka}"

    @property
    def s3_endpoint(self) -> str:
        return f"http://{self.host}:{self.ports.s3}"

    @property
    def stream_s3_endpoint(self) -> str:
        """The stream's way to S3 (its ``lake_s3`` connection): through the Toxiproxy link,
        the one network path of the stack a fault can cut on its own."""
        return f"http://{self.host}:{self.ports.s3_link}"

    @property
    def toxiproxy_url(self) -> str:
        return f"http://{self.host}:{self.ports.toxiproxy}"

    @property
    def airflow_url(self) -> str:
        return f"http://{self.host}:{self.ports.airflow}"

    @property
    def dashboard_url(self) -> str:
        return f"http://{self.host}:{self.ports.dashboard}"


def port_variable(name: str) -> str:
    """The environment variable that moves the port ``name`` of :class:`Ports`."""
    return f"RTAP_{'PG' if name == 'postgres' else name.upper()}_PORT"


def load(env: dict[str, str] | None = None) -> Settings:
    """Read settings from the environment (``os.environ`` by default)."""
    env = dict(os.environ if env is None else env)
    default_cache = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "rtap"
    ports = Ports(
        **{
            name: _port(env, port_variable(name), default)
            for name, default in Ports().as_dict().items()
        }
    )
    taken: dict[int, str] = {}
    for name, value in ports.as_dict().items():
        if value in taken:
            raise SettingError(
                f"ports for {taken[value]} and {name} are both {value}; "
                f"set {port_variable(name)} to another value"
            )
        taken[value] = name
    master = env.get("RTAP_SPARK_MASTER", "local[*]")
    if not (master.startswith("local") or master.startswith("spark://")):
        raise SettingError(
            f"RTAP_SPARK_MASTER={master!r}: expected local[N], local[*] or spark://host:port"
        )
    schedules = env.get("RTAP_SCHEDULES", "on").strip().lower()
    if schedules not in ("on", "off"):
        raise SettingError(f"RTAP_SCHEDULES={schedules!r}: expected on or off")
    return Settings(
        schedules=schedules == "on",
        state_dir=_path(env, "RTAP_STATE_DIR", ROOT / ".state"),
        cache_dir=_path(env, "RTAP_CACHE_DIR", default_cache),
        ports=ports,
        spark_master=master,
    )
