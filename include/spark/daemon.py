"""A Spark standalone daemon (master or worker) that authenticates every RPC peer.

Compose's ``spark-cluster`` profile runs ``python -m include.spark.daemon <class> [args...]``:
the cluster's shared secret comes from ``SPARK_AUTH_SECRET`` in the container's environment,
goes into a private properties file (:func:`include.spark.submit.auth_properties`, the format
the drivers use too) and leaves the environment before ``spark-class`` replaces this process,
which reads it with ``--properties-file``. A standalone cluster takes the secret from
configuration only; a ``-Dspark.authenticate.secret=...`` in ``SPARK_MASTER_OPTS`` would put it
on the daemon's command line, readable by every process of the container.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

SECRET_ENV = "SPARK_AUTH_SECRET"


def write_auth_file(secret: str, directory: str | None = None, path: Path | None = None) -> str:
    """A private (0600) properties file turning on authentication with ``secret``: a new
    temporary file in ``directory``, or ``path`` (created, never overwritten)."""
    from include.spark.submit import auth_properties

    if path is None:
        fd, name = tempfile.mkstemp(prefix="spark-auth-", suffix=".properties", dir=directory)
    else:
        fd, name = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), str(path)
    with os.fdopen(fd, "w") as fh:
        fh.write(auth_properties(secret))
    return name


def command(spark_home: str, daemon_class: str, conf: str, args: Sequence[str]) -> list[str]:
    return [
        str(Path(spark_home) / "bin" / "spark-class"),
        daemon_class,
        "--properties-file",
        conf,
        *args,
    ]


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args:
        raise SystemExit("usage: python -m include.spark.daemon <daemon class> [args...]")
    secret = os.environ.pop(SECRET_ENV, "")
    if not secret:
        raise SystemExit(f"set {SECRET_ENV} (the Spark cluster's shared secret, see .env.example)")
    import pyspark

    conf = write_auth_file(secret)
    argv_ = command(os.path.dirname(pyspark.__file__), args[0], conf, args[1:])
    os.execv(argv_[0], argv_)  # the environment without the secret
    return 1  # not reached


if __name__ == "__main__":
    sys.exit(main())
