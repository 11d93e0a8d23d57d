"""Compose's Kafka authenticates by default (issue 20): docker/kafka-entrypoint.sh run with the
``kafka`` service's settings from docker-compose.yaml, on a real broker built from the stack's
Kafka jars (tests/integration/kafka_image.py stands in for the image's own start script; only
addresses change: loopback ports instead of ``kafka:9092``).

The platform's client, configured exactly as compose's ``kafka_default`` connection, creates
a topic, produces and consumes; a client without SASL or with a wrong password gets nothing;
the broker's environment and command line hold neither password; Kafka's Java client passes
the healthcheck with the file the entrypoint wrote; a restart keeps the users.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer
from confluent_kafka.admin import AdminClient, NewTopic

from devstack import compose
from devstack import settings as devstack_settings
from devstack.services import _LOG4J2
from tests.integration.test_dashboard import free_port

ROOT = Path(__file__).resolve().parents[2]
ENTRYPOINT = ROOT / "docker" / "kafka-entrypoint.sh"
STAND_IN = Path(__file__).with_name("kafka_image.py")
REQUIRED = re.compile(r"\$\{([A-Z0-9_]+):\?[^}]*\}")


def with_values(value: str, values: Mapping[str, str]) -> str:
    return REQUIRED.sub(lambda m: values[m[1]], value)


@pytest.fixture(scope="module")
def broker(tmp_path_factory):
    """The compose ``kafka`` service's entrypoint and settings, on loopback ports."""
    tmp = tmp_path_factory.mktemp("compose-kafka")
    home = tmp / "kafka"
    home.mkdir()
    (home / "libs").symlink_to(devstack_settings.load().kafka_jars_dir)
    (home / "log4j2.properties").write_text(_LOG4J2)
    launcher = tmp / "run"
    launcher.write_text(f'#!/bin/bash\nexec {sys.executable} {STAND_IN} "$@"\n')
    launcher.chmod(0o755)

    # Like openssl rand -base64 24 (what .env.example suggests): '+', '/' and '=' included.
    values = {
        "KAFKA_BROKER_PASSWORD": "b+/=" + secrets.token_urlsafe(18),
        "KAFKA_CLIENT_PASSWORD": "c+/=" + secrets.token_urlsafe(18),
    }
    port, controller = free_port(), free_port()
    doc = compose.resolve(compose.load(), {})
    service = compose._environment(doc["services"]["kafka"])
    env = {k: with_values(v, values) for k, v in service.items()}
    env["KAFKA_LISTENERS"] = (
        env["KAFKA_LISTENERS"]
        .replace("://:9092", f"://127.0.0.1:{port}")
        .replace("://:9093", f"://127.0.0.1:{controller}")
    )
    env["KAFKA_ADVERTISED_LISTENERS"] = env["KAFKA_ADVERTISED_LISTENERS"].replace(
        "://kafka:9092", f"://127.0.0.1:{port}"
    )
    env["KAFKA_CONTROLLER_QUORUM_VOTERS"] = env["KAFKA_CONTROLLER_QUORUM_VOTERS"].replace(
        "@kafka:9093", f"@127.0.0.1:{controller}"
    )
    env["KAFKA_LOG_DIRS"] = str(tmp / "data")
    for key in ("KAFKA_LISTENERS", "KAFKA_ADVERTISED_LISTENERS", "KAFKA_CONTROLLER_QUORUM_VOTERS"):
        assert "kafka:" not in env[key] and ":909" not in env[key], (key, env[key])
    base = {k: os.environ[k] for k in ("PATH", "JAVA_HOME") if k in os.environ}
    proc_env = {
        **base,
        **env,
        "KAFKA_HOME": str(home),
        "RTAP_KAFKA_LAUNCH": str(launcher),
        "RTAP_KAFKA_DIR": str(tmp / "secrets"),
    }
    conn = json.loads(
        with_values(
            compose._environment(doc["services"]["airflow-api-server"])[
                "AIRFLOW_CONN_KAFKA_DEFAULT"
            ],
            values,
        )
    )
    client = {**conn["extra"], "bootstrap.servers": f"127.0.0.1:{port}"}
    b = Broker(proc_env, tmp, client, values)
    b.start()
    try:
        yield b
    finally:
        b.stop()


