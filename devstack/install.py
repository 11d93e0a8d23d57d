"""Fetch and cache what the stack needs besides Python packages, from package registries only.

* Kafka broker jars and Spark connector jars: Maven Central, resolved by Maven from stub POMs
  (``devstack/maven``) into a private local repository under the cache.
* MinIO and Toxiproxy: built from source through the Go module proxy (``go install``).
* PostgreSQL: the distribution's server packages (Debian ``postgresql``) when not present.

Everything lands in the cache directory; a warm run finds it there and does nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pyspark

from devstack.settings import (
    HADOOP_VERSION,
    ICEBERG_VERSION,
    KAFKA_VERSION,
    LOG4J_VERSION,
    MAVEN_REPO,
    MINIO_MODULE,
    MINIO_VERSION,
    POSTGRES_JDBC_VERSION,
    ROOT,
    SPARK_TOKEN_PROVIDER_VERSION,
    SPARK_VERSION,
    TOXIPROXY_MODULE,
    TOXIPROXY_VERSION,
    Settings,
)

MAVEN_DIR = ROOT / "devstack" / "maven"


class InstallError(RuntimeError):
    """A download or build failed. The message names the artifact and the registry."""


def _log(msg: str) -> None:
    print(f"==> {msg}", flush=True)


def _maven_copy(
    settings: Settings, pom: str, props: dict[str, str], out_dir: Path, what: str
) -> None:
    mvn = shutil.which("mvn")
    if not mvn:
        raise InstallError(f"Maven (`mvn`) is required to fetch {what} from Maven Central")
    tmp = Path(tempfile.mkdtemp(prefix="rtap-jars-", dir=out_dir.parent))
    log_file = settings.cache_dir / "logs" / f"maven-{out_dir.parent.name}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    argv = [
        mvn,
        "-B",
        "-q",
        "-s",
        str(MAVEN_DIR / "settings.xml"),
        "-f",
        str(MAVEN_DIR / pom),
        f"-Dmaven.repo.local={settings.maven_local_repo}",
        "dependency:copy-dependencies",
        "-DincludeScope=runtime",
        f"-DoutputDirectory={tmp}",
        *(f"-D{k}={v}" for k, v in props.items()),
    ]
    env = dict(os.environ, RTAP_MAVEN_REPO=os.environ.get("RTAP_MAVEN_REPO", MAVEN_REPO))
    with open(log_file, "w") as log:
        rc = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env).returncode
    if rc != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        failed = _first_error(log_file)
        raise InstallError(
            f"downloading {what} from Maven Central ({env['RTAP_MAVEN_REPO']}) failed: {failed}\n"
            f"  full log: {log_file}"
        )
    if out_dir.exists():
        shutil.rmtree(out_dir)
    tmp.rename(out_dir)


def _first_error(log_file: Path) -> str:
    for line in log_file.read_text(errors="replace").splitlines():
        if "[ERROR]" in line:
            return line.replace("[ERROR]", "").strip()[:400]
    return "see the log"


def install_kafka(settings: Settings) -> Path:
    target = settings.kafka_jars_dir
    if any(target.glob("kafka_2.13-*.jar")):
        return target
    _log(f"fetching Kafka {KAFKA_VERSION} broker jars from Maven Central")
    target.parent.mkdir(parents=True, exist_ok=True)
    _maven_copy(
        settings,
        "kafka-broker.pom.xml",
        {"kafka.version": KAFKA_VERSION, "log4j.version": LOG4J_VERSION},
        target,
        f"org.apache.kafka:kafka_2.13:{KAFKA_VERSION}",
    )
    return target


def _artifact_name(jar: Path) -> str:
    """``hadoop-aws-3.4.2.jar`` -> ``hadoop-aws``."""
    stem = jar.name.removesuffix(".jar")
    parts = stem.split("-")
    while parts and parts[-1][:1].isdigit():
        parts.pop()
    return "-".join(parts)


def install_spark_connectors(settings: Settings) -> Path:
    target = settings.spark_jars_dir
    if any(target.glob("spark-sql-kafka-*.jar")):
        return target
    _log(
        f"fetching Spark {SPARK_VERSION} connector jars (Kafka source, hadoop-aws {HADOOP_VERSION}, "
        f"Iceberg {ICEBERG_VERSION}, Postgres JDBC) from Maven Central"
    )
    target.parent.mkdir(parents=True, exist_ok=True)
    _maven_copy(
        settings,
        "spark-connectors.pom.xml",
        {
            "spark.version": SPARK_VERSION,
            "spark.token.provider.version": SPARK_TOKEN_PROVIDER_VERSION,
            "hadoop.version": HADOOP_VERSION,
            "iceberg.version": ICEBERG_VERSION,
            "postgresql.version": POSTGRES_JDBC_VERSION,
        },
        target,
        "the Spark connector jars",
    )
    # Keep only what pyspark does not already ship: two versions of one library on the
    # classpath (scala-library, hadoop-client-*, slf4j, ...) break at run time.
    shipped = {_artifact_name(j) for j in (Path(pyspark.__file__).parent / "jars").glob("*.jar")}
    for jar in list(target.glob("*.jar")):
        if _artifact_name(jar) in shipped:
            jar.unlink()
    return target


OPERATORS_SOURCE = ROOT / "spark_apps" / "jvm"


def build_operators(settings: Settings) -> Path:
    """Compile the stream's JVM operators (``spark_apps/jvm/build.sh``, against pyspark's own
    jars: no download, ~3 s) when the jar is missing or older than a source file."""
    jar = settings.operators_jar
    sources = [OPERATORS_SOURCE / "build.sh", *OPERATORS_SOURCE.rglob("*.java")]
    if jar.exists() and jar.stat().st_mtime >= max(p.stat().st_mtime for p in sources):
        return jar
    _log("building the stream's JVM operators (spark_apps/jvm)")
    proc = subprocess.run(
        ["bash", str(OPERATORS_SOURCE / "build.sh"), str(jar), sys.executable],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise InstallError(
            f"building spark_apps/jvm failed (a JDK 17 with javac is required): "
            f"{(proc.stderr or proc.stdout).strip()[-800:]}"
        )
    return jar


def _go_install(settings: Settings, module: str, version: str, binary: Path, what: str) -> Path:
    """Build ``module@version`` through the Go module proxy into ``binary``'s directory."""
    if binary.exists():
        return binary
    go = shutil.which("go")
    if not go:
        raise InstallError(
            f"Go is required to build {what} from the Go module proxy; install Go 1.24+ and "
            "run again"
        )
    _log(f"building {what} {version} with `go install` (first time only)")
    binary.parent.mkdir(parents=True, exist_ok=True)
    log_file = settings.cache_dir / "logs" / f"go-install-{binary.parent.name}.log"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, GOBIN=str(binary.parent), GOFLAGS="-buildvcs=false", CGO_ENABLED="0")
    with open(log_file, "w") as log:
        rc = subprocess.run(
            [go, "install", f"{module}@{version}"], stdout=log, stderr=subprocess.STDOUT, env=env
        ).returncode
    if rc != 0 or not binary.exists():
        tail = log_file.read_text(errors="replace").strip().splitlines()[-3:]
        raise InstallError(
            f"building {module}@{version} through the Go module proxy failed: "
            f"{' | '.join(tail)}\n  full log: {log_file}"
        )
    return binary


