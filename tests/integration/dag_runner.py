"""`airflow dags test`, kept running for a pytest worker's whole session.

Each `airflow dags test` process spends ~20-30 s before its first task on the two cores (importing
Airflow and its providers, building the in-process execution API's FastAPI app), and the suite
runs ~30 of them. This process pays that once: it reads one request per line on stdin
(``{"dag_id", "conf", "env", "log"}``), runs Airflow's own ``dags test`` command for it (the CLI's
parser and function, so the same code path as ``airflow dags test <dag_id> -c <conf>``), with
``env`` set on top of its environment for that run only and everything the run prints (its task
logs, spark-submit's output) written to ``log``, and answers one line on stdout
``DAG_RUNNER {"exit": <code>}``. tests/integration/conftest.py starts it and talks to it.
"""

from __future__ import annotations

import json
import os
import sys
import traceback

PREFIX = "DAG_RUNNER "


def _redirect(path: str, append: bool = False) -> None:
    """Point this process's stdout and stderr (the file descriptors: subprocesses and every
    logging handler follow) at ``path``."""
    sys.stdout.flush()
    sys.stderr.flush()
    mode = os.O_APPEND if append else os.O_TRUNC
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | mode, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)


def main() -> int:
    answers = os.fdopen(os.dup(1), "w", buffering=1)  # the pipe to the test worker
    idle_log = os.environ.get("RTAP_DAG_RUNNER_LOG", os.devnull)
    _redirect(idle_log, append=True)

    from airflow.cli import cli_parser

    parser = cli_parser.get_parser()
    dags_folder = os.environ["AIRFLOW__CORE__DAGS_FOLDER"]
    answers.write(PREFIX + json.dumps({"ready": True}) + "\n")
    for line in sys.stdin:
        if not line.strip():
            continue
        request = json.loads(line)
        argv = ["dags", "test", request["dag_id"]]
        # Parse only the DAG's own file (each DAG file is named after its DAG), not the folder.
        dag_file = os.path.join(dags_folder, request["dag_id"] + ".py")
        if os.path.exists(dag_file):
            argv += ["--dagfile-path", dag_file]
        if request.get("conf"):
            argv += ["-c", json.dumps(request["conf"])]
        overrides = request.get("env") or {}
        saved = {k: os.environ.get(k) for k in overrides}
        os.environ.update(overrides)
        _redirect(request["log"])
        try:
            args = parser.parse_args(argv)
            args.func(args)
            code = 0
        except SystemExit as exc:  # `dags test` exits 1 ("DagRun failed") on a failed run
            code = exc.code if isinstance(exc.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 1
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
            _redirect(idle_log, append=True)
        answers.write(PREFIX + json.dumps({"exit": code}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
