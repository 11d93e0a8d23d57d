"""The services of the local stack, each a plain process on loopback.

Each service knows how to prepare its state (once), start, report health and stop. State and
logs live under the state directory: ``<state>/<service>/`` and ``<state>/logs/<service>.log``.
"""

from __future__ import annotations

import base64
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import urllib.request
import uuid
from dataclasses import dataclass
from pathlib import Path

import psutil

from devstack import environment, process, supervisor
from devstack.install import postgres_bindir
from devstack.secrets import Secrets
from devstack.settings import ROOT, Settings
from include.airflow_users import write_passwords_file
from include.endpoints import PostgresEndpoint, S3Endpoint


class ServiceError(RuntimeError):
    pass


@dataclass
class Context:
    settings: Settings
    secrets: Secrets
    env: dict[str, str]
    # The tests' and benchmarks' context: their Spark runs, connections and dashboards use the
    # sandbox twins of the S3 users, which write only under it/*/ (stack.context).
    sandbox: bool = False

    def pid_file(self, name: str) -> Path:
        return self.settings.run_dir / f"{name}.pid"

    @property
    def analytics_db(self) -> PostgresEndpoint:
        """The analytics database as its owner (the pipeline's role)."""
        return environment.analytics_db(self.settings, self.secrets)

    @property
    def s3_root(self) -> S3Endpoint:
        """MinIO's root user (what `make up` sets up with, and the tests' own checks)."""
        return environment.s3_root(self.settings, self.secrets)

    def s3(self, conn_id: str) -> S3Endpoint:
        """The S3 user of a pipeline connection (``include/connections.py``), the sandbox's
        twin in a sandbox context."""
        return environment.s3_endpoint(self.settings, self.secrets, conn_id, self.sandbox)

    def log_file(self, name: str) -> Path:
        return self.settings.logs_dir / f"{name}.log"


@dataclass
class Health:
    ok: bool
    detail: str


class Service:
    name: str = ""
    components: tuple[str, ...] = ()  # process names (pid files); default: (name,)

    def ports(self, ctx: Context) -> dict[str, int]:
        return {}

    def procs(self) -> tuple[str, ...]:
        return self.components or (self.name,)

    def running(self, ctx: Context) -> dict[str, psutil.Process | None]:
        return {c: supervisor.running_process(ctx.settings, c) for c in self.procs()}

    def supervised(self, ctx: Context) -> dict[str, supervisor.State | None]:
        """What the process supervisor says about each component (None: never started)."""
        states = supervisor.states(ctx.settings)
        return {c: states.get(c) for c in self.procs()}

    def start(self, ctx: Context) -> None:
        raise NotImplementedError

    def _run(
        self,
        ctx: Context,
        component: str,
        argv: list[str],
        env: dict[str, str],
        *,
        cwd: Path | None = None,
        user: str | None = None,
        stopsignal: str = "TERM",
    ) -> None:
        """Start one component under the stack's process supervisor (devstack/supervisor.py)."""
        program = supervisor.Program(
            name=component,
            argv=argv,
            env=env,
            log_file=ctx.log_file(component),
            cwd=cwd,
            user=user,
            stopsignal=stopsignal,
        )
        supervisor.start(ctx.settings, program, ctx.env["PATH"])

    def health(self, ctx: Context) -> Health:
        raise NotImplementedError

    def stop(self, ctx: Context) -> None:
        for component in reversed(self.procs()):
            supervisor.stop(ctx.settings, component)

    def wait_healthy(self, ctx: Context, timeout: float) -> None:
        def check() -> bool:
            dead = [
                c
                for c, st in self.supervised(ctx).items()
                if st is None or st.state == supervisor.GAVE_UP
            ]
            if dead:
                raise ServiceError(
                    f"{self.name}: process {', '.join(dead)} keeps exiting (the supervisor gave "
                    f"up); see {ctx.log_file(dead[0])}"
                )
            return all(self.running(ctx).values()) and self.health(ctx).ok

        try:
            process.wait_until(
                check, timeout=timeout, interval=1.0, what=f"{self.name} to be healthy"
            )
        except process.ProcessError as exc:
            raise ServiceError(f"{exc}; see {ctx.log_file(self.procs()[0])}") from None


