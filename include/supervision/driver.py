"""Stopping a streaming driver hard (a stalled one cannot stop itself)."""

from __future__ import annotations

import socket

import psutil

SPARK_SUBMIT_CLASS = "org.apache.spark.deploy.SparkSubmit"


class DriverElsewhere(RuntimeError):
    pass


def kill_driver(pid: int, host: str) -> list[int]:
    """SIGKILL the Python driver ``pid`` and its ``spark-submit`` JVM (its parent in client
    mode), so that ``spark-submit`` exits non-zero and Airflow's retry relaunches the app from
    its checkpoints. SIGKILL also ends a stopped (``SIGSTOP``) process. Returns the pids killed.
    """
    if host != socket.gethostname():
        raise DriverElsewhere(
            f"the driver runs on {host}, not on {socket.gethostname()}: ask it to restart "
            "(stream_control) or run the health check where the driver runs"
        )
    try:
        proc = psutil.Process(pid)
    except psutil.NoSuchProcess:
        return []
    victims = [proc]
    try:
        parent = proc.parent()
        if parent is not None and SPARK_SUBMIT_CLASS in " ".join(parent.cmdline()):
            victims.append(parent)
    except psutil.Error:
        pass
    killed = []
    for p in victims:
        try:
            p.kill()
            killed.append(p.pid)
        except psutil.NoSuchProcess:
            continue
    psutil.wait_procs(victims, timeout=30)
    return killed
