"""The Python workers' daemon on a local master (``spark.python.daemon.module``): PySpark's own
``pyspark.daemon``, after one fix to Python 3.10-3.11's import system.

Before every task a PySpark worker calls ``importlib.invalidate_caches()``
(``pyspark.worker_util.setup_spark_files``). On Python 3.10 and 3.11 that makes each
``zipimporter`` on the worker's path read its archive's whole directory again, eagerly, and a
worker's path holds PySpark's ``pyspark.zip``, Py4J's zip and ``spark-core``'s jar (37 MB,
5,359 entries): profiled with py-spy on a live stream (2026-12-07, ``bench/limits.md``) that
was ~40 % of each Python worker's time, ~0.2-0.6 s of every task. Python 3.12 made the
invalidation lazy (CPython gh-103200, found through PySpark); here it is a no-op, which keeps
what the call is for: a path entry added for the task (``--py-files``, ``addPyFile``) has no
importer yet and is read when first used. Only an archive rewritten in place while a worker
lives would be missed, and the archives on this path are Spark's installed files.

Spark starts it as it starts its own: ``python -m spark_apps.python_daemon pyspark.worker``.
"""

from __future__ import annotations

import sys
import zipimport


def lazy_zip_invalidation() -> bool:
    """Make ``zipimporter.invalidate_caches`` a no-op on Python before 3.12; True if it did."""
    if sys.version_info >= (3, 12):
        return False
    zipimport.zipimporter.invalidate_caches = lambda self: None  # type: ignore[method-assign]
    return True


if __name__ == "__main__":
    lazy_zip_invalidation()
    from pyspark.daemon import manager

    manager()
