"""The analysts' dashboard end to end, in a real headless Chromium (Debian's ``chromium``,
driven by Playwright) against the running stack.

The dashboard runs as the devstack starts it (read-only Postgres role and S3 user) but on this
test's sandbox: its Postgres schema (through a TCP proxy the test can cut, to play a database
outage) and its warehouse. Events are produced to the sandbox topic, a real stream lands and
aggregates them, the health DAG checks the stream and the nightly compaction app builds the
marts; the pages must show exactly those numbers, refresh by themselves and recover from the
outage. Screenshots go to ``<state>/screenshots/`` (ignored by git).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import psycopg2
import pytest

from devstack import environment
from devstack.demo import api as airflow_api
from devstack.install import chromium_binary
from devstack.services import Dashboard, streamlit_health
from devstack.spark import compact, submit_argv, submit_env
from include import pipeline
from include.analytics import store
from include.events.catalog import build_catalog, usd_value
from include.events.generator import generate
from include.events.producer import produce
from include.events.tally import Tally
from include.spark.jobs import CompactJob
from tests.integration.conftest import airflow_dags_test, spawn, stop_group
from tests.integration.conftest import s3 as root_s3

WINDOW = "last 60 min"


class TcpProxy:
    """Forwards a loopback port to Postgres; ``cut()`` closes it and every open connection
    (the database is "down" for the dashboard), ``restore()`` listens again on the same port."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self._server: socket.socket | None = None
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()

    def restore(self) -> None:
        server = socket.socket()
        server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        server.bind(("127.0.0.1", self.port))
        server.listen(16)
        self._server = server
        threading.Thread(target=self._accept, args=(server,), daemon=True).start()

    def cut(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()
        with self._lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
            self._conns.clear()

    def _accept(self, server: socket.socket) -> None:
        while True:
            try:
                client, _ = server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.target, timeout=10)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def dashboard(ctx, sandbox):
    """The dashboard on this sandbox: (its URL, the proxy in front of its database)."""
    proxy = TcpProxy((ctx.settings.host, ctx.settings.ports.postgres))
    proxy.restore()
    port = free_port()
    svc = Dashboard()
    env = svc.env(
        ctx,
        RTAP_DASHBOARD_PG_PORT=str(proxy.port),
        RTAP_DASHBOARD_PG_SCHEMA=sandbox.pg_schema,
        RTAP_DASHBOARD_WAREHOUSE=f"s3://{ctx.settings.bucket}/{sandbox.prefix}/warehouse",
    )
    assert not any(k.startswith(("AIRFLOW", "AWS_")) for k in env), "only its own credentials"
    proc = spawn(ctx, svc.argv(ctx, port), env, f"dashboard-{sandbox.id}.log")
    url = f"http://{ctx.settings.host}:{port}"
    try:
        deadline = time.monotonic() + 60
        while not streamlit_health(url).ok:
            assert proc.poll() is None, "the dashboard exited; see its log"
            assert time.monotonic() < deadline, "the dashboard did not become healthy"
            time.sleep(0.5)
        yield url, proxy
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
        proxy.cut()


@pytest.fixture
def browser_page(ctx):
    from playwright.sync_api import sync_playwright

    chromium = chromium_binary()
    if chromium is None:
        pytest.fail("no Chromium: `make test` installs Debian's (devstack install --browser)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1500, "height": 1700})
        yield page
        browser.close()


class Screens:
    def __init__(self, ctx) -> None:
        self.dir = ctx.settings.state_dir / "screenshots"
        self.dir.mkdir(parents=True, exist_ok=True)

    def save(self, page, name: str) -> Path:
        path = self.dir / f"dashboard-{name}.png"
        page.screenshot(path=str(path), full_page=True)
        return path


def wait_for(page, check, timeout: float, what: str, interval: float = 0.5):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            got = check()
            if got:
                return got
        except Exception as exc:  # the page redraws its fragment: elements come and go
            last = exc
        time.sleep(interval)
    # What the page showed instead, and a screenshot of it.
    shots = Path(os.environ.get("RTAP_STATE_DIR", ".state")) / "screenshots"
    shots.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(shots / "dashboard-failed.png"), full_page=True)
    shown = "; the page shows: " + page.inner_text("body")[:1500].replace("\n", " | ")
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last}){shown}")


def metric(page, label: str) -> str:
    box = page.locator('[data-testid="stMetric"]', has_text=label).first
    return box.locator('[data-testid="stMetricValue"]').inner_text(timeout=2000).strip()


