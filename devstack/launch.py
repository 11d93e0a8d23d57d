"""Exec one supervised service from its spec file (devstack/supervisor.py writes it, mode 0600).

supervisord runs ``python devstack/launch.py <spec.json>``; this replaces itself with the
service (same pid, so supervisord watches and signals the service itself), with exactly the
spec's environment, working directory and OS user. Standard library only: it runs before any
of the project is importable, and as root until it drops to the spec's user.
"""

from __future__ import annotations

import json
import os
import pwd
import sys


def main(spec_file: str) -> None:
    with open(spec_file) as fh:
        spec = json.load(fh)
    if spec.get("user"):
        user = pwd.getpwnam(spec["user"])
        os.initgroups(user.pw_name, user.pw_gid)
        os.setgid(user.pw_gid)
        os.setuid(user.pw_uid)
    if spec.get("cwd"):
        os.chdir(spec["cwd"])
    argv = spec["argv"]
    os.execvpe(argv[0], argv, spec["env"])


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: launch.py <spec.json>")
    main(sys.argv[1])
