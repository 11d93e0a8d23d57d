"""supervisord event listener: when a supervised service dies, end what it left behind.

supervisord puts each program in its own process group and, when it *stops* one, signals the
whole group (``stopasgroup``/``killasgroup``). When a program *dies* (SIGKILL, a crash), its
children stay: a SIGKILLed Airflow scheduler leaves its LocalExecutor workers and log server
running beside the scheduler supervisord starts in its place. This listener receives
``PROCESS_STATE_EXITED`` and ends the dead program's process group (SIGTERM, then SIGKILL
after ``GRACE_S``). Processes that made their own group (Airflow task processes, which finish
through the API server) are not touched. Standard library and ``supervisor.childutils`` only.
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time

from supervisor import childutils

GRACE_S = 5.0


def _alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except (ProcessLookupError, PermissionError):
        return False


def end_group(pgid: int, grace_s: float = GRACE_S) -> bool:
    """SIGTERM process group ``pgid``, SIGKILL what is left after ``grace_s``. True if any ran."""
    if pgid <= 1 or not _alive(pgid):
        return False
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return True
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and _alive(pgid):
        time.sleep(0.2)
    if _alive(pgid):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(pgid, signal.SIGKILL)
    return True


def main() -> None:
    while True:
        _headers, payload = childutils.listener.wait(sys.stdin, sys.stdout)
        fields, _ = childutils.eventdata(payload + "\n")
        pid = int(fields.get("pid", 0))
        if end_group(pid):  # a program's pgid is its pid (supervisord calls setpgrp)
            print(f"ended what {fields.get('processname')} (pid {pid}) left", file=sys.stderr)
        childutils.listener.ok(sys.stdout)


if __name__ == "__main__":
    main()
