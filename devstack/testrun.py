"""``make test``'s integration runs, side by side: the quick chaos soak on a stack of its own
while the other tests share the default stack.

The soak stops and starts the services under the stream (the broker, the S3 server, the
scheduler), so it cannot share a stack with other tests; run after them it added its ~10-13
minutes of mostly waiting (a fault's outage, a recovery) to the suite. Beside them, on a second
stack (:func:`devstack.settings.side_stack_env`: its own state directory, every port moved by
:data:`SOAK_PORT_OFFSET`), it costs only the CPU its light traffic and its services use.

Each pytest run starts its stack when none runs there and stops it at the end. The soak's
output goes to ``<its state dir>/logs/pytest-chaos.log`` and is printed after the other run's,
so the two never interleave. The exit status is the first failure's.

Usage: ``python -m devstack.testrun [--workers N] [--serial-soak] [pytest args...]``
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections.abc import Sequence

from devstack.settings import ROOT, side_stack_env

# Beside .state, not under it: a stack finds its leftover processes by its state dir's path.
SOAK_STATE_DIR = ROOT / ".soak-state"
# 9092 -> 29092, 5432 -> 25432, ...: clear of the scale-out cluster's 19000-19300.
SOAK_PORT_OFFSET = 20000
SOAK_ARGS = ("-m", "chaos", "tests/integration/test_chaos.py")


def main_args(workers: int, extra: Sequence[str]) -> list[str]:
    """pytest's arguments for every test but the soak: ``workers`` pytest-xdist workers, a
    module per unit of work, in ``tests/conftest.py``'s order (slowest first)."""
    spread = ["-n", str(workers), "--dist", "loadfile", "--no-loadscope-reorder"]
    return [*(spread if workers > 0 else []), "-m", "not chaos", *extra]


def soak_env(base: dict[str, str]) -> dict[str, str]:
    return {**base, **side_stack_env(SOAK_STATE_DIR, SOAK_PORT_OFFSET)}


def _pytest(args: Sequence[str]) -> list[str]:
    return [sys.executable, "-m", "pytest", *args]


def run(workers: int, extra: Sequence[str], serial_soak: bool = False) -> int:
    if serial_soak:  # one stack at a time (a machine short of memory or ports)
        first = subprocess.run(_pytest(main_args(workers, extra)), cwd=ROOT).returncode
        second = subprocess.run(_pytest(SOAK_ARGS), cwd=ROOT).returncode
        return first or second
    log = SOAK_STATE_DIR / "logs" / "pytest-chaos.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    print(f"==> the quick chaos soak runs beside the other tests on its own stack ({log})")
    with open(log, "wb") as out:
        soak = subprocess.Popen(
            _pytest(SOAK_ARGS),
            cwd=ROOT,
            env=soak_env(dict(os.environ)),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C here reaches it once, below
        )
        try:
            first = subprocess.run(_pytest(main_args(workers, extra)), cwd=ROOT).returncode
            if soak.poll() is None:
                print("==> waiting for the chaos soak", flush=True)
            second = soak.wait()
        except KeyboardInterrupt:
            os.killpg(soak.pid, signal.SIGINT)  # its session fixture stops its stack
            soak.wait()
            raise
    print(f"\n==> the quick chaos soak ({log}):\n", flush=True)
    sys.stdout.write(log.read_text(errors="replace"))
    return first or second


def stop_soak_stack() -> None:
    """Stop the soak's stack if a run left it (interrupted): ``make stop``."""
    if not (SOAK_STATE_DIR / "run").exists():
        return
    from devstack import settings, stack

    ctx = stack.context(settings.load(soak_env(dict(os.environ))))
    print(f"==> the chaos soak's stack ({SOAK_STATE_DIR})")
    stack.down(ctx)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m devstack.testrun", description=__doc__)
    p.add_argument("--workers", type=int, default=2, help="pytest-xdist workers (0: none)")
    p.add_argument("--serial-soak", action="store_true", help="the soak after the others")
    p.add_argument("--stop", action="store_true", help="stop the soak's stack and exit")
    args, extra = p.parse_known_args(argv)
    if args.stop:
        stop_soak_stack()
        return 0
    return run(args.workers, extra, args.serial_soak)


if __name__ == "__main__":
    sys.exit(main())
