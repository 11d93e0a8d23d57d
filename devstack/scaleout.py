"""The scale-out path on one machine, with real processes: a Spark standalone cluster (a master
and workers) and a three-broker KRaft Kafka, both on loopback, next to the local stack.

Neither is part of ``make up`` (the default stack runs Spark in ``local[*]`` and one broker);
``python -m devstack scaleout up|down|status`` starts them for a try-out and the integration
tests in ``tests/integration/test_scaleout.py`` prove the pipeline on them. The same apps and
DAGs run unchanged: only the ``spark_default`` and ``kafka_default`` connections differ.

Kafka brokers carry, besides the PLAINTEXT listener, a ``SASL_SSL`` listener with SCRAM-SHA-512
users and a certificate signed by a CA generated here (``<state>/scaleout/kafka/tls``): the
security option of docs/deployment.md, exercised by the tests with a SCRAM user for the stream.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from devstack import process
from devstack.services import _LOG4J2, Context, Health, ServiceError, new_cluster_id
from devstack.settings import SettingError

SCRAM_MECHANISM = "SCRAM-SHA-512"


@dataclass(frozen=True)
class ScaleoutPorts:
    """Ports of the scale-out processes: ``RTAP_SCALEOUT_PORT_BASE`` + fixed offsets."""

    base: int = 19000

    @property
    def spark_master(self) -> int:
        return self.base + 77

    @property
    def spark_master_ui(self) -> int:
        return self.base + 180

    def spark_worker_ui(self, i: int) -> int:
        return self.base + 180 + i

    def kafka(self, i: int) -> int:
        return self.base + 90 + i

    def kafka_controller(self, i: int) -> int:
        return self.base + 190 + i

    def kafka_sasl(self, i: int) -> int:
        return self.base + 290 + i


def scaleout_ports(env: dict[str, str] | os._Environ) -> ScaleoutPorts:
    raw = env.get("RTAP_SCALEOUT_PORT_BASE", "19000")
    try:
        base = int(raw)
    except ValueError:
        base = -1
    if not 1024 <= base <= 65000:
        raise SettingError(
            f"RTAP_SCALEOUT_PORT_BASE={raw!r}: expected a number from 1024 to 65000 "
            "(the scale-out processes use base+77 ... base+293)"
        )
    return ScaleoutPorts(base)


def _get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


# --------------------------------------------------------------------------- Spark standalone


class SparkStandalone:
    """A Spark standalone master and ``workers`` workers, started from pyspark's own jars with
    ``bin/spark-class`` (pyspark ships no ``sbin``). Web UIs bind to loopback only. Every RPC
    peer authenticates with the cluster's shared secret (``spark.authenticate``), generated at
    the first start into a private properties file the daemons read (``--properties-file``,
    never a ``-D`` on their command line); a driver brings it as the Spark connection's
    password (include/spark/submit.py)."""

    def __init__(self, ctx: Context, ports: ScaleoutPorts, workers: int = 2, cores: int = 1):
        self.ctx, self.ports, self.workers, self.cores = ctx, ports, workers, cores
        self.dir = ctx.settings.state_dir / "scaleout" / "spark"

    @property
    def host(self) -> str:
        return self.ctx.settings.host

    @property
    def master_url(self) -> str:
        return f"spark://{self.host}:{self.ports.spark_master}"

    @property
    def ui_url(self) -> str:
        return f"http://{self.host}:{self.ports.spark_master_ui}"

    def worker_ui_url(self, i: int) -> str:
        return f"http://{self.host}:{self.ports.spark_worker_ui(i)}"

    def procs(self) -> list[str]:
        return ["spark-master", *(f"spark-worker-{i}" for i in range(1, self.workers + 1))]

    @property
    def auth_file(self) -> Path:
        return self.dir / "auth.properties"

    @property
    def secret(self) -> str:
        """The cluster's shared secret (generated once, kept in :attr:`auth_file`)."""
        if not self.auth_file.exists():
            import secrets

            from include.spark.daemon import write_auth_file

            self.dir.mkdir(parents=True, exist_ok=True)
            write_auth_file(secrets.token_urlsafe(32), path=self.auth_file)
        for line in self.auth_file.read_text().splitlines():
            if line.startswith("spark.authenticate.secret="):
                return line.split("=", 1)[1]
        raise ServiceError(f"{self.auth_file} holds no spark.authenticate.secret")

    def _spark_class(self) -> str:
        import pyspark

        return str(Path(pyspark.__file__).parent / "bin" / "spark-class")

    def _env(self) -> dict[str, str]:
        env = dict(self.ctx.env)
        # Daemons need little heap; executors get spark.executor.memory from each app.
        env["SPARK_DAEMON_MEMORY"] = "256m"
        env["SPARK_LOCAL_IP"] = self.host
        env["SPARK_PUBLIC_DNS"] = self.host
        # No credential of the stack reaches the cluster: each app brings its own
        # (spark.executorEnv.* from LakeSparkSubmitOperator's properties file).
        secret_words = ("PASSWORD", "SECRET", "_KEY", "TOKEN")
        for key in [
            k
            for k in env
            if k.startswith(("AIRFLOW", "AWS_", "PG")) or any(w in k for w in secret_words)
        ]:
            del env[key]
        return env

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        ctx, env = self.ctx, self._env()
        if not self.secret:  # creates the daemons' properties file at the first start
            raise ServiceError(f"{self.auth_file}: an empty spark.authenticate.secret")
        auth = ["--properties-file", str(self.auth_file)]
        process.start(
            [
                self._spark_class(),
                "org.apache.spark.deploy.master.Master",
                *auth,
                "--host",
                self.host,
                "--port",
                str(self.ports.spark_master),
                "--webui-port",
                str(self.ports.spark_master_ui),
            ],
            pid_file=ctx.pid_file("spark-master"),
            log_file=ctx.log_file("spark-master"),
            env=env,
            cwd=self.dir,
        )
        for i in range(1, self.workers + 1):
            work = self.dir / f"worker-{i}"
            work.mkdir(parents=True, exist_ok=True)
            process.start(
                [
                    self._spark_class(),
                    "org.apache.spark.deploy.worker.Worker",
                    *auth,
                    "--host",
                    self.host,
                    "--webui-port",
                    str(self.ports.spark_worker_ui(i)),
                    "--cores",
                    str(self.cores),
                    "--memory",
                    "2g",
                    "--work-dir",
                    str(work),
                    self.master_url,
                ],
                pid_file=ctx.pid_file(f"spark-worker-{i}"),
                log_file=ctx.log_file(f"spark-worker-{i}"),
                env=env,
                cwd=work,
            )

    def state(self) -> dict:
        """The master's view (``/json``): workers, active and completed apps."""
        return _get_json(f"{self.ui_url}/json/")

    def health(self) -> Health:
        try:
            state = self.state()
        except OSError as exc:
            return Health(False, str(exc))
        alive = [w for w in state.get("workers", []) if w.get("state") == "ALIVE"]
        return Health(
            state.get("status") == "ALIVE" and len(alive) >= self.workers,
            f"master {state.get('status')}, {len(alive)}/{self.workers} worker(s) alive",
        )

    def worker_state(self, i: int) -> dict:
        return _get_json(f"{self.worker_ui_url(i)}/json/")

    def wait_healthy(self, timeout: float = 120) -> None:
        def check() -> bool:
            dead = [c for c in self.procs() if process.find(self.ctx.pid_file(c)) is None]
            if dead:
                raise ServiceError(f"{dead[0]} exited; see {self.ctx.log_file(dead[0])}")
            return self.health().ok

        process.wait_until(check, timeout=timeout, interval=1.0, what="the Spark cluster")

    def stop(self) -> None:
        for name in reversed(self.procs()):
            process.stop(self.ctx.pid_file(name))


