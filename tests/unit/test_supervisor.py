"""The local stack's process supervisor, our side of it: the programs' configuration, the
launcher that gives each service its own environment, and the reaper of a dead service's
process group. Real processes, no supervisord (the integration tests run that)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

from devstack import process, settings, supervisor
from devstack.reap import end_group


def _settings(tmp_path: Path) -> settings.Settings:
    return settings.load({"RTAP_STATE_DIR": str(tmp_path / "state")})


def test_program_config_carries_the_policy_and_no_environment(tmp_path):
    s = _settings(tmp_path)
    program = supervisor.Program(
        name="kafka",
        argv=["/opt/java", "kafka.Kafka"],
        env={"SECRET": "hunter2"},
        log_file=tmp_path / "kafka.log",
        stopsignal="INT",
    )
    conf = supervisor.program_config(s, program)
    assert conf.startswith("[program:kafka]\n")
    assert "autorestart=true" in conf and "startretries=5" in conf and "stopsignal=INT" in conf
    assert "stopasgroup=true" in conf and "killasgroup=true" in conf
    assert f"stdout_logfile={tmp_path / 'kafka.log'}" in conf
    assert "hunter2" not in conf and "kafka.Kafka" not in conf  # both live in the 0600 spec
    assert str(supervisor.spec_path(s, "kafka")) in conf
    main = supervisor.main_config(s)
    assert "chmod=0700" in main and str(supervisor.socket_path(s)) in main
    assert "events=PROCESS_STATE_EXITED" in main  # the reaper listens


def test_launcher_runs_the_spec_with_exactly_its_environment_and_directory(tmp_path):
    spec = tmp_path / "spec.json"
    out = tmp_path / "out.json"
    code = (
        "import json, os, sys; "
        f"json.dump({{'env': dict(os.environ), 'cwd': os.getcwd(), 'pid': os.getpid()}}, "
        f"open({str(out)!r}, 'w'))"
    )
    spec.write_text(
        json.dumps(
            {
                "argv": [sys.executable, "-c", code],
                "env": {"ONLY": "this", "PATH": os.environ["PATH"]},
                "cwd": str(tmp_path),
                "user": None,
            }
        )
    )
    proc = subprocess.Popen([sys.executable, "-I", str(supervisor.LAUNCHER), str(spec)])
    assert proc.wait(timeout=60) == 0
    seen = json.loads(out.read_text())
    assert seen["pid"] == proc.pid  # exec'd in place: supervisord watches the service itself
    assert seen["cwd"] == str(tmp_path)
    assert {k: v for k, v in seen["env"].items() if k != "LC_CTYPE"} == {
        "ONLY": "this",
        "PATH": os.environ["PATH"],
    }


def test_reaper_ends_the_group_a_dead_program_left(tmp_path):
    # A "program" in its own process group that starts two children and dies by SIGKILL.
    code = (
        "import subprocess, sys, time; "
        "[subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(600)']) "
        "for _ in range(2)]; time.sleep(600)"
    )
    leader = subprocess.Popen([sys.executable, "-c", code], process_group=0)
    parent = psutil.Process(leader.pid)
    deadline = time.monotonic() + 30
    while len(parent.children()) < 2 and time.monotonic() < deadline:
        time.sleep(0.1)
    children = parent.children()
    assert len(children) == 2
    leader.kill()
    leader.wait(timeout=10)
    assert all(c.is_running() for c in children)  # what a SIGKILLed service leaves behind

    assert end_group(leader.pid, grace_s=5)
    _, alive = psutil.wait_procs(children, timeout=10)
    assert not alive
    assert not end_group(leader.pid)  # nothing left: nothing to do


def test_a_recorded_process_is_found_after_the_clock_steps(tmp_path, monkeypatch):
    pid_file = tmp_path / "sleeper.pid"
    proc = process.start(
        [sys.executable, "-c", "import time; time.sleep(600)"],
        pid_file=pid_file,
        log_file=tmp_path / "sleeper.log",
        env=dict(os.environ),
    )
    try:
        assert process.find(pid_file).pid == proc.pid
        # NTP steps the wall clock 38 s: the kernel's boot time and every process's start time
        # on the wall clock move with it; the time since boot does not.
        boot, created = psutil.boot_time(), psutil.Process(proc.pid).create_time()
        monkeypatch.setattr(psutil, "boot_time", lambda: boot + 38)
        monkeypatch.setattr(psutil.Process, "create_time", lambda self: created + 38)
        assert process.find(pid_file).pid == proc.pid
        # A recycled pid (another start time since boot) is not the recorded process.
        monkeypatch.setattr(psutil.Process, "create_time", lambda self: created + 120)
        assert process.find(pid_file) is None
    finally:
        proc.kill()
        proc.wait(10)


def test_a_pid_file_of_the_wall_clock_format_is_still_read(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    try:
        pid_file = tmp_path / "old.pid"
        started = psutil.Process(sleeper.pid).create_time()
        pid_file.write_text(json.dumps({"pid": sleeper.pid, "create_time": started}))
        assert process.find(pid_file).pid == sleeper.pid
    finally:
        sleeper.kill()
        sleeper.wait(10)
