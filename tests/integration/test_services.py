"""Each service of the stack answers and does its job (no fakes)."""

from __future__ import annotations

import json
import os
import signal
import socket
import time
import urllib.error
import urllib.request
import uuid
from datetime import datetime

import psutil
import pytest
from confluent_kafka import Consumer, TopicPartition

from devstack import environment, process
from devstack.airflow_api import AirflowApi, AirflowApiError
from include import connections
from include.analytics import store
from include.events import contract
from include.events.generator import generate
from include.events.producer import produce
from include.events.runs import id_digest
from tests.integration.conftest import s3


def test_generator_record_matches_what_is_in_the_topic(ctx, sandbox):
    events = generate(3_000, seed=11, bad_share=0.1, irrelevant_share=0.05, duplicate_share=0.02)
    record = produce(events, topic=sandbox.topic, bootstrap_servers=ctx.settings.kafka_bootstrap)
    assert record.events == 3_000 and sum(record.by_partition.values()) == 3_000

    consumer = Consumer(
        {
            "bootstrap.servers": ctx.settings.kafka_bootstrap,
            "group.id": f"it-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    # The record's per-partition counts are the topic's end offsets (a fresh topic).
    for partition, count in record.by_partition.items():
        low, high = consumer.get_watermark_offsets(
            TopicPartition(sandbox.topic, partition), timeout=10
        )
        assert (low, high) == (0, count)
    consumer.subscribe([sandbox.topic])
    messages = []
    try:
        while len(messages) < 3_000:
            batch = consumer.consume(1000, timeout=5.0)
            assert batch, f"only {len(messages)} of 3000 messages came back"
            messages += [m for m in batch if m.error() is None]
    finally:
        consumer.close()
    assert len(messages) == 3_000
    assert sorted(m.value() for m in messages) == sorted(e.value for e in events)
    for m in messages:
        try:
            body = json.loads(m.value())
        except ValueError:
            continue
        etype = body.get("event_type")
        if etype in set(contract.EventType) and not set(
            contract.required_fields(contract.EventType(etype))
        ) - set(body):
            assert m.key().decode() == body["user_id"], "key is the user id"
    landable_ids = [e.event_id for e in events if e.kind in ("valid", "irrelevant")]
    assert id_digest(landable_ids) == record.id_digest
    assert record.valid == len(set(landable_ids))


def test_s3_server_stores_and_lists_objects(ctx, sandbox):
    client = s3(ctx)
    key = f"{sandbox.prefix}/hello.txt"
    client.put_object(Bucket=ctx.settings.bucket, Key=key, Body=b"hello")
    assert client.get_object(Bucket=ctx.settings.bucket, Key=key)["Body"].read() == b"hello"


def test_postgres_databases_and_roles(ctx):
    conn = store.connect(ctx.analytics_db)
    with conn.cursor() as cur:
        cur.execute("SELECT datname FROM pg_database ORDER BY 1")
        dbs = {r[0] for r in cur.fetchall()}
    conn.close()
    assert {environment.AIRFLOW_DB, environment.ANALYTICS_DB} <= dbs


def test_airflow_login_works_and_wrong_password_is_refused(ctx):
    api = AirflowApi(
        ctx.settings.airflow_url, environment.AIRFLOW_ADMIN_USER, ctx.secrets.airflow_admin_password
    )
    api.login()
    assert {"kafka_topics", "stream_events"} <= {
        d["dag_id"] for d in api.get("/api/v2/dags")["dags"]
    }
    with pytest.raises(AirflowApiError, match="HTTP 401"):
        AirflowApi(
            ctx.settings.airflow_url, environment.AIRFLOW_ADMIN_USER, "wrong-password"
        ).login()
    with urllib.request.urlopen(
        ctx.settings.airflow_url + "/api/v2/monitor/health", timeout=10
    ) as resp:
        health = json.loads(resp.read())
    assert health["scheduler"]["status"] == "healthy"
    with pytest.raises(urllib.error.HTTPError):
        urllib.request.urlopen(ctx.settings.airflow_url + "/api/v2/dags", timeout=10)


def test_each_airflow_user_does_what_its_role_allows_and_audits_name_it(ctx, sandbox):
    """Three users, three roles (include/airflow_users.py): the viewer reads and cannot trigger;
    the operator triggers stream_control but cannot read connections (they hold credentials);
    the stream_control run the operator triggered records "operator" as who stopped the
    stream. The run is executed with `airflow tasks test` on the run the API created (the DAG
    stays paused, so the scheduler never runs it beside the other tests' runs)."""
    import subprocess

    from include import pipeline
    from include.airflow_users import OPERATOR_USER, VIEWER_USER
    from include.supervision import control, lease

    url, passwords = ctx.settings.airflow_url, ctx.secrets.airflow_passwords()
    admin = AirflowApi(url, environment.AIRFLOW_ADMIN_USER, passwords["admin"])
    operator = AirflowApi(url, OPERATOR_USER, passwords[OPERATOR_USER])
    viewer = AirflowApi(url, VIEWER_USER, passwords[VIEWER_USER])
    conf = {
        "action": "stop",
        "reason": "role test",
        "wait_s": 0,
        **sandbox.supervision_conf(ctx.settings.bucket, topic=sandbox.topic),
    }
    assert "stream_control" in {d["dag_id"] for d in viewer.get("/api/v2/dags")["dags"]}
    with pytest.raises(AirflowApiError, match="HTTP 403"):
        viewer.trigger("stream_control", conf)
    with pytest.raises(AirflowApiError, match="HTTP 403"):
        operator.get("/api/v2/connections")
    assert "connections" in admin.get("/api/v2/connections")
    # Paused while the test runs it (a chaos soak on this stack leaves the operator DAGs on):
    # the scheduler must not run the triggered run beside `airflow tasks test`.
    was_paused = admin.dag("stream_control")["is_paused"]
    admin.pause("stream_control")

    run_id = operator.trigger("stream_control", conf)
    try:
        assert operator.run("stream_control", run_id)["triggering_user_name"] == OPERATOR_USER
        airflow = str(environment.venv_bin() / "airflow")
        done = subprocess.run(
            [airflow, "tasks", "test", "stream_control", "operate", run_id],
            env=ctx.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    finally:
        admin.delete_run("stream_control", run_id)
        if not was_paused:
            admin.unpause("stream_control")
    conn = store.connect(ctx.analytics_db, schema=sandbox.pg_schema)
    try:
        name = lease.lease_name(pipeline.s3a(ctx.settings.bucket, sandbox.checkpoint_prefix))
        state = control.get(conn, name)
    finally:
        conn.close()
    assert (state.state, state.set_by, state.reason) == (
        control.STOPPED,
        OPERATOR_USER,
        "role test",
    )


@pytest.mark.parametrize(
    ("who", "writes", "denied"),
    [
        ("stream", ("raw/events", "dead_letter/events", "_checkpoints/x"), ("warehouse",)),
        ("warehouse", ("warehouse",), ("raw/events", "dead_letter/events", "_checkpoints/x")),
    ],
)
def test_the_pipelines_s3_users_write_only_their_prefixes(ctx, sandbox, who, writes, denied):
    """The Airflow connections' S3 users (the stream's, the compaction's; here their sandbox
    twins, with which the rest of the suite runs the pipeline): each reads the bucket and writes
    only its own prefixes (test_access.py tries the real users too)."""
    from botocore.exceptions import ClientError

    conn_id = {"stream": connections.S3, "warehouse": connections.WAREHOUSE_S3}[who]
    client = ctx.s3(conn_id).client()
    bucket = ctx.settings.bucket
    for prefix in writes:
        key = f"{sandbox.prefix}/{prefix}/probe-{who}"
        client.put_object(Bucket=bucket, Key=key, Body=b"x")
        assert client.get_object(Bucket=bucket, Key=key)["Body"].read() == b"x"
        client.delete_object(Bucket=bucket, Key=key)
    for prefix in denied:
        for key in (f"{sandbox.prefix}/{prefix}/probe-{who}", f"{prefix}/probe-{who}"):
            with pytest.raises(ClientError, match="AccessDenied"):
                client.put_object(Bucket=bucket, Key=key, Body=b"x")
    with pytest.raises(ClientError, match="AccessDenied"):
        client.put_object(Bucket=bucket, Key=f"elsewhere/probe-{who}", Body=b"x")
    client.list_objects_v2(Bucket=bucket, Prefix=sandbox.prefix + "/", MaxKeys=1)


def test_a_killed_scheduler_is_restarted_by_the_process_supervisor(ctx):
    """SIGKILL the Airflow scheduler: supervisord starts a new one by its restart policy, what
    the dead one left (its executor's workers) is ended, Airflow reports the scheduler healthy
    again and `make status` shows the new process."""
    from devstack import stack, supervisor

    before = supervisor.states(ctx.settings)["airflow-scheduler"]
    assert before.state == supervisor.RUNNING and before.pid > 0
    assert os.getpgid(before.pid) == before.pid  # its own process group, as the reaper expects
    left_behind = psutil.Process(before.pid).children(recursive=True)
    assert left_behind  # the executor's workers, the log server

    killed_at = time.time()
    os.kill(before.pid, signal.SIGKILL)
    after = supervisor.wait_started(ctx.settings, "airflow-scheduler", since=killed_at, timeout=120)
    assert after.pid != before.pid

    _, alive = psutil.wait_procs(left_behind, timeout=60)
    assert not alive, [p.pid for p in alive]

    def scheduler_healthy() -> bool:
        with urllib.request.urlopen(
            ctx.settings.airflow_url + "/api/v2/monitor/health", timeout=10
        ) as resp:
            health = json.loads(resp.read())
        beat = health["scheduler"]["latest_scheduler_heartbeat"]
        return health["scheduler"]["status"] == "healthy" and (
            datetime.fromisoformat(beat).timestamp() >= killed_at
        )

    process.wait_until(scheduler_healthy, timeout=120, what="a scheduler heartbeat after the kill")
    rows = {r.component: r for r in stack.status_rows(ctx)}
    assert rows["airflow-scheduler"].pid == str(after.pid)
    assert rows["airflow-scheduler"].supervisor.startswith("RUNNING (uptime")


# The credentials each supervised service may hold in its environment (devstack/secrets.py names
# them). Airflow's services hold none: each reads its role's secrets from private files, the API
# server alone the connections (devstack/environment.py AIRFLOW_COMPONENT_SECRETS); the
# scheduler's LocalExecutor workers, forked from it, are in its group and checked with it: the
# tasks they run inherit exactly their environment.
NEEDS = {
    **{component: set() for component in environment.AIRFLOW_COMPONENT_SECRETS},
    "postgres": set(),  # its superuser password lives in its data directory
    "kafka": set(),
    "minio": {"s3_access_key", "s3_secret_key"},
    "toxiproxy": set(),  # it relays the stream's bytes to MinIO, signing nothing
    "dashboard": {"dashboard_db_password", "dashboard_s3_access_key", "dashboard_s3_secret_key"},
}


def test_each_service_holds_only_its_own_credentials(ctx):
    """Each service's environment (what the process supervisor starts it with, and
    /proc/<pid>/environ of each of its processes, children included: the scheduler's task
    workers) and the supervisor's own: no credential of the stack but the service's, no
    connection outside the API server. Every process's command line: none at all. (That the
    tasks get their connections from the API server is shown by every scheduler-run stream:
    the chaos soak's and `make run`'s.)

    A process that sets its title (Airflow's, through setproctitle) writes the title over its
    environment block, so /proc shows it empty: for those the environment they were started
    with is the evidence (the supervisor's program spec; a forked worker inherits its parent's)."""
    from dataclasses import asdict

    from devstack import services, supervisor

    secrets = {k: v for k, v in asdict(ctx.secrets).items() if len(v) >= 8}

    def held(text: str) -> set[str]:
        return {k for k, v in secrets.items() if v in text}

    def check(component: str, where: object, environ: dict[str, str]) -> None:
        extra = held("\n".join(f"{k}={v}" for k, v in environ.items())) - NEEDS[component]
        assert not extra, (component, where, sorted(extra))
        conns = [k for k in environ if k.startswith("AIRFLOW_CONN_")]
        assert not conns, (component, where, conns)
        serves = "AIRFLOW__SECRETS__BACKEND" in environ
        assert serves == (component == environment.CONNECTIONS_HOLDER), (component, where)

    checked, titled, task_workers = 0, 0, 0
    for svc in services.ALL:
        for component, proc in svc.running(ctx).items():
            assert proc is not None, component
            spec = json.loads(supervisor.spec_path(ctx.settings, component).read_text())
            check(component, "started with", spec["env"])
            for p in process.group_members(proc):
                argv = " ".join(p.cmdline())
                assert not held(argv), (component, p.pid, sorted(held(argv)))
                task_workers += "LocalExecutor" in argv
                environ = p.environ()
                if environ:
                    check(component, p.pid, environ)
                    checked += 1
                else:
                    titled += 1
    assert task_workers > 0  # the processes that run the tasks were among those seen
    assert checked >= len(NEEDS) and titled > 0
    daemon = process.find(supervisor.pid_file(ctx.settings))
    assert daemon is not None
    listener = [c for c in daemon.children() if "reap.py" in " ".join(c.cmdline())]
    assert len(listener) == 1
    for p in (daemon, *listener):
        assert not held("\n".join(f"{k}={v}" for k, v in p.environ().items()))


def test_the_streams_s3_link_partitions_holding_every_byte_then_heals(ctx, sandbox):
    """The stream reaches S3 through Toxiproxy (its ``lake_s3`` connection names the link);
    a partition (the chaos soak's lever, on a link of this test's own so the stream's is not
    touched) answers nothing, loses nothing, and a request caught in it completes on healing."""
    import threading

    from botocore.config import Config
    from botocore.exceptions import ReadTimeoutError

    from devstack.services import STREAM_S3_LINK, S3Link
    from include.endpoints import S3Endpoint

    link = S3Link()
    env = environment.connection_env(ctx.settings, ctx.secrets)
    stream = json.loads(env[f"AIRFLOW_CONN_{connections.S3.upper()}"])
    assert stream["extra"]["endpoint_url"] == ctx.settings.stream_s3_endpoint
    proxies = link.api(ctx, "GET", "/proxies")
    assert proxies[STREAM_S3_LINK]["upstream"].endswith(f":{ctx.settings.ports.s3}")

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    name = f"it-{sandbox.id}"
    upstream = f"{ctx.settings.host}:{ctx.settings.ports.s3}"
    link.api(
        ctx,
        "POST",
        "/proxies",
        {"name": name, "listen": f"127.0.0.1:{port}", "upstream": upstream, "enabled": True},
    )
    try:
        user = ctx.s3(connections.S3)  # the sandbox's twin: it writes under it/<id>/
        endpoint = S3Endpoint(f"http://127.0.0.1:{port}", user.access_key, user.secret_key)
        key, body = f"{sandbox.prefix}/raw/events/link-probe", os.urandom(256 * 1024)
        client = endpoint.client()
        client.put_object(Bucket=ctx.settings.bucket, Key=key, Body=body)

        link.partition(ctx, name)
        impatient = _s3_client(endpoint, Config(read_timeout=2, retries={"max_attempts": 1}))
        with pytest.raises(ReadTimeoutError):
            impatient.get_object(Bucket=ctx.settings.bucket, Key=key)["Body"].read()
        got: dict = {}
        caught = threading.Thread(
            target=lambda: got.update(
                body=client.get_object(Bucket=ctx.settings.bucket, Key=key)["Body"].read()
            )
        )
        caught.start()
        caught.join(timeout=3)
        assert caught.is_alive() and not got  # held by the partition, not refused
        link.heal(ctx, name)
        caught.join(timeout=30)
        assert got.get("body") == body
        assert not link.api(ctx, "GET", "/proxies")[name]["toxics"]
    finally:
        link.api(ctx, "DELETE", f"/proxies/{name}")


def _s3_client(endpoint, config):
    import boto3

    return boto3.client(
        "s3",
        endpoint_url=endpoint.endpoint_url,
        aws_access_key_id=endpoint.access_key,
        aws_secret_access_key=endpoint.secret_key,
        region_name=endpoint.region,
        config=config.merge(type(config)(s3={"addressing_style": "path"})),
    )
