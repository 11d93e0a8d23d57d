"""The dashboard's query layer: what each page shows, as DataFrames, from the tables the
pipeline keeps (live: Postgres; history: the Iceberg marts).

Reading (``fetch_*``, ``load_*``) is separated from shaping (every other function, pure,
unit-tested): a page calls one ``fetch`` per refresh and shapes the frames it gets.

Failures are reported, not raised into the page: an unreachable database raises
:class:`Unavailable` with a message that names the endpoint (never a password); a table the
stream has not created yet reads as empty (the page says "no data yet").
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

import pandas as pd

from include.analytics.store import MIXED_CURRENCY
from include.dashboard.config import Config
from include.events.contract import FUNNEL_STAGES, MAX_FUTURE_SKEW_SECONDS

GREEN, AMBER, RED = "green", "amber", "red"
SALES_MEASURES = ("revenue", "orders", "units")


class Unavailable(RuntimeError):
    """A source cannot be read now; the message is for the page (no secrets)."""


# --------------------------------------------------------------------------- reading Postgres

LIVE_SALES_SQL = """
SELECT window_start, category, currency, revenue::float8 AS revenue, purchases AS orders, units,
       buyers
FROM category_sales_minute
WHERE window_start >= now() - make_interval(mins => %(minutes)s)
ORDER BY window_start, category, currency
"""

# The dated rates into the reporting currency (a few rows a day: the whole series is read).
RATES_SQL = """
SELECT currency, rate_date, rate::float8 AS rate
FROM fx_rates
WHERE quote = %(quote)s
ORDER BY rate_date
"""

LIVE_FUNNEL_SQL = """
SELECT window_start, event_type, events, sessions
FROM funnel_minute
WHERE window_start >= now() - make_interval(mins => %(minutes)s)
ORDER BY window_start, event_type
"""

PROGRESS_SQL = """
SELECT ts, query_name, batch_id, input_rows, input_rows_per_s, processed_rows_per_s,
       batch_duration_ms, observed, extract(epoch FROM now() - ts)::float8 AS age_s
FROM stream_progress
WHERE ts >= now() - make_interval(mins => %(minutes)s)
ORDER BY ts
"""

LAST_BATCH_SQL = """
SELECT ts, batch_id, input_rows_per_s, processed_rows_per_s,
       extract(epoch FROM now() - ts)::float8 AS age_s
