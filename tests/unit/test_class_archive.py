"""The Spark drivers' class-data archive (devstack/class_archive.py) is named only when it was
built for the current jars, and a JVM given one that does not fit ignores it."""

from __future__ import annotations

import os
import subprocess

from devstack import class_archive, environment, settings, stack


def test_no_archive_no_option(tmp_path):
    s = settings.load({"RTAP_STATE_DIR": str(tmp_path / "new")})
    assert class_archive.java_opts(s) == ""
    assert class_archive.with_archive("-XX:+UseSerialGC", s) == "-XX:+UseSerialGC"


def test_the_archive_for_the_current_jars_is_named_once(tmp_path):
    s = settings.load({"RTAP_STATE_DIR": str(tmp_path / "state")})
    archive = class_archive.path(s)
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"built")
    opts = class_archive.with_archive("-Xss4m -XX:SharedArchiveFile=/old/one.jsa", s)
    assert opts == f"-Xss4m -XX:SharedArchiveFile={archive}"
    assert class_archive.with_archive(opts, s) == opts
    # The stack's context (every spark-submit it runs, the Airflow-launched drivers too).
    assert stack.context(s).env["SPARK_SUBMIT_OPTS"].endswith(f"-XX:SharedArchiveFile={archive}")


def test_a_rebuilt_jar_makes_the_archive_stale(tmp_path):
    s = settings.load({"RTAP_STATE_DIR": str(tmp_path / "state")})
    s.operators_jar.parent.mkdir(parents=True)
    s.operators_jar.write_bytes(b"v1")
    archive = class_archive.path(s)
    archive.parent.mkdir(parents=True)
    archive.write_bytes(b"built for v1")
    assert class_archive.java_opts(s)
    s.operators_jar.write_bytes(b"version 2")
    os.utime(s.operators_jar, (1, 1))
    assert class_archive.path(s) != archive
    assert class_archive.java_opts(s) == ""


def test_a_jvm_ignores_an_archive_that_does_not_fit(tmp_path):
    """Why the drivers never depend on it: a missing or foreign archive is skipped, silently."""
    java = os.path.join(environment.java_home() or "/usr", "bin", "java")
    junk = tmp_path / "classes.jsa"
    junk.write_bytes(b"not an archive")
    for archive in (junk, tmp_path / "missing.jsa"):
        proc = subprocess.run(
            [java, f"-XX:SharedArchiveFile={archive}", "-version"], capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
        assert "error" not in proc.stderr.lower(), proc.stderr
