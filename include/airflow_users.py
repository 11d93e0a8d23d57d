"""The platform's Airflow users, one per role, and the passwords file of Airflow's simple auth
manager.

* ``admin`` (role ADMIN): everything, connections and configuration included;
* ``operator`` (role USER): sees everything and runs DAGs - triggers ``stream_control``
  (stop, restart, quarantine), ``replay_dead_letters``, backfills - but cannot read or edit
  connections, variables or the configuration;
* ``viewer`` (role VIEWER): reads DAGs, runs and logs; changes nothing.

Each has its own generated password, so the audit rows of ``stream_control``
(``stream_control_state.set_by``, ``stream_quarantine.created_by``) name who acted.

The passwords file is valid JSON whatever a password holds (a ``"`` broke the former
``printf``), created with mode 0600, replaced atomically. Used by the local stack and by
compose::

    AIRFLOW_ADMIN_PASSWORD=... AIRFLOW_OPERATOR_PASSWORD=... AIRFLOW_VIEWER_PASSWORD=... \\
        python -m include.airflow_users /opt/airflow/passwords.json

(the passwords come from the environment, never from the command line).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from include.private_file import write_private

ADMIN_USER = "admin"
OPERATOR_USER = "operator"
VIEWER_USER = "viewer"
# user -> role of the simple auth manager
ROLES = {ADMIN_USER: "admin", OPERATOR_USER: "user", VIEWER_USER: "viewer"}
# user -> the environment variable holding its password (compose's names)
PASSWORD_VARIABLES = {
    ADMIN_USER: "AIRFLOW_ADMIN_PASSWORD",
    OPERATOR_USER: "AIRFLOW_OPERATOR_PASSWORD",
    VIEWER_USER: "AIRFLOW_VIEWER_PASSWORD",
}


def users_setting() -> str:
    """``[core] simple_auth_manager_users``: ``user:role`` pairs."""
    return ",".join(f"{user}:{role}" for user, role in ROLES.items())


def write_passwords_file(path: Path, passwords: Mapping[str, str]) -> None:
    """Write ``{user: password}`` to ``path`` (0600, atomically)."""
    write_private(path, json.dumps(dict(passwords)))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) != 1:
        print("usage: python -m include.airflow_users <passwords.json>", file=sys.stderr)
        return 2
    passwords = {user: os.environ.get(var, "") for user, var in PASSWORD_VARIABLES.items()}
    missing = [PASSWORD_VARIABLES[user] for user, pw in passwords.items() if not pw]
    if missing:
        print(f"not set: {', '.join(missing)}", file=sys.stderr)
        return 2
    write_passwords_file(Path(args[0]), passwords)
    return 0


if __name__ == "__main__":
    sys.exit(main())