def install_minio(settings: Settings) -> Path:
    """MinIO ships no binaries any more: built from source (~3-5 min the first time)."""
    return _go_install(settings, MINIO_MODULE, MINIO_VERSION, settings.minio_binary, "MinIO")


def install_toxiproxy(settings: Settings) -> Path:
    """Toxiproxy's server (~1 min the first time): the stream's fault-injectable S3 link."""
    return _go_install(
        settings, TOXIPROXY_MODULE, TOXIPROXY_VERSION, settings.toxiproxy_binary, "Toxiproxy"
    )


def postgres_bindir() -> Path | None:
    """The directory holding ``initdb``/``postgres``/``pg_ctl`` of the newest server found."""
    override = os.environ.get("RTAP_PG_BINDIR")
    if override:
        return Path(override)
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    for bindir in reversed(candidates):
        if (bindir / "postgres").exists() and (bindir / "initdb").exists():
            return bindir
    pg_config = shutil.which("pg_config")
    if pg_config:
        out = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True)
        bindir = Path(out.stdout.strip())
        if (bindir / "postgres").exists() and (bindir / "initdb").exists():
            return bindir
    return None


def install_postgres() -> Path:
    return _system_package(
        postgres_bindir,
        "postgresql",
        "a PostgreSQL server (initdb, postgres) is required",
        "RTAP_PG_BINDIR to its bin directory",
    )


def chromium_binary() -> Path | None:
    """The Chromium the dashboard's end-to-end test drives (``RTAP_CHROMIUM`` overrides)."""
    override = os.environ.get("RTAP_CHROMIUM")
    if override:
        return Path(override) if Path(override).exists() else None
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


def install_chromium() -> Path:
    """Debian's ``chromium`` package: Playwright's own browser builds come from a CDN that is
    not a package registry, and Playwright drives a system Chromium just as well."""
    return _system_package(
        chromium_binary,
        "chromium",
        "a Chromium browser is required for the dashboard's end-to-end test",
        "RTAP_CHROMIUM to its executable",
    )


def _system_package(find, package: str, need: str, override: str) -> Path:
    """What ``find()`` finds; else, as root with apt-get, ``package`` from Debian's packages."""
    found = find()
    if found:
        return found
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise InstallError(
            f"{need} and none was found; install your distribution's package (Debian/Ubuntu: "
            f"`sudo apt-get install {package}`) or set {override}"
        )
    _apt_install(package)
    found = find()
    if not found:
        raise InstallError(f"apt-get installed {package} but {need} and none was found")
    return found


def _apt_install(package: str) -> None:
    _log(f"installing {package} from Debian's packages (apt-get install {package})")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for argv in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", package]):
        proc = subprocess.run(argv, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise InstallError(
                f"`{' '.join(argv)}` failed (Debian package registry): {proc.stderr.strip()[-400:]}"
            )


def install_all(settings: Settings) -> None:
    settings.cache_dir.mkdir(parents=True, exist_ok=True)
    install_postgres()
    install_kafka(settings)
    install_spark_connectors(settings)
    build_operators(settings)
    install_minio(settings)
    install_toxiproxy(settings)


def is_cold(settings: Settings) -> bool:
    return not (
        settings.minio_binary.exists()
        and settings.toxiproxy_binary.exists()
        and any(settings.kafka_jars_dir.glob("kafka_2.13-*.jar"))
        and any(settings.spark_jars_dir.glob("spark-sql-kafka-*.jar"))
    )
