"""Write an app's report (``include/reports.py``) through Hadoop's file systems: a local path
or ``s3a://`` with the app's own S3 credentials, as its other outputs."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from time import monotonic
from typing import Any

from pyspark.sql import SparkSession

log = logging.getLogger(__name__)


def write_report(spark: SparkSession, uri: str | None, app: str, report: dict[str, Any]) -> None:
    """Log ``report`` and, when ``uri`` is given, write it there as JSON (replacing a previous
    document: a re-run reports again)."""
    text = json.dumps(report, default=str, sort_keys=True)
    log.info("%s report: %s", app, text)
    if not uri:
        return
    if uri.startswith(("/", "file://")):  # the driver's own disk: write it atomically
        local = Path(uri.removeprefix("file://"))
        partial = local.with_name(f".{local.name}.partial")
        partial.write_text(text)
        partial.replace(local)
        return
    jvm = spark._jvm
    path = jvm.org.apache.hadoop.fs.Path(uri)
    fs = path.getFileSystem(spark._jsc.hadoopConfiguration())
    out = fs.create(path, True)
    try:
        out.write(bytearray(text.encode()))
    finally:
        out.close()


def stopwatch(phases: dict[str, float]) -> Callable[[str], None]:
    """``lap(name)``: the seconds since the previous lap (or the stopwatch's start), recorded
    under ``name`` in ``phases``: where an app's or a batch's time goes."""
    last = [monotonic()]

    def lap(name: str) -> None:
        now = monotonic()
        phases[name] = round(now - last[0], 3)
        last[0] = now

    return lap