class Broker:
    def __init__(self, env: dict[str, str], tmp: Path, client: dict, values: dict[str, str]):
        self.env, self.tmp, self.client, self.values = env, tmp, client, values
        self.proc: subprocess.Popen | None = None
        self.starts = 0

    @property
    def log(self) -> Path:
        return self.tmp / f"broker-{self.starts}.log"

    def start(self) -> None:
        self.starts += 1
        with open(self.log, "wb") as out:
            self.proc = subprocess.Popen(
                ["bash", str(ENTRYPOINT)],
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, self.log.read_text()[-3000:]
            try:
                AdminClient({**self.client, "log_level": 0}).list_topics(timeout=3)
                return
            except KafkaException:
                time.sleep(1)
        raise AssertionError(f"the broker did not answer: {self.log.read_text()[-3000:]}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


def test_the_platforms_user_creates_produces_and_consumes(broker):
    topic = f"it-scram-{uuid.uuid4().hex[:8]}"
    admin = AdminClient(broker.client)
    for future in admin.create_topics([NewTopic(topic, 2, 1)]).values():
        future.result(30)
    producer = Producer(broker.client)
    sent = [f"event-{i}".encode() for i in range(50)]
    for value in sent:
        producer.produce(topic, value)
    assert producer.flush(30) == 0
    consumer = Consumer(
        {**broker.client, "group.id": f"it-{topic}", "auto.offset.reset": "earliest"}
    )
    consumer.subscribe([topic])
    got: list[bytes] = []
    deadline = time.monotonic() + 60
    while len(got) < len(sent) and time.monotonic() < deadline:
        msg = consumer.poll(1)
        if msg is not None and not msg.error():
            got.append(msg.value())
    consumer.close()
    assert sorted(got) == sorted(sent)


def test_clients_without_sasl_or_with_a_wrong_password_get_nothing(broker):
    plain = {"bootstrap.servers": broker.client["bootstrap.servers"], "log_level": 0}
    with pytest.raises(KafkaException):
        AdminClient(plain).list_topics(timeout=8)
    wrong = {**broker.client, "sasl.password": "not-it", "log_level": 0}
    with pytest.raises(KafkaException):
        AdminClient(wrong).list_topics(timeout=8)
    errors: list = []  # the reason, as a client's error callback receives it
    producer = Producer({**wrong, "error_cb": errors.append})
    deadline = time.monotonic() + 30
    while not any(e.code() == KafkaError._AUTHENTICATION for e in errors):
        assert time.monotonic() < deadline, f"no authentication error: {errors}"
        producer.poll(1)


def test_the_broker_holds_no_password_in_its_environment_or_argv(broker):
    pid = broker.proc.pid  # bash -> exec the image's script -> exec java: one process
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    environ = Path(f"/proc/{pid}/environ").read_bytes().decode(errors="replace")
    assert "kafka.Kafka" in cmdline
    for name, password in broker.values.items():
        assert password not in cmdline, f"{name} is on the broker's command line"
        assert password not in environ, f"{name} is in the broker's environment"
    secrets_dir = Path(broker.env["RTAP_KAFKA_DIR"])
    assert secrets_dir.stat().st_mode & 0o077 == 0
    for path in secrets_dir.iterdir():
        assert path.stat().st_mode & 0o077 == 0, f"{path} is readable by others"
    assert not (secrets_dir / "format.args").exists(), "the format's argument file is removed"
    for password in broker.values.values():
        assert password not in broker.log.read_text(), "a password is in the broker's log"


# What the healthcheck's kafka-broker-api-versions does with its --command-config, in Kafka's
# Java client (the stack's broker jars lack the tools' jar): connect with the file's settings
# and ask the cluster for its nodes.
JAVA_PROBE = """
import java.io.FileReader;
import java.util.Properties;
import org.apache.kafka.clients.admin.Admin;

public class Probe {
    public static void main(String[] args) throws Exception {
        Properties props = new Properties();
        try (FileReader in = new FileReader(args[1])) { props.load(in); }
        props.put("bootstrap.servers", args[0]);
        try (Admin admin = Admin.create(props)) {
            System.out.println("nodes=" + admin.describeCluster().nodes().get().size());
        }
    }
}
"""


def test_the_healthcheck_passes_with_kafkas_java_client(broker):
    """The compose healthcheck's client file, as Kafka's Java client reads it: the JAAS line
    the entrypoint writes authenticates."""
    health = compose.resolve(compose.load(), {})["services"]["kafka"]["healthcheck"]["test"][-1]
    assert "--command-config /tmp/rtap-kafka/client.properties" in health
    assert "RTAP_KAFKA_DIR" not in compose._environment(compose.load()["services"]["kafka"]), (
        "compose uses the entrypoint's default directory, the one the healthcheck names"
    )
    probe = broker.tmp / "Probe.java"
    probe.write_text(JAVA_PROBE)
    home = os.environ.get("JAVA_HOME")
    java = str(Path(home) / "bin" / "java") if home else "java"
    libs = Path(broker.env["KAFKA_HOME"]) / "libs" / "*"
    config = Path(broker.env["RTAP_KAFKA_DIR"]) / "client.properties"
    out = subprocess.run(
        [java, "-cp", str(libs), str(probe), broker.client["bootstrap.servers"], str(config)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert "nodes=1" in out.stdout


def test_a_restart_keeps_the_users_and_does_not_format_again(broker):
    broker.stop()
    broker.start()  # waits until the platform's user is served again
    log = broker.log.read_text()
    assert "SCRAM users" not in log, "the second start formatted the storage again"
    assert "SCRAM users" in (broker.tmp / "broker-1.log").read_text()


def test_a_password_the_scram_format_would_split_is_refused(broker, tmp_path):
    env = {
        **broker.env,
        "RTAP_KAFKA_CLIENT_PASSWORD": "abc,def-long-enough",
        "KAFKA_LOG_DIRS": str(tmp_path),
    }
    env["RTAP_KAFKA_DIR"] = str(tmp_path / "s")
    out = subprocess.run(["bash", str(ENTRYPOINT)], env=env, capture_output=True, text=True)
    assert out.returncode == 2
    assert (
        "RTAP_KAFKA_CLIENT_PASSWORD (KAFKA_CLIENT_PASSWORD in .env) may not hold a comma"
        in out.stderr
    )
    assert "abc,def" not in out.stderr + out.stdout