# --------------------------------------------------------------------------- Postgres


def _run_as_postgres_user() -> str | None:
    """Postgres refuses to run as root; as root we run it as the ``postgres`` OS user."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "postgres"],
            check=True,
        )
    return "postgres"


def _traversable_by_others(path: Path) -> bool:
    for parent in [path, *path.parents]:
        if parent.exists() and not os.stat(parent).st_mode & 0o001:
            return False
    return True


class Postgres(Service):
    name = "postgres"

    def ports(self, ctx: Context) -> dict[str, int]:
        return {"pg": ctx.settings.ports.postgres}

    # Resolved paths: the state dir may link to a place the postgres OS user can reach.
    def data_dir(self, ctx: Context) -> Path:
        return ctx.settings.postgres_dir.resolve() / "data"

    def socket_dir(self, ctx: Context) -> Path:
        return ctx.settings.postgres_dir.resolve() / "socket"

    def _prepare(self, ctx: Context, bindir: Path, user: str | None) -> None:
        pg_dir = ctx.settings.postgres_dir
        if user and not pg_dir.exists() and not _traversable_by_others(ctx.settings.state_dir):
            # The postgres OS user cannot reach a state dir under e.g. /root: keep the data
            # where it can, and link it into the state dir.
            outside = Path("/var/lib/rtap") / uuid.uuid5(uuid.NAMESPACE_URL, str(pg_dir)).hex[:12]
            outside.mkdir(parents=True, exist_ok=True)
            os.chmod(outside.parent, 0o755)
            pg_dir.parent.mkdir(parents=True, exist_ok=True)
            pg_dir.symlink_to(outside, target_is_directory=True)
        pg_dir.mkdir(parents=True, exist_ok=True)
        pg_dir = pg_dir.resolve()
        self.socket_dir(ctx).mkdir(parents=True, exist_ok=True)
        if user:
            shutil.chown(pg_dir, user)
            shutil.chown(self.socket_dir(ctx), user)
        if (self.data_dir(ctx) / "PG_VERSION").exists():
            return
        with tempfile.NamedTemporaryFile("w", dir=pg_dir, delete=False) as pw:
            pw.write(ctx.secrets.pg_superuser_password)
        try:
            if user:
                shutil.chown(pw.name, user)
            proc = subprocess.run(
                [
                    str(bindir / "initdb"),
                    "-D",
                    str(self.data_dir(ctx)),
                    "-U",
                    environment.PG_SUPERUSER,
                    f"--pwfile={pw.name}",
                    "--auth=scram-sha-256",
                    "-E",
                    "UTF8",
                    "--locale=C",
                ],
                capture_output=True,
                text=True,
                user=user,
                cwd="/",  # the postgres OS user may not be able to enter our cwd
            )
        finally:
            os.unlink(pw.name)
        if proc.returncode != 0:
            raise ServiceError(f"postgres initdb failed: {proc.stderr.strip()[-500:]}")

    def start(self, ctx: Context) -> None:
        bindir = postgres_bindir()
        if bindir is None:
            raise ServiceError("no PostgreSQL server binaries found; run `make install`")
        user = _run_as_postgres_user()
        self._prepare(ctx, bindir, user)
        log = ctx.log_file(self.name)
        log.parent.mkdir(parents=True, exist_ok=True)
        log.touch()
        argv = [
            str(bindir / "postgres"),
            "-D",
            str(self.data_dir(ctx)),
            "-p",
            str(ctx.settings.ports.postgres),
            "-c",
            f"listen_addresses={ctx.settings.host}",
            "-c",
            f"unix_socket_directories={self.socket_dir(ctx)}",
            "-c",
            "max_connections=200",
            "-c",
            "shared_buffers=128MB",
        ]
        env = environment.service_env(ctx.settings)  # its password lives in its data dir
        # SIGINT: Postgres's "fast" shutdown, clean, without waiting for clients.
        self._run(ctx, self.name, argv, env, user=user, cwd=Path("/"), stopsignal="INT")

    def _connect_superuser(self, ctx: Context, timeout: int = 10, dbname: str = "postgres"):
        import psycopg2

        superuser = environment.superuser_db(ctx.settings, ctx.secrets, dbname)
        return psycopg2.connect(connect_timeout=timeout, **superuser.psycopg2_kwargs())

    def health(self, ctx: Context) -> Health:
        import psycopg2

        try:
            self._connect_superuser(ctx, timeout=3).close()
            return Health(True, "accepting connections")
        except psycopg2.Error as exc:
            return Health(False, str(exc).strip().splitlines()[0] if str(exc) else "not ready")

    def bootstrap(self, ctx: Context) -> None:
        """Create (or update) the roles and databases; idempotent."""
        from psycopg2 import sql

        conn = self._connect_superuser(ctx)
        conn.autocommit = True
        roles = {
            environment.AIRFLOW_DB_USER: (ctx.secrets.airflow_db_password, environment.AIRFLOW_DB),
            environment.ANALYTICS_DB_USER: (ctx.secrets.pg_password, environment.ANALYTICS_DB),
        }
        with conn.cursor() as cur:
            for role, (password, db) in roles.items():
                cur.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,))
                verb = "ALTER" if cur.fetchone() else "CREATE"
                cur.execute(
                    sql.SQL(verb + " ROLE {} WITH LOGIN PASSWORD %s").format(sql.Identifier(role)),
                    (password,),
                )
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (db,))
                if not cur.fetchone():
                    cur.execute(
                        sql.SQL("CREATE DATABASE {} OWNER {}").format(
                            sql.Identifier(db), sql.Identifier(role)
                        )
                    )
                # Only its owner (and roles granted it by name: the dashboard's) may connect:
                # Postgres lets every role connect to every database unless told otherwise.
                cur.execute(
                    sql.SQL("REVOKE CONNECT, TEMPORARY ON DATABASE {} FROM PUBLIC").format(
                        sql.Identifier(db)
                    )
                )
        conn.close()
        self._grant_dashboard(ctx)
        self._migrate(ctx)

    def _migrate(self, ctx: Context) -> None:
        """The analytics schema's migrations (``include/analytics/migrations``), applied as
        its owner so that the dashboard role's default privileges cover the tables."""
        from include.analytics import migrations, store

        conn = store.connect(ctx.analytics_db)
        try:
            migrations.migrate(conn, "public")
        finally:
            conn.close()

    def _grant_dashboard(self, ctx: Context) -> None:
        """The dashboard's role reads the analytics database and cannot write: SELECT on every
        table the pipeline's role has created or will create, in any schema (tests use their
        own), and read-only transactions by default."""
        from psycopg2 import sql

        reader = sql.Identifier(environment.DASHBOARD_DB_USER)
        owner = sql.Identifier(environment.ANALYTICS_DB_USER)
        conn = self._connect_superuser(ctx)
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (environment.DASHBOARD_DB_USER,)
            )
            verb = "ALTER" if cur.fetchone() else "CREATE"
            cur.execute(
                sql.SQL(
                    verb + " ROLE {} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD %s"
                ).format(reader),
                (ctx.secrets.dashboard_db_password,),
            )
            cur.execute(
                sql.SQL("ALTER ROLE {} SET default_transaction_read_only = on").format(reader)
            )
            cur.execute(
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                    sql.Identifier(environment.ANALYTICS_DB), reader
                )
            )
        conn.close()
        conn = self._connect_superuser(ctx, dbname=environment.ANALYTICS_DB)
        conn.autocommit = True
        with conn.cursor() as cur:
            for what in ("USAGE ON SCHEMAS", "SELECT ON TABLES"):
                cur.execute(
                    sql.SQL("ALTER DEFAULT PRIVILEGES FOR ROLE {} GRANT " + what + " TO {}").format(
                        owner, reader
                    )
                )
            cur.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname = 'public' "
                "OR nspowner = (SELECT oid FROM pg_roles WHERE rolname = %s)",
                (environment.ANALYTICS_DB_USER,),
            )
            for (schema,) in cur.fetchall():
                name = sql.Identifier(schema)
                cur.execute(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(name, reader))
                cur.execute(
                    sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(name, reader)
                )
        conn.close()


