"""The passwords file of Airflow's simple auth manager (the UI and API users): valid JSON
whatever a password holds (a ``"`` or a ``\\`` broke the former ``printf``), created with
mode 0600, replaced atomically. Used by the local stack and by compose::

    AIRFLOW_ADMIN_PASSWORD=... python -m include.airflow_users /opt/airflow/passwords.json

(the password comes from the environment, never from the command line).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

ADMIN_USER = "admin"


def write_passwords_file(path: Path, passwords: Mapping[str, str]) -> None:
    """Write ``{user: password}`` to ``path`` (0600, atomically)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(dict(passwords), fh)
    os.chmod(partial, 0o600)  # an old partial file keeps its mode through O_CREAT
    partial.replace(path)


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m include.airflow_users <passwords.json>", file=sys.stderr)
        return 2
    password = os.environ.get("AIRFLOW_ADMIN_PASSWORD", "")
    if not password:
        print("AIRFLOW_ADMIN_PASSWORD is not set", file=sys.stderr)
        return 2
    write_passwords_file(Path(args[0]), {ADMIN_USER: password})
    return 0


if __name__ == "__main__":
    sys.exit(main())
