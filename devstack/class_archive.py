"""A class-data archive (JDK AppCDS) for the Spark drivers of this stack.

A Spark driver spends most of its first ~20 s of CPU loading, parsing and verifying ~25,000
classes from the same jars every time. The JDK can dump those classes once, parsed and
verified, into an archive that every later JVM maps read-only (``-XX:SharedArchiveFile``; a
dynamic archive, ``-XX:ArchiveClassesAtExit``, JDK 13+). Measured on the 2-core machine (a
local Spark app with the stack's class path: parquet write, read, aggregate): ~22 s of CPU
without, 8.5 s with. The drivers the tests start, the ones Airflow launches and the
devstack's own apps all use it: the stream's restart after a fault is that much shorter.

The archive is built by ``devstack install`` (:func:`ensure`, ~1 minute, once per set of jars)
from a training app (``devstack/class_archive_app.py``: local work only, no service) run with
the stack's exact class path. Nothing depends on it: the JVM checks the class path and every
jar's size and time against the archive and, on any difference, ignores it silently and loads
classes as usual; :func:`java_opts` names it only when it exists for the current jars.
Why not the JDK's ``-XX:+AutoCreateSharedArchive``: it needs JDK 19; the stack runs on 17.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from devstack import environment
from devstack.services import Context
from devstack.settings import Settings

APP = Path(__file__).resolve().parent / "class_archive_app.py"


def _class_path_key(settings: Settings) -> str:
    """What the archive is valid for: the JDK, Spark's own jars and the connectors' (each
    path, size and time: a rebuilt operators' jar makes a new archive)."""
    import pyspark

    spark_jars = sorted((Path(pyspark.__file__).parent / "jars").glob("*.jar"))
    parts = [environment.java_home() or "", pyspark.__version__]
    for jar in [*spark_jars, *map(Path, environment.spark_jars(settings))]:
        st = jar.stat() if jar.exists() else None
        parts.append(f"{jar}:{st.st_size if st else 0}:{int(st.st_mtime) if st else 0}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def path(settings: Settings) -> Path:
    return settings.state_dir / "spark" / f"classes-{_class_path_key(settings)}.jsa"


def java_opts(settings: Settings) -> str:
    """The JVM option that maps the archive ('' while there is none for the current jars)."""
    archive = path(settings)
    return f"-XX:SharedArchiveFile={archive}" if archive.exists() else ""


def with_archive(opts: str, settings: Settings) -> str:
    """``opts`` (e.g. ``SPARK_SUBMIT_OPTS``) with the archive's option, when there is one (any
    other archive option in ``opts`` replaced)."""
    kept = [o for o in opts.split() if not o.startswith("-XX:SharedArchiveFile=")]
    return " ".join([*kept, *java_opts(settings).split()])


def ensure(ctx: Context, log_file: Path) -> Path | None:
    """Build the archive for the current jars unless it exists; return it, or None when there
    is none: the build failed (the reason is in ``log_file``; the drivers then start without
    one) or the master is not local (executors elsewhere, the jars shipped with ``--jars``)."""
    from devstack.spark import submit_argv
    from include.spark.submit import is_local_master

    settings = ctx.settings
    archive = path(settings)
    if archive.exists():
        return archive
    if not is_local_master(settings.spark_master):
        return None
    archive.parent.mkdir(parents=True, exist_ok=True)
    for stale in archive.parent.glob("classes-*.jsa*"):
        stale.unlink()
    partial = archive.with_suffix(".jsa.partial")
    env = {**ctx.env, "SPARK_SUBMIT_OPTS": f"-XX:ArchiveClassesAtExit={partial}"}
    scratch = settings.state_dir / "spark" / "training"
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "w") as log:
        proc = subprocess.run(
            submit_argv(ctx, str(APP), [str(scratch)]),
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=900,
        )
    if proc.returncode != 0 or not partial.exists():
        partial.unlink(missing_ok=True)
        return None
    os.replace(partial, archive)
    return archive
