"""Checks of the machine before installing or starting: clear errors, never a stack trace."""

from __future__ import annotations

import re
import shutil
import socket
import subprocess
from pathlib import Path

import psutil

from devstack.settings import MIN_JAVA, Settings


class PreflightError(RuntimeError):
    """The environment cannot run the stack. The message says what to do."""


def parse_java_major(version_output: str) -> int | None:
    """Major version from ``java -version`` output (``"17.0.15"`` -> 17, ``"1.8.0"`` -> 8)."""
    match = re.search(r'version "(\d+)(?:\.(\d+))?', version_output)
    if not match:
        return None
    major = int(match.group(1))
    if major == 1 and match.group(2):
        major = int(match.group(2))
    return major


def check_java(java_home: str | None) -> str:
    """Return the java executable to use, or raise naming what is missing."""
    java = str(Path(java_home) / "bin" / "java") if java_home else shutil.which("java")
    if not java or not Path(java).exists():
        raise PreflightError(
            f"Java {MIN_JAVA}+ is required (Kafka 4 and Spark 4 run on it) and none was found; "
            "install a JDK (e.g. `apt-get install openjdk-17-jdk-headless`) or set JAVA_HOME"
        )
    try:
        out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PreflightError(f"cannot run {java} -version: {exc}") from exc
    major = parse_java_major(out.stderr + out.stdout)
    if major is None or major < MIN_JAVA:
        raise PreflightError(
            f"Java {MIN_JAVA}+ is required, but {java} is version {major or 'unknown'}; "
            "install a newer JDK or point JAVA_HOME at one"
        )
    return java


def port_holder(port: int, host: str = "127.0.0.1") -> str | None:
    """Describe who listens on ``port`` ("pid 123 (postgres)"), or None if it is free."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
            return None
        except OSError:
            pass
    try:
        for conn in psutil.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port:
                if conn.pid:
                    try:
                        return f"pid {conn.pid} ({psutil.Process(conn.pid).name()})"
                    except psutil.Error:
                        return f"pid {conn.pid}"
                return "another process"
    except psutil.Error:
        pass
    return "another process"


def check_ports(wanted: dict[str, int], host: str = "127.0.0.1") -> None:
    """Raise if any port (name -> number) is taken, naming the setting and the holder."""
    problems = []
    for name, port in wanted.items():
        holder = port_holder(port, host)
        if holder:
            problems.append(
                f"port {port} for {name} is in use by {holder}; "
                f"stop it or set RTAP_{name.upper()}_PORT to a free port"
            )
    if problems:
        raise PreflightError("\n".join(problems))


def check_disk(path: Path, min_free_gb: float) -> None:
    path.mkdir(parents=True, exist_ok=True)
    free_gb = shutil.disk_usage(path).free / 1024**3
    if free_gb < min_free_gb:
        raise PreflightError(
            f"only {free_gb:.1f} GB free on the filesystem of {path}; "
            f"at least {min_free_gb:.0f} GB is needed (set RTAP_STATE_DIR / RTAP_CACHE_DIR elsewhere)"
        )


def check_all(settings: Settings, java_home: str | None, *, cold: bool) -> None:
    from devstack.settings import MIN_FREE_DISK_GB_COLD, MIN_FREE_DISK_GB_WARM

    check_java(java_home)
    need = MIN_FREE_DISK_GB_COLD if cold else MIN_FREE_DISK_GB_WARM
    check_disk(settings.cache_dir, need)
    check_disk(settings.state_dir, MIN_FREE_DISK_GB_WARM)