# --------------------------------------------------------------------------- Kafka cluster


def make_tls_material(directory: Path, host: str) -> dict[str, Path]:
    """A CA and a broker certificate for ``host`` (PEM), once: ``ca.pem`` (what clients trust)
    and ``broker.pem`` (the broker's PKCS#8 key and its certificate chain)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    ca_file, broker_file = directory / "ca.pem", directory / "broker.pem"
    if ca_file.exists() and broker_file.exists():
        return {"ca": ca_file, "broker": broker_file}
    directory.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rtap local CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(host)), x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    fd = os.open(broker_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(
            key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        )
        fh.write(cert.public_bytes(pem))
        fh.write(ca_cert.public_bytes(pem))
    ca_file.write_bytes(ca_cert.public_bytes(pem))
    return {"ca": ca_file, "broker": broker_file}


class KafkaCluster:
    """``brokers`` KRaft nodes (each broker and controller, a static three-voter quorum) on
    loopback: replication factor 3 and min ISR 2 for internal topics and new topics."""

    def __init__(self, ctx: Context, ports: ScaleoutPorts, brokers: int = 3):
        self.ctx, self.ports, self.brokers = ctx, ports, brokers
        self.dir = ctx.settings.state_dir / "scaleout" / "kafka"

    @property
    def host(self) -> str:
        return self.ctx.settings.host

    @property
    def bootstrap(self) -> str:
        return ",".join(f"{self.host}:{self.ports.kafka(i)}" for i in self.nodes())

    @property
    def sasl_bootstrap(self) -> str:
        return ",".join(f"{self.host}:{self.ports.kafka_sasl(i)}" for i in self.nodes())

    @property
    def ca_file(self) -> Path:
        return self.dir / "tls" / "ca.pem"

    def nodes(self) -> range:
        return range(1, self.brokers + 1)

    def proc_name(self, i: int) -> str:
        return f"kafka-node-{i}"

    def server_properties(self, i: int, broker_pem: Path) -> str:
        h, p = self.host, self.ports
        voters = ",".join(f"{n}@{h}:{p.kafka_controller(n)}" for n in self.nodes())
        rf = min(3, self.brokers)
        isr = min(2, rf)
        return "\n".join(
            [
                "process.roles=broker,controller",
                f"node.id={i}",
                f"controller.quorum.voters={voters}",
                f"listeners=PLAINTEXT://{h}:{p.kafka(i)},SASL_SSL://{h}:{p.kafka_sasl(i)},"
                f"CONTROLLER://{h}:{p.kafka_controller(i)}",
                f"advertised.listeners=PLAINTEXT://{h}:{p.kafka(i)},"
                f"SASL_SSL://{h}:{p.kafka_sasl(i)}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map="
                "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT,SASL_SSL:SASL_SSL",
                f"sasl.enabled.mechanisms={SCRAM_MECHANISM}",
                "listener.name.sasl_ssl.scram-sha-512.sasl.jaas.config="
                "org.apache.kafka.common.security.scram.ScramLoginModule required;",
                "ssl.keystore.type=PEM",
                f"ssl.keystore.location={broker_pem}",
                f"log.dirs={self.dir / f'node-{i}' / 'data'}",
                "num.partitions=3",
                f"default.replication.factor={rf}",
                f"min.insync.replicas={isr}",
                "auto.create.topics.enable=false",
                f"offsets.topic.replication.factor={rf}",
                f"transaction.state.log.replication.factor={rf}",
                f"transaction.state.log.min.isr={isr}",
                f"share.coordinator.state.topic.replication.factor={rf}",
                f"share.coordinator.state.topic.min.isr={isr}",
                "group.initial.rebalance.delay.ms=0",
                "unclean.leader.election.enable=false",
                "",
            ]
        )

    def _java(self, i: int) -> list[str]:
        jhome = self.ctx.env.get("JAVA_HOME")
        java = str(Path(jhome) / "bin" / "java") if jhome else "java"
        return [
            java,
            "-Xms128m",
            "-Xmx512m",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.dir / 'log4j2.properties'}",
            "-cp",
            str(self.ctx.settings.kafka_jars_dir / "*"),
        ]

    def _prepare(self) -> None:
        import subprocess

        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "log4j2.properties").write_text(_LOG4J2)
        tls = make_tls_material(self.dir / "tls", self.host)
        cluster_file = self.dir / "cluster.id"
        if not cluster_file.exists():
            cluster_file.write_text(new_cluster_id())
        cluster_id = cluster_file.read_text().strip()
        for i in self.nodes():
            node = self.dir / f"node-{i}"
            node.mkdir(parents=True, exist_ok=True)
            props = node / "server.properties"
            props.write_text(self.server_properties(i, tls["broker"]))
            if (node / "data" / "meta.properties").exists():
                continue
            out = subprocess.run(
                [
                    *self._java(i),
                    "kafka.tools.StorageTool",
                    "format",
                    f"--cluster-id={cluster_id}",
                    "-c",
                    str(props),
                ],
                capture_output=True,
                text=True,
                env=self.ctx.env,
            )
            if out.returncode != 0:
                raise ServiceError(
                    f"formatting Kafka node {i} failed: {(out.stderr or out.stdout)[-500:]}"
                )

    def start_node(self, i: int) -> None:
        process.start(
            [*self._java(i), "kafka.Kafka", str(self.dir / f"node-{i}" / "server.properties")],
            pid_file=self.ctx.pid_file(self.proc_name(i)),
            log_file=self.ctx.log_file(self.proc_name(i)),
            env=self.ctx.env,
        )

    def kill_node(self, i: int) -> None:
        """SIGKILL one broker (a crash, not a clean shutdown)."""
        proc = process.find(self.ctx.pid_file(self.proc_name(i)))
        if proc is None:
            raise ServiceError(f"kafka node {i} is not running")
        proc.kill()
        proc.wait(30)

    def start(self) -> None:
        self._prepare()
        for i in self.nodes():
            self.start_node(i)

    def admin(self):
        from confluent_kafka.admin import AdminClient

        return AdminClient(
            {"bootstrap.servers": self.bootstrap, "socket.timeout.ms": 3000, "log_level": 2}
        )

    def health(self) -> Health:
        try:
            md = self.admin().list_topics(timeout=5)
        except Exception as exc:
            return Health(False, str(exc))
        return Health(len(md.brokers) >= self.brokers, f"{len(md.brokers)} broker(s) registered")

    def wait_healthy(self, timeout: float = 120) -> None:
        def check() -> bool:
            dead = [
                i
                for i in self.nodes()
                if process.find(self.ctx.pid_file(self.proc_name(i))) is None
            ]
            if dead:
                name = self.proc_name(dead[0])
                raise ServiceError(f"{name} exited; see {self.ctx.log_file(name)}")
            return self.health().ok

        process.wait_until(check, timeout=timeout, interval=1.0, what="the Kafka cluster")

    def add_scram_user(self, user: str, password: str) -> None:
        """Create (or reset) a SCRAM-SHA-512 user, stored in the cluster's metadata."""
        from confluent_kafka.admin import (
            ScramCredentialInfo,
            ScramMechanism,
            UserScramCredentialUpsertion,
        )

        upsert = UserScramCredentialUpsertion(
            user,
            ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, 8192),
            password.encode(),
        )
        admin = self.admin()  # referenced until the futures resolve
        for future in admin.alter_user_scram_credentials([upsert]).values():
            future.result(30)

    def client_config(self, user: str, password: str) -> dict[str, str]:
        """librdkafka settings of a SCRAM client over TLS (the ``kafka_default`` extra)."""
        return {
            "bootstrap.servers": self.sasl_bootstrap,
            "security.protocol": "SASL_SSL",
            "sasl.mechanism": SCRAM_MECHANISM,
            "sasl.username": user,
            "sasl.password": password,
            "ssl.ca.location": str(self.ca_file),
        }

    def stop(self) -> None:
        for i in reversed(self.nodes()):
            process.stop(self.ctx.pid_file(self.proc_name(i)))