def number(text: str) -> float:
    return float(text.replace(",", "").split()[0])


def in_usd(produced, grain: int) -> float:
    """What the generator sent as valid purchases, in USD: its own revenue per window (the
    first ``grain`` characters of the minute: 16 a minute, 10 a day), category and currency,
    each converted at its catalog's rate for the window's day (``usd_value``: the series the
    catalog publishes as ``fx_rates``, not the dashboard's conversion)."""
    tally = Tally(keep_ids=False)
    for _ in tally.counted(produced):
        pass
    native: dict[tuple[str, str, str], float] = defaultdict(float)
    for (minute, category, currency), row in tally.sales.items():
        native[minute[:grain], category, currency] += row["revenue"]
    return sum(
        round(round(v, 2) * usd_value(c, date.fromisoformat(w[:10])), 2)
        for (w, _, c), v in native.items()
    )


def charts(page) -> int:
    return page.locator('[data-testid="stVegaLiteChart"]').count()


def alerts(page) -> str:
    return " ".join(page.locator('[data-testid="stAlert"]').all_inner_texts())


def test_dashboard_pages_follow_the_pipeline(ctx, sandbox, dashboard, browser_page):
    url, proxy = dashboard
    page = browser_page
    shots = Screens(ctx)

    # Nothing produced yet: each page says so.
    page.goto(url)  # Live is the default page
    wait_for(page, lambda: "No data yet" in alerts(page), 60, "the live page's empty state")
    shots.save(page, "live-empty")
    page.goto(f"{url}/history")
    wait_for(page, lambda: "No data yet" in alerts(page), 60, "the history page's empty state")

    # A stream runs on the sandbox; events are produced.
    conn = store.connect(ctx.analytics_db, schema=sandbox.pg_schema)
    store.publish_catalog(conn, build_catalog())
    conn.close()
    start = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=4)
    first = generate(1_500, seed=71, start=start)
    r1 = produce(first, topic=sandbox.topic, bootstrap_servers=ctx.settings.kafka_bootstrap)
    assert r1.purchases > 0
    job = sandbox.stream_job(ctx, mode="continuous", trigger="2 seconds")
    stream = spawn(
        ctx,
        submit_argv(ctx, job),
        submit_env(ctx, job),
        f"dashboard-stream-{sandbox.id}.log",
    )
    try:
        page.goto(url)  # Live is the default page
        page.evaluate("window.__notReloaded = true")
        wait_for(
            page,
            lambda: number(metric(page, f"Orders ({WINDOW})")) == r1.purchases,
            300,
            f"the live page to show {r1.purchases} orders",
        )
        # Amounts are kept per currency and shown in the reporting currency (USD), converted
        # at each day's rate: never the sum of USD, EUR and GBP amounts.
        assert len(r1.revenue_by_currency) > 1, "the demo sells in several currencies"
        revenue = metric(page, f"Revenue ({WINDOW})")
        assert revenue.endswith("USD") and number(revenue) == pytest.approx(
            in_usd(first, 16), abs=0.02
        )
        # Streamlit sends the page element by element: the note follows the metrics.
        wait_for(page, lambda: "Amounts in USD" in page.inner_text("body"), 30, "the USD note")
        assert number(metric(page, f"Units ({WINDOW})")) == r1.units
        wait_for(page, lambda: charts(page) >= 6, 30, "the live page's six charts")
        shots.save(page, "live")

        # More events: the open page updates itself (no reload).
        second = generate(1_000, seed=72, start=start + timedelta(minutes=1))
        r2 = produce(second, topic=sandbox.topic, bootstrap_servers=ctx.settings.kafka_bootstrap)
        wait_for(
            page,
            lambda: number(metric(page, f"Orders ({WINDOW})")) == r1.purchases + r2.purchases,
            180,
            "the live numbers to follow the second batch",
        )
        assert number(metric(page, f"Units ({WINDOW})")) == r1.units + r2.units
        assert page.evaluate("window.__notReloaded") is True, "the page was not reloaded"

        # The database goes away: the page says so, then recovers by itself.
        proxy.cut()
        wait_for(page, lambda: "Data unavailable" in alerts(page), 60, "the outage message")
        assert "unreachable" in alerts(page)
        shots.save(page, "live-database-down")
        proxy.restore()
        wait_for(
            page,
            lambda: number(metric(page, f"Orders ({WINDOW})")) == r1.purchases + r2.purchases,
            60,
            "the live page to recover",
        )
        assert "Data unavailable" not in alerts(page)
        assert page.evaluate("window.__notReloaded") is True

        # Pipeline health: the health DAG checks the running stream.
        airflow_dags_test(
            ctx, "stream_health", sandbox.supervision_conf(ctx.settings.bucket, topic=sandbox.topic)
        )
        page.goto(f"{url}/health")
        wait_for(
            page,
            lambda: "Freshness SLO: GREEN" in page.inner_text("body"),
            60,
            "a green freshness SLO",
        )
        wait_for(page, lambda: metric(page, "Lag (records)") == "0", 30, "no lag")
        wait_for(page, lambda: charts(page) >= 2, 30, "the health charts (lag, rows/s)")
        assert "healthy" in page.inner_text("body")
        shots.save(page, "health")
    finally:
        stop_group(stream)

    # History: the compaction app builds the marts of the events' day(s).
    b = ctx.settings.bucket
    days = sorted(
        {
            datetime.fromtimestamp(p.event_time_ms / 1000, UTC).date()
            for p in [*first, *second]
            if p.kind in ("valid", "irrelevant")
        }
    )
    for day in days:
        job = CompactJob(
            day=day,
            lake_path=pipeline.s3a(b, sandbox.lake_prefix),
            warehouse=pipeline.s3a(b, f"{sandbox.prefix}/warehouse"),
            pg_schema=sandbox.pg_schema,
        )
        code, report = compact(ctx, job, log_name=f"dashboard-compact-{sandbox.id}.log")
        assert code == 0 and report["status"] == "verified", report
    page.goto(f"{url}/history")
    wait_for(
        page,
        lambda: number(metric(page, "Orders")) == r1.purchases + r2.purchases,
        90,
        "the history page to show the compacted orders",
    )
    assert number(metric(page, "Revenue")) == pytest.approx(in_usd([*first, *second], 10), abs=0.05)
    # Streamlit sends the page element by element: the note follows the metrics.
    wait_for(page, lambda: "Amounts in USD" in page.inner_text("body"), 30, "the USD note")
    wait_for(page, lambda: charts(page) >= 3, 30, "the history charts")
    shots.save(page, "history")