# --------------------------------------------------------------------------- S3 (MinIO)


class S3Server(Service):
    name = "minio"

    def ports(self, ctx: Context) -> dict[str, int]:
        return {"s3": ctx.settings.ports.s3, "console": ctx.settings.ports.s3_console}

    def start(self, ctx: Context) -> None:
        binary = ctx.settings.minio_binary
        if not binary.exists():
            raise ServiceError("MinIO is not built yet; run `make install`")
        data = ctx.settings.s3_data_dir
        data.mkdir(parents=True, exist_ok=True)
        env = environment.service_env(
            ctx.settings,
            MINIO_ROOT_USER=ctx.secrets.s3_access_key,
            MINIO_ROOT_PASSWORD=ctx.secrets.s3_secret_key,
            MINIO_UPDATE="off",
            MINIO_BROWSER_REDIRECT="off",
        )
        s = ctx.settings
        argv = [
            str(binary),
            "server",
            str(data),
            "--quiet",
            "--address",
            f"{s.host}:{s.ports.s3}",
            "--console-address",
            f"{s.host}:{s.ports.s3_console}",
        ]
        self._run(ctx, self.name, argv, env)

    def health(self, ctx: Context) -> Health:
        url = f"{ctx.settings.s3_endpoint}/minio/health/live"
        try:
            with urllib.request.urlopen(url, timeout=3) as resp:
                return Health(resp.status == 200, f"HTTP {resp.status}")
        except OSError as exc:
            return Health(False, str(exc))

    def bootstrap(self, ctx: Context) -> None:
        """The bucket and one S3 user per role (include/lake/provision.py, shared with
        compose's minio-init), and each role's sandbox twin: the same policy under the tests'
        and benchmarks' sandbox root (``it/*/``) only, so their Spark runs go through the
        pipeline's policies while the real users have no grant there."""
        from minio import MinioAdmin
        from minio.credentials import StaticProvider

        from include.lake.provision import ROLES, provision
        from include.lake.s3 import SANDBOX_ROOT

        s, sec = ctx.settings, ctx.secrets
        admin = MinioAdmin(
            endpoint=f"{s.host}:{s.ports.s3}",
            credentials=StaticProvider(sec.s3_access_key, sec.s3_secret_key),
            secure=False,
        )
        keys = {role.name: sec.s3_keys(role.name) for role in ROLES}
        twins = {role.name: sec.s3_keys(role.name, sandbox=True) for role in ROLES}
        provision(admin, ctx.s3_root.client(), s.bucket, keys, sandbox=(SANDBOX_ROOT, twins))


