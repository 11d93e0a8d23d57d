"""Where an integration test's time goes: the helpers that start Spark or Airflow work are
wrapped by :func:`timed`, which appends ``<test>\t<helper>\t<seconds>`` to
``<logs>/test-phases-<worker>.tsv``. ``python -m tests.integration.phases`` sums the files by
test and helper (slowest first): the suite's time budget is spent where that table says."""

from __future__ import annotations

import functools
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import ParamSpec, TypeVar

from devstack import settings as devstack_settings

P = ParamSpec("P")
R = TypeVar("R")


def _log() -> Path:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    return devstack_settings.load().logs_dir / f"test-phases-{worker}.tsv"


def timed(fn: Callable[P, R]) -> Callable[P, R]:
    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        started = time.monotonic()
        try:
            return fn(*args, **kwargs)
        finally:
            test = os.environ.get("PYTEST_CURRENT_TEST", "?").split(" ")[0]
            with open(_log(), "a") as out:
                out.write(f"{test}\t{fn.__name__}\t{time.monotonic() - started:.1f}\n")

    return wrapper


def summary(logs: Path) -> str:
    spent: dict[tuple[str, str], list[float]] = defaultdict(list)
    for path in sorted(logs.glob("test-phases-*.tsv")):
        for line in path.read_text().splitlines():
            test, helper, seconds = line.split("\t")
            spent[(test, helper)].append(float(seconds))
    rows = sorted(spent.items(), key=lambda kv: -sum(kv[1]))
    return "\n".join(
        f"{sum(s):8.1f} s  {len(s):3d} x {helper:<22} {test}" for (test, helper), s in rows
    )


if __name__ == "__main__":
    print(summary(Path(sys.argv[1]) if len(sys.argv) > 1 else devstack_settings.load().logs_dir))