FROM stream_progress
WHERE query_name = 'lake'
ORDER BY ts DESC
LIMIT 1
"""

LAST_HEALTH_SQL = """
SELECT name, ts, status, reasons, metrics, extract(epoch FROM now() - ts)::float8 AS age_s
FROM stream_health
ORDER BY ts DESC
LIMIT 1
"""

RESTARTS_SQL = """
SELECT ts, action, reason, pid, host
FROM stream_restarts
WHERE ts >= now() - interval '24 hours'
ORDER BY ts DESC
"""

DRIVER_RUNS_SQL = """
SELECT started_at, ended_at, exit_code, exit_reason, host, pid
FROM stream_runs
WHERE started_at >= now() - interval '24 hours'
ORDER BY started_at DESC
"""


def connect(cfg: Config):
    """A read-only psycopg2 connection to the analytics database, tables in ``cfg.pg_schema``.

    Short timeouts: a page must say "unreachable" quickly, not hang its refresh."""
    import psycopg2

    options = (
        f"-c search_path={cfg.pg_schema} -c default_transaction_read_only=on "
        "-c statement_timeout=10000"
    )
    try:
        conn = psycopg2.connect(connect_timeout=3, options=options, **cfg.pg.psycopg2_kwargs())
    except psycopg2.Error as exc:
        raise Unavailable(
            f"the analytics database at {cfg.where} is unreachable: {_first_line(exc)}"
        ) from None
    conn.autocommit = True
    return conn


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def query(conn, sql: str, params: Mapping[str, Any] | None = None) -> pd.DataFrame:
    """Rows of ``sql`` as a DataFrame; a table that does not exist yet reads as no rows."""
    import psycopg2
    from psycopg2 import errors

    try:
        with conn.cursor() as cur:
            cur.execute(sql, dict(params or {}))
            columns = [d.name for d in cur.description]
            return pd.DataFrame.from_records(cur.fetchall(), columns=columns)
    except errors.UndefinedTable:
        return pd.DataFrame()
    except psycopg2.Error as exc:
        raise Unavailable(f"reading the analytics database failed: {_first_line(exc)}") from None


@dataclass
class Live:
    # window_start, category, currency, revenue (reporting currency), revenue_native (its own
    # currency), orders, units, buyers
    sales: pd.DataFrame
    funnel: pd.DataFrame  # window_start, event_type, events, sessions
    unconverted: list[str] = field(default_factory=list)  # currencies without a rate


@dataclass
class PipelineHealth:
    last_batch: dict[str, Any] | None
    health: dict[str, Any] | None
    progress: pd.DataFrame
    restarts: pd.DataFrame
    runs: pd.DataFrame


def fetch_live(cfg: Config, minutes: int) -> Live:
    conn = connect(cfg)
    try:
        params = {"minutes": int(minutes)}
        sales = query(conn, LIVE_SALES_SQL, params)
        rates = query(conn, RATES_SQL, {"quote": cfg.reporting_currency})
        funnel = query(conn, LIVE_FUNNEL_SQL, params)
    finally:
        conn.close()
    sales, unconverted = to_reporting(sales, rates, cfg.reporting_currency, "window_start")
    return Live(sales, funnel, unconverted)


def fetch_health(cfg: Config, minutes: int = 60) -> PipelineHealth:
    conn = connect(cfg)
    try:
        last = query(conn, LAST_BATCH_SQL)
        health = query(conn, LAST_HEALTH_SQL)
        return PipelineHealth(
            last_batch=_first_row(last),
            health=_decode_health(_first_row(health)),
            progress=query(conn, PROGRESS_SQL, {"minutes": int(minutes)}),
            restarts=query(conn, RESTARTS_SQL),
            runs=query(conn, DRIVER_RUNS_SQL),
        )
    finally:
        conn.close()


def _first_row(frame: pd.DataFrame) -> dict[str, Any] | None:
    return None if frame.empty else frame.iloc[0].to_dict()


def _decode_health(row: dict[str, Any] | None) -> dict[str, Any] | None:
    if row is None:
        return None
    for key in ("reasons", "metrics"):
        if isinstance(row.get(key), str):
            row[key] = json.loads(row[key])
    return row


# --------------------------------------------------------------------------- shaping: money


def to_reporting(
    sales: pd.DataFrame, rates: pd.DataFrame, quote: str, when: str
) -> tuple[pd.DataFrame, list[str]]:
    """``sales`` (per-currency rows: ``currency``, ``revenue`` and the time column ``when``)
    with ``revenue`` in ``quote``, converted at the newest rate on or before each row's day,
    and the original amount in ``revenue_native``; ``rates``: ``currency, rate_date, rate``
    into ``quote``. Also the currencies left without a rate (their ``revenue`` is NaN, so no
    total includes them: a page names them instead of adding a foreign amount as if it were
    the reporting currency)."""
    if sales.empty:
        return sales, []
    out = sales.reset_index(drop=True)
    out["revenue_native"] = out["revenue"].astype(float)
    days = pd.to_datetime(out[when], utc=True).dt.tz_localize(None).dt.normalize()
    left = pd.DataFrame({"_row": out.index, "currency": out["currency"], "_day": days})
    if rates.empty:
        left["rate"] = float("nan")
    else:
        right = pd.DataFrame(
            {
                "currency": rates["currency"],
                "_day": pd.to_datetime(rates["rate_date"]).astype("datetime64[ns]"),
                "rate": rates["rate"].astype(float),
            }
        ).sort_values("_day")
        left = pd.merge_asof(
            left.astype({"_day": "datetime64[ns]"}).sort_values("_day"),
            right,
            on="_day",
            by="currency",
            direction="backward",
        ).sort_values("_row")
    rate = left["rate"].to_numpy()
    rate[(left["currency"] == quote).to_numpy()] = 1.0
    out["revenue"] = (out["revenue_native"].to_numpy() * rate).round(2)
    unconverted = sorted(out.loc[out["revenue"].isna(), "currency"].astype(str).unique())
    return out, unconverted


def by_currency(sales: pd.DataFrame) -> pd.DataFrame:
    """Revenue and orders per currency, the revenue in that currency's own units and in the
    reporting currency (NaN where no rate converts it)."""
    if sales.empty:
        return pd.DataFrame(columns=["revenue_native", "revenue", "orders"])
    return (
        sales.groupby("currency")
        .agg(
            revenue_native=("revenue_native", "sum"),
            revenue=("revenue", lambda r: r.sum(min_count=len(r))),
            orders=("orders", "sum"),
        )
        .round({"revenue_native": 2, "revenue": 2})
        .sort_values("revenue", ascending=False, na_position="last")
    )


# --------------------------------------------------------------------------- shaping: live


def per_minute(sales: pd.DataFrame, measure: str) -> pd.DataFrame:
    """``measure`` per minute (rows) and category (columns), zeros where a category sold
    nothing in a minute: the shape of a line chart."""
    return _by_category(sales, "window_start", measure)


def _by_category(sales: pd.DataFrame, index: str, measure: str) -> pd.DataFrame:
    if measure not in SALES_MEASURES:
        raise ValueError(f"measure {measure!r} is not one of {SALES_MEASURES}")
    return _pivot(sales, index, "category", measure)


def _pivot(frame: pd.DataFrame, index: str, columns: str, values: str) -> pd.DataFrame:
    if frame.empty:
        return pd.DataFrame()
    out = frame.pivot_table(
        index=index, columns=columns, values=values, aggfunc="sum", fill_value=0
    )
    out.columns.name = None
    return out.sort_index()


def totals(sales: pd.DataFrame) -> dict[str, float]:
    """Revenue, orders and units over the frame (zeros when empty)."""
    if sales.empty:
        return {"revenue": 0.0, "orders": 0, "units": 0}
    return {
        "revenue": round(float(sales["revenue"].sum()), 2),
        "orders": int(sales["orders"].sum()),
        "units": int(sales["units"].sum()),
    }


def top_categories(sales: pd.DataFrame, k: int = 5) -> pd.DataFrame:
    """The ``k`` categories with the most revenue: revenue, orders, units, share of revenue."""
    if sales.empty:
        return pd.DataFrame(columns=["revenue", "orders", "units", "share"])
    by = sales.groupby("category")[["revenue", "orders", "units"]].sum()
    total = by["revenue"].sum()
    by["share"] = (by["revenue"] / total).round(4) if total else 0.0
    by["revenue"] = by["revenue"].round(2)
    return by.sort_values(["revenue", "orders"], ascending=False).head(k)


def event_rates(funnel: pd.DataFrame) -> pd.DataFrame:
    """Events per second by event type (columns), per minute (rows)."""
    frame = _pivot(funnel, "window_start", "event_type", "events")
    return frame if frame.empty else (frame / 60.0).round(3)


def recent_rate(rates: pd.DataFrame, now: datetime, minutes: int = 5) -> float:
    """Average events per second over the ``minutes`` whole minutes before ``now``'s minute,
    from :func:`event_rates`; a minute without events counts as 0 (so the rate falls to 0
    when traffic stops, instead of repeating the last minutes that had data)."""
    if rates.empty:
        return 0.0
    end = pd.Timestamp(now).floor("min")
    window = rates[(rates.index >= end - pd.Timedelta(minutes=minutes)) & (rates.index < end)]
    return round(float(window.to_numpy().sum()) / minutes, 3)


def funnel_stages(funnel: pd.DataFrame) -> pd.DataFrame:
    """Events per funnel stage over the frame, with each stage's conversion from the one before
    (``None`` where the stage before is empty) and from the first stage."""
    counts = (
        funnel.groupby("event_type")["events"].sum()
        if not funnel.empty
        else pd.Series(dtype="int64")
    )
    rows = []
    first: int | None = None
    before: int | None = None
    for stage, types in FUNNEL_STAGES:
        n = int(sum(int(counts.get(t, 0)) for t in types))
        rows.append(
            {
                "stage": stage,
                "events": n,
                "from_previous": None if before is None else _ratio(n, before),
                "from_first": None if first is None else _ratio(n, first),
            }
        )
        first = n if first is None else first
        before = n
    return pd.DataFrame(rows).set_index("stage")


def _ratio(n: int, d: int) -> float | None:
    return round(n / d, 4) if d else None


# --------------------------------------------------------------------------- shaping: health


@dataclass(frozen=True)
class Freshness:
    status: str  # green / amber / red
    reason: str


def freshness(
    last_batch_age_s: float | None,
    total_lag: int | None,
    health_status: str | None,
    slo_s: float,
    health_reasons: Sequence[str] = (),
) -> Freshness:
    """The freshness SLO: data reaches the lake and the aggregates within ``slo_s``.

    * green — the last batch finished within the SLO, or nothing waits in Kafka (an idle
      stream is fresh);
    * amber — the last batch is older than the SLO (up to 5x) while records wait;
    * red — older than 5x the SLO with records waiting, no batch ever, or the health check says
      the stream is stalled, down or stopped.
    """
    if health_status in ("stalled", "down"):
        return Freshness(RED, f"the health check reports the stream {health_status}")
    if health_status == "stopped":  # who stopped or halted it, and why
        why = health_reasons[0] if health_reasons else "by an operator (stream_control)"
        return Freshness(RED, f"the stream is {why}")
    if last_batch_age_s is None:
        return Freshness(RED, "no batch has finished yet")
    age = f"last batch {last_batch_age_s:.0f}s ago"
    if last_batch_age_s <= slo_s:
        return Freshness(GREEN, f"{age} (SLO {slo_s:.0f}s)")
    if total_lag == 0:
        return Freshness(GREEN, f"{age}; nothing waits in Kafka (idle)")
    waiting = "records waiting" if total_lag is None else f"{total_lag} records waiting"
    if last_batch_age_s <= 5 * slo_s:
        return Freshness(AMBER, f"{age} > SLO {slo_s:.0f}s, {waiting}")
    return Freshness(RED, f"{age} > 5x SLO {slo_s:.0f}s, {waiting}")


def lag_per_partition(health: Mapping[str, Any] | None) -> pd.DataFrame:
    """Records waiting per partition, from the last health check (broker log-end offsets
    against the stream's own progress)."""
    lag = ((health or {}).get("metrics") or {}).get("lag") or {}
    if not lag:
        return pd.DataFrame(columns=["records"])
    frame = pd.DataFrame(
        {"records": [int(v) for v in lag.values()]},
        index=pd.Index([int(p) for p in lag], name="partition"),
    )
    return frame.sort_index()


def throughput(progress: pd.DataFrame) -> pd.DataFrame:
    """Input and processed rows/s of the lake query per batch (rows: batch end time)."""
    if progress.empty:
        return pd.DataFrame()
    lake = progress[progress["query_name"] == "lake"]
    frame = lake.set_index("ts")[["input_rows_per_s", "processed_rows_per_s"]].astype(float)
    return frame.rename(columns={"input_rows_per_s": "input", "processed_rows_per_s": "processed"})


def dead_letter_rate(progress: pd.DataFrame) -> tuple[float | None, pd.DataFrame]:
    """Share of input rows dead-lettered over the frame, and per minute."""
    if progress.empty:
        return None, pd.DataFrame()
    dl = progress[progress["query_name"] == "lake"].copy()  # the one query counts them
    if dl.empty:
        return None, pd.DataFrame()
    dl["dead_lettered"] = [_observed(o, "dead_letter", "dead_lettered") for o in dl["observed"]]
    dl["minute"] = pd.to_datetime(dl["ts"]).dt.floor("min")
    by = dl.groupby("minute")[["input_rows", "dead_lettered"]].sum()
    read = int(by["input_rows"].sum())
    overall = round(int(by["dead_lettered"].sum()) / read, 4) if read else None
    rate = (by["dead_lettered"] / by["input_rows"].where(by["input_rows"] > 0)).fillna(0.0)
    return overall, rate.round(4).to_frame("dead_letter_rate")


def _observed(value: Any, name: str, key: str) -> int:
    if isinstance(value, str):
        value = json.loads(value)
    return int(((value or {}).get(name) or {}).get(key, 0))


def failed_runs(runs: pd.DataFrame) -> int:
    """Driver runs that ended with a non-zero exit code (in the frame)."""
    if runs.empty:
        return 0
    codes = runs["exit_code"].dropna()
    return int((codes != 0).sum())


# --------------------------------------------------------------------------- history (marts)


@dataclass
class History:
    # day, category, currency, revenue (reporting currency), revenue_native, orders, units,
    # buyers, avg_order_value (its own currency)
    sales: pd.DataFrame
    funnel: pd.DataFrame  # day, views .. purchases, conversions
    categories: list[str]
    unconverted: list[str] = field(default_factory=list)  # currencies without a rate


def history_days(now: datetime, days: int = 30) -> tuple[date, date]:
    """The History page's default range of days: ``days`` days back from the newest day an
    accepted event can belong to. The contract accepts event times up to
    ``MAX_FUTURE_SKEW_SECONDS`` ahead of the clock, so in the last minutes before midnight UTC
    the warehouse can already hold tomorrow; a range ending today would hide that day."""
    newest = (now + timedelta(seconds=MAX_FUTURE_SKEW_SECONDS)).date()
    return newest - timedelta(days=days), newest


def load_history(cfg: Config, start: date, end: date) -> History:
    """The daily marts between ``start`` and ``end`` (inclusive), read with pyiceberg from the
    warehouse's catalog (the same JDBC catalog tables Spark writes)."""
    if not cfg.warehouse:
        raise Unavailable("no warehouse is configured (RTAP_DASHBOARD_WAREHOUSE)")
    from pyiceberg.exceptions import NoSuchNamespaceError, NoSuchTableError
    from pyiceberg.expressions import And, GreaterThanOrEqual, LessThanOrEqual

    from include.warehouse.catalog import load_pyiceberg
    from include.warehouse.marts import FUNNEL, SALES

    catalog = None
    try:
        catalog = load_pyiceberg(cfg.pg, cfg.pg_schema, cfg.warehouse, cfg.s3)
        window = And(
            GreaterThanOrEqual("day", start.isoformat()), LessThanOrEqual("day", end.isoformat())
        )
        frames = []
        for mart in (SALES, FUNNEL):  # the two the History page charts
            try:
                table = catalog.load_table(f"{cfg.marts_namespace}.{mart.name}")
            except (NoSuchTableError, NoSuchNamespaceError):
                frames.append(pd.DataFrame())
                continue
            frames.append(table.scan(row_filter=window).to_pandas())
    except Exception as exc:  # any reader failure is shown on the page
        if "does not exist" in str(exc) and "iceberg_tables" in str(exc):
            return History(pd.DataFrame(), pd.DataFrame(), [])
        raise Unavailable(
            f"the warehouse {cfg.warehouse} cannot be read: {_first_line(exc)}"
        ) from None
    finally:
        if catalog is not None:
            catalog.engine.dispose()  # the catalog's connection pool: one per read
    sales, funnel = (_numeric(f) for f in frames)
    unconverted: list[str] = []
    if not sales.empty:
        if "currency" not in sales.columns:  # a mart written before amounts were per currency
            sales["currency"] = None
        # Days written before amounts were kept per currency (rebuild_marts rewrites them).
        sales["currency"] = sales["currency"].fillna(MIXED_CURRENCY)
        sales = sales.sort_values(["day", "category", "currency"]).reset_index(drop=True)
        conn = connect(cfg)
        try:
            rates = query(conn, RATES_SQL, {"quote": cfg.reporting_currency})
        finally:
            conn.close()
        sales, unconverted = to_reporting(sales, rates, cfg.reporting_currency, "day")
    if not funnel.empty:
        funnel = funnel.sort_values("day").reset_index(drop=True)
    categories = sorted(sales["category"].unique()) if not sales.empty else []
    return History(sales, funnel, categories, unconverted)


def _numeric(frame: pd.DataFrame) -> pd.DataFrame:
    """Decimals (Iceberg decimal columns) as floats, so charts and sums work."""
    from decimal import Decimal

    for col in frame.columns:
        if frame[col].dtype == object and len(frame) and isinstance(frame[col].iloc[0], Decimal):
            frame[col] = frame[col].astype(float)
    return frame


def select_categories(sales: pd.DataFrame, categories: Sequence[str] | None) -> pd.DataFrame:
    """Rows of the chosen categories (all when none is chosen)."""
    if sales.empty or not categories:
        return sales
    return sales[sales["category"].isin(list(categories))]


def daily(sales: pd.DataFrame, measure: str) -> pd.DataFrame:
    """``measure`` per day (rows) and category (columns)."""
    return _by_category(sales, "day", measure)


def funnel_conversions(funnel: pd.DataFrame) -> pd.DataFrame:
    """The daily funnel's conversion columns (``x_to_y``) per day."""
    if funnel.empty:
        return pd.DataFrame()
    cols = [c for c in funnel.columns if "_to_" in c]
    return funnel.set_index("day")[cols].astype(float).sort_index()