def test_the_dashboard_reads_with_a_read_only_role(ctx, sandbox):
    reader = environment.dashboard_db(ctx.settings, ctx.secrets)
    conn = psycopg2.connect(
        options=f"-c search_path={sandbox.pg_schema}", **reader.psycopg2_kwargs()
    )
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM category_sales_minute")  # reads a schema made later
        cur.execute("SET default_transaction_read_only = off")
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("DELETE FROM category_sales_minute")
        with pytest.raises(psycopg2.errors.InsufficientPrivilege):
            cur.execute("CREATE TABLE dashboard_was_here (x int)")
    conn.close()

    from botocore.exceptions import ClientError

    s3 = environment.dashboard_s3(ctx.settings, ctx.secrets, sandbox=ctx.sandbox).client()
    s3.list_objects_v2(Bucket=ctx.settings.bucket, MaxKeys=1)
    with pytest.raises(ClientError, match="AccessDenied"):
        s3.put_object(Bucket=ctx.settings.bucket, Key="dashboard-was-here", Body=b"x")
    # It reads the warehouse, and neither raw events nor dead-letter bytes.
    admin = root_s3(ctx)
    readable = f"{sandbox.prefix}/warehouse/marts/x.parquet"
    for key in (readable, f"{sandbox.lake_prefix}/x.parquet", f"{sandbox.dead_letter_prefix}/x"):
        admin.put_object(Bucket=ctx.settings.bucket, Key=key, Body=b"x")
    assert s3.get_object(Bucket=ctx.settings.bucket, Key=readable)["Body"].read() == b"x"
    for key in (f"{sandbox.lake_prefix}/x.parquet", f"{sandbox.dead_letter_prefix}/x"):
        with pytest.raises(ClientError, match="AccessDenied"):
            s3.get_object(Bucket=ctx.settings.bucket, Key=key)


def test_the_airflow_ui_links_the_dashboard(ctx):
    plugins = airflow_api(ctx).get("/api/v2/plugins")["plugins"]
    views = [v for p in plugins for v in p.get("external_views", [])]
    assert any(
        v.get("name") == "Analytics dashboard" and v.get("href") == ctx.settings.dashboard_url
        for v in views
    ), views
    assert streamlit_health(ctx.settings.dashboard_url).ok, "the stack's dashboard is up"