# --------------------------------------------------------------------------- the stream's S3 link

STREAM_S3_LINK = "stream_s3"  # Toxiproxy's proxy between the stream (lake_s3) and MinIO
PARTITION_TOXICS = ("partition_upstream", "partition_downstream")
HEAL_TIMEOUT_S = 300.0  # a partition's removal, flushing what it held (see S3Link.heal)


class S3Link(Service):
    """Toxiproxy in front of MinIO for the stream's connection only (``lake_s3``): a plain TCP
    relay until the chaos soak adds a toxic. A partition holds every byte both ways (no reset,
    no error: the silent peer a cut network is) and delivers them when healed."""

    name = "toxiproxy"

    def ports(self, ctx: Context) -> dict[str, int]:
        return {"s3 link": ctx.settings.ports.s3_link, "api": ctx.settings.ports.toxiproxy}

    def start(self, ctx: Context) -> None:
        s = ctx.settings
        binary = s.toxiproxy_binary
        if not binary.exists():
            raise ServiceError("Toxiproxy is not built yet; run `make install`")
        config = s.state_dir / "toxiproxy" / "proxies.json"
        config.parent.mkdir(parents=True, exist_ok=True)
        link = {
            "name": STREAM_S3_LINK,
            "listen": f"{s.host}:{s.ports.s3_link}",
            "upstream": f"{s.host}:{s.ports.s3}",
            "enabled": True,
        }
        config.write_text(json.dumps([link]))
        argv = [str(binary), "-host", s.host, "-port", str(s.ports.toxiproxy), "-config"]
        env = environment.service_env(s, LOG_LEVEL="warn")
        self._run(ctx, self.name, [*argv, str(config)], env)

    def api(
        self, ctx: Context, method: str, path: str, body: dict | None = None, timeout: float = 5
    ) -> dict:
        req = urllib.request.Request(
            f"{ctx.settings.toxiproxy_url}{path}",
            data=json.dumps(body).encode() if body is not None else None,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            raw = resp.read()
        return json.loads(raw) if raw.strip() else {}

    def health(self, ctx: Context) -> Health:
        try:
            link = self.api(ctx, "GET", "/proxies").get(STREAM_S3_LINK)
        except OSError as exc:
            return Health(False, str(exc))
        if not link or not link.get("enabled"):
            return Health(False, f"no enabled proxy {STREAM_S3_LINK!r}")
        toxics = [t["name"] for t in link.get("toxics", [])]
        return Health(
            True,
            f"{link['listen']} -> {link['upstream']}"
            + (f" (toxics: {', '.join(toxics)})" if toxics else ""),
        )

    def partition(self, ctx: Context, link: str = STREAM_S3_LINK) -> None:
        """Cut the stream from S3: nothing passes either way until :meth:`heal`."""
        for name, stream in zip(PARTITION_TOXICS, ("upstream", "downstream"), strict=True):
            self.api(
                ctx,
                "POST",
                f"/proxies/{link}/toxics",
                # a latency longer than any partition, taken away by heal(): data is held,
                # never dropped (Toxiproxy's latency toxic flushes what it holds on removal)
                {
                    "name": name,
                    "type": "latency",
                    "stream": stream,
                    "attributes": {"latency": 24 * 3600 * 1000},
                },
            )

    def heal(self, ctx: Context, link: str = STREAM_S3_LINK) -> None:
        """Take the partition away, the held responses first: they answer requests sent before
        the cut, so few are held. Toxiproxy flushes a removed toxic's bytes and, for a client
        that hung up meanwhile, gives up on each held chunk only after 5 s (its ``WriteOutput``
        timeout; issues #412, #558): removing the requests' side first would send them to S3
        and hold every answer behind the other toxic, each a 5 s stall for a timed-out
        client. The API answers a removal when the flush ends, so it is given minutes."""
        proxy = self.api(ctx, "GET", "/proxies").get(link) or {}
        held = {toxic["name"] for toxic in proxy.get("toxics", [])}
        for name in reversed(PARTITION_TOXICS):  # partition_downstream first
            if name in held:
                self.api(ctx, "DELETE", f"/proxies/{link}/toxics/{name}", timeout=HEAL_TIMEOUT_S)


# --------------------------------------------------------------------------- Kafka (KRaft)

_LOG4J2 = """\
status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = info
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = warn
logger.apache.name = org.apache.kafka
logger.apache.level = warn
logger.state.name = state.change.logger
logger.state.level = warn
"""


def new_cluster_id() -> str:
    """A KRaft cluster id: 16 random bytes, URL-safe base64 without padding.

    Like Kafka's own ``Uuid.randomUuid`` it never starts with ``-``: an id that did would
    read as an option to ``kafka-storage format`` (one fresh stack in 64 failed that way).
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class Kafka(Service):
    name = "kafka"

    def ports(self, ctx: Context) -> dict[str, int]:
        return {
            "broker": ctx.settings.ports.kafka,
            "controller": ctx.settings.ports.kafka_controller,
        }

    def server_properties(self, ctx: Context) -> str:
        s = ctx.settings
        data = s.kafka_dir / "data"
        return "\n".join(
            [
                "process.roles=broker,controller",
                "node.id=1",
                f"controller.quorum.bootstrap.servers={s.host}:{s.ports.kafka_controller}",
                f"listeners=PLAINTEXT://{s.host}:{s.ports.kafka},CONTROLLER://{s.host}:{s.ports.kafka_controller}",
                f"advertised.listeners=PLAINTEXT://{s.host}:{s.ports.kafka}",
                "controller.listener.names=CONTROLLER",
                "inter.broker.listener.name=PLAINTEXT",
                "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
                f"log.dirs={data}",
                "num.partitions=3",
                "auto.create.topics.enable=false",
                # Single node: internal topics must not ask for more replicas than exist.
                "offsets.topic.replication.factor=1",
                "transaction.state.log.replication.factor=1",
                "transaction.state.log.min.isr=1",
                "share.coordinator.state.topic.replication.factor=1",
                "share.coordinator.state.topic.min.isr=1",
                "group.initial.rebalance.delay.ms=0",
                "",
            ]
        )

    def _java(self, ctx: Context) -> list[str]:
        jhome = ctx.env.get("JAVA_HOME")
        java = str(Path(jhome) / "bin" / "java") if jhome else "java"
        return [
            java,
            "-Xms256m",
            "-Xmx1g",
            "-XX:+UseG1GC",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={ctx.settings.kafka_dir / 'log4j2.properties'}",
            "-cp",
            str(ctx.settings.kafka_jars_dir / "*"),
        ]

    def start(self, ctx: Context) -> None:
        kdir = ctx.settings.kafka_dir
        kdir.mkdir(parents=True, exist_ok=True)
        props = kdir / "server.properties"
        props.write_text(self.server_properties(ctx))
        (kdir / "log4j2.properties").write_text(_LOG4J2)
        if not (kdir / "data" / "meta.properties").exists():
            out = subprocess.run(
                [
                    *self._java(ctx),
                    "kafka.tools.StorageTool",
                    "format",
                    "--standalone",
                    f"--cluster-id={new_cluster_id()}",
                    "-c",
                    str(props),
                ],
                capture_output=True,
                text=True,
                env=ctx.env,
            )
            if out.returncode != 0:
                raise ServiceError(
                    f"formatting Kafka storage failed: {(out.stderr or out.stdout)[-500:]}"
                )
        # Only what a JVM needs: the broker holds no credential of the stack.
        jhome = {"JAVA_HOME": ctx.env["JAVA_HOME"]} if ctx.env.get("JAVA_HOME") else {}
        env = environment.service_env(ctx.settings, **jhome)
        self._run(ctx, self.name, [*self._java(ctx), "kafka.Kafka", str(props)], env)

    def health(self, ctx: Context) -> Health:
        from confluent_kafka.admin import AdminClient

        try:
            admin = AdminClient(
                {
                    "bootstrap.servers": ctx.settings.kafka_bootstrap,
                    "socket.timeout.ms": 3000,
                    "log_level": 2,
                }
            )  # quiet "connection refused" while it starts
            md = admin.list_topics(timeout=3)
            return Health(
                bool(md.brokers), f"{len(md.brokers)} broker(s), {len(md.topics)} topic(s)"
            )
        except Exception as exc:
            return Health(False, str(exc))


# --------------------------------------------------------------------------- Airflow


class Airflow(Service):
    name = "airflow"
    components = tuple(environment.AIRFLOW_COMPONENT_SECRETS)  # the API server first

    def ports(self, ctx: Context) -> dict[str, int]:
        return {"api/ui": ctx.settings.ports.airflow}

    def _airflow(self) -> str:
        return str(environment.venv_bin() / "airflow")

    def migrate(self, ctx: Context) -> None:
        home = ctx.settings.airflow_home
        home.mkdir(parents=True, exist_ok=True)
        write_passwords_file(home / "passwords.json", ctx.secrets.airflow_passwords())
        log = ctx.log_file("airflow-db-migrate")
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "w") as fh:
            rc = subprocess.run(
                [self._airflow(), "db", "migrate"], stdout=fh, stderr=subprocess.STDOUT, env=ctx.env
            ).returncode
        if rc != 0:
            raise ServiceError(f"`airflow db migrate` failed; see {log}")

    def start(self, ctx: Context) -> None:
        self.migrate(ctx)
        environment.write_airflow_secrets(ctx.settings, ctx.secrets, base=ctx.env)
        base = dict(ctx.env, AIRFLOW__API__WORKERS="1")
        for component in self.components:
            env = environment.airflow_component_env(ctx.settings, ctx.secrets, component, base)
            sub = component.removeprefix("airflow-")
            self._run(ctx, component, [self._airflow(), sub], env, cwd=ctx.settings.airflow_home)

    def health(self, ctx: Context) -> Health:
        url = f"{ctx.settings.airflow_url}/api/v2/monitor/health"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                body = json.loads(resp.read())
        except (OSError, ValueError) as exc:
            return Health(False, str(exc))
        states = {k: (v or {}).get("status") for k, v in body.items()}
        ok = all(s == "healthy" for s in states.values())
        return Health(ok, ", ".join(f"{k}={v}" for k, v in states.items()))


# --------------------------------------------------------------------------- Dashboard


class Dashboard(Service):
    """The analysts' dashboard (Streamlit, dashboard/app.py) with read-only credentials."""

    name = "dashboard"

    def ports(self, ctx: Context) -> dict[str, int]:
        return {"http": ctx.settings.ports.dashboard}

    def argv(self, ctx: Context, port: int | None = None) -> list[str]:
        s = ctx.settings
        return [
            str(environment.venv_bin() / "streamlit"),
            "run",
            str(ROOT / "dashboard" / "app.py"),
            "--server.address",
            s.host,
            "--server.port",
            str(port or s.ports.dashboard),
            "--server.headless",
            "true",
            "--server.fileWatcherType",
            "none",
            "--browser.gatherUsageStats",
            "false",
            "--client.toolbarMode",
            "minimal",
        ]

    def env(self, ctx: Context, **overrides: str) -> dict[str, str]:
        """Only what the dashboard needs: no secret of the stack beyond its own read-only ones."""
        env = {
            "PATH": ctx.env["PATH"],
            "HOME": ctx.env.get("HOME", "/tmp"),
            "PYTHONPATH": str(ROOT),
            "PYTHONUNBUFFERED": "1",
            "RTAP_STATE_DIR": str(ctx.settings.state_dir),  # `make stop` finds leftovers by it
        }
        env.update(environment.dashboard_env(ctx.settings, ctx.secrets, sandbox=ctx.sandbox))
        env.update(overrides)
        return env

    def start(self, ctx: Context) -> None:
        self._run(ctx, self.name, self.argv(ctx), self.env(ctx), cwd=ROOT)

    def health(self, ctx: Context) -> Health:
        return streamlit_health(ctx.settings.dashboard_url)


def streamlit_health(base_url: str) -> Health:
    try:
        with urllib.request.urlopen(f"{base_url}/_stcore/health", timeout=3) as resp:
            body = resp.read().decode().strip()
            return Health(resp.status == 200 and body == "ok", f"HTTP {resp.status} {body}")
    except OSError as exc:
        return Health(False, str(exc))


# Start order; stop runs in reverse.
ALL: tuple[Service, ...] = (Postgres(), S3Server(), S3Link(), Kafka(), Airflow(), Dashboard())
