"""Measure the local stack's footprint and write docs/footprint.md (figures, never test asserts).

1. Cold install: a new virtualenv from the lock and every download/build (jars, MinIO), with
   empty caches (uv, Go modules, Maven, ours) under a temporary directory.
2. Warm start: ``devstack up`` with everything cached and the stack stopped.
3. Idle memory: resident memory (RSS) of each service's process tree, a minute after start.

Usage: ``make measure`` (stops a running stack first; takes ~10 minutes on a cold path).
Options: ``--skip-cold`` to only measure warm start and memory.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from devstack import process, stack  # noqa: E402
from devstack.services import ALL  # noqa: E402


def timed(argv: list[str], env: dict[str, str]) -> float:
    t0 = time.monotonic()
    subprocess.run(argv, check=True, env=env, cwd=ROOT, stdout=subprocess.DEVNULL)
    return time.monotonic() - t0


def cold_install() -> dict[str, float]:
    tmp = Path(tempfile.mkdtemp(prefix="rtap-cold-"))
    env = dict(
        os.environ,
        RTAP_VENV=str(tmp / "venv"),
        UV_CACHE_DIR=str(tmp / "uv-cache"),
        PIP_NO_CACHE_DIR="1",
        RTAP_CACHE_DIR=str(tmp / "cache"),
        GOMODCACHE=str(tmp / "gomod"),
        GOCACHE=str(tmp / "gocache"),
    )
    try:
        venv = timed(["bash", "scripts/bootstrap.sh"], env)
        rest = timed([str(tmp / "venv" / "bin" / "python"), "-m", "devstack", "install"], env)
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(tmp)], check=False)
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "virtualenv from the lock": venv,
        "jars, MinIO build, Postgres check": rest,
        "total": venv + rest,
    }


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--skip-cold", action="store_true")
    p.add_argument("--settle", type=float, default=60.0, help="seconds to idle before reading RSS")
    args = p.parse_args()
    ctx = stack.context()
    stack.down(ctx)

    cold = {} if args.skip_cold else cold_install()

    t0 = time.monotonic()
    stack.up(ctx)
    warm_start = time.monotonic() - t0
    time.sleep(args.settle)
    memory: dict[str, float] = {}
    for svc in ALL:
        for comp, proc in svc.running(ctx).items():
            memory[comp] = process.tree_rss(proc) / 1024**2 if proc else 0.0

    cpu = platform.processor() or platform.machine()
    mem_total = psutil.virtual_memory().total / 1024**3
    lines = [
        "# Footprint of the local stack",
        "",
        f"Measured by `make measure` (scripts/measure.py) on {datetime.now(UTC):%Y-%m-%d}: "
        f"{os.cpu_count()} cores ({cpu}), {mem_total:.0f} GiB RAM, {platform.system()} "
        f"{platform.release()}, Python {platform.python_version()}. Shared machines are noisy: "
        "treat these as orders of magnitude.",
        "",
    ]
    if cold:
        lines += [
            "## Cold install (empty caches, downloads from the registries)",
            "",
            "| step | seconds |",
            "|---|---:|",
        ]
        lines += [f"| {k} | {v:.0f} |" for k, v in cold.items()]
        lines += [
            "",
            "The PostgreSQL server comes from the distribution's packages and was already "
            "installed on the measuring machine; where it is not, `apt-get install postgresql` "
            "adds about half a minute.",
            "",
        ]
    lines += [
        "## Warm start",
        "",
        f"`devstack up` with everything cached and the stack stopped: **{warm_start:.0f} s** "
        "(Airflow's four components dominate).",
        "",
        f"## Idle memory (RSS of each process tree, {args.settle:.0f} s after start)",
        "",
        "| component | MiB |",
        "|---|---:|",
    ]
    lines += [f"| {k} | {v:.0f} |" for k, v in memory.items()]
    lines += [f"| **total** | **{sum(memory.values()):.0f}** |", ""]
    out = ROOT / "docs" / "footprint.md"
    out.write_text("\n".join(lines))
    print("\n".join(lines))
    print(f"written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
