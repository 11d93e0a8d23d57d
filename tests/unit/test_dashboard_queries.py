"""The dashboard's query layer: settings, shaping of live / history / health frames, and how
failures surface (no database here: a closed port stands for a database that is down)."""

from __future__ import annotations

import json
import socket
from datetime import UTC, date, datetime, timedelta

import pandas as pd
import pytest

from include.dashboard import queries as q
from include.dashboard.config import ConfigError, from_env
from include.events.contract import MAX_FUTURE_SKEW_SECONDS

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)

BASE_ENV = {
    "RTAP_DASHBOARD_PG_HOST": "127.0.0.1",
    "RTAP_DASHBOARD_PG_PORT": "5432",
    "RTAP_DASHBOARD_PG_DB": "analytics",
    "RTAP_DASHBOARD_PG_USER": "reader",
    "RTAP_DASHBOARD_PG_PASSWORD": "s3cret-value-xyz",
}


def minute(i: int) -> datetime:
    return T0 + timedelta(minutes=i)


def sales_frame() -> pd.DataFrame:
    rows = [
        (minute(0), "books", 10.0, 1, 2, 1),
        (minute(0), "home", 30.0, 2, 3, 2),
        (minute(1), "books", 5.5, 1, 1, 1),
        (minute(2), "toys", 100.0, 4, 4, 3),
    ]
    return pd.DataFrame(
        rows, columns=["window_start", "category", "revenue", "orders", "units", "buyers"]
    )


def funnel_frame() -> pd.DataFrame:
    rows = [
        (minute(0), "page_view", 600, 50),
        (minute(0), "product_view", 300, 40),
        (minute(0), "click", 300, 30),
        (minute(1), "add_to_cart", 90, 20),
        (minute(1), "checkout", 45, 10),
        (minute(1), "purchase", 18, 9),
    ]
    return pd.DataFrame(rows, columns=["window_start", "event_type", "events", "sessions"])


# --------------------------------------------------------------------------- settings


def test_settings_from_env_with_defaults():
    cfg = from_env(BASE_ENV)
    assert (cfg.pg_schema, cfg.refresh_s, cfg.window_min, cfg.warehouse) == ("public", 5.0, 60, "")
    assert cfg.pg.psycopg2_kwargs() == {
        "host": "127.0.0.1",
        "port": 5432,
        "user": "reader",
        "password": "s3cret-value-xyz",
        "dbname": "analytics",
    }
    assert "s3cret" not in repr(cfg) and "s3cret" not in cfg.where


@pytest.mark.parametrize(
    ("extra", "named"),
    [
        ({"RTAP_DASHBOARD_PG_PASSWORD": ""}, "RTAP_DASHBOARD_PG_PASSWORD is not set"),
        ({"RTAP_DASHBOARD_PG_PORT": "fivefour"}, "RTAP_DASHBOARD_PG_PORT='fivefour'"),
        ({"RTAP_DASHBOARD_REFRESH_S": "30"}, "RTAP_DASHBOARD_REFRESH_S=30 is out of range"),
        ({"RTAP_DASHBOARD_PG_SCHEMA": "a;drop"}, "RTAP_DASHBOARD_PG_SCHEMA='a;drop'"),
        ({"RTAP_DASHBOARD_WAREHOUSE": "lake/warehouse"}, "RTAP_DASHBOARD_WAREHOUSE="),
        ({"RTAP_DASHBOARD_WAREHOUSE": "s3://lake/warehouse"}, "RTAP_DASHBOARD_S3_ACCESS_KEY"),
    ],
)
def test_a_wrong_setting_is_named(extra, named):
    with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace("?", r"\?")):
        from_env({**BASE_ENV, **extra})


def test_the_reporting_currency_is_a_setting_of_the_contracts_currencies():
    assert from_env(BASE_ENV).reporting_currency == "USD"
    assert from_env(
        {**BASE_ENV, "RTAP_DASHBOARD_REPORTING_CURRENCY": "eur"}
    ).reporting_currency == ("EUR")
    with pytest.raises(ConfigError, match="RTAP_DASHBOARD_REPORTING_CURRENCY='BTC' is not one"):
        from_env({**BASE_ENV, "RTAP_DASHBOARD_REPORTING_CURRENCY": "BTC"})


def test_s3a_warehouse_is_read_as_s3():
    env = {
        **BASE_ENV,
        "RTAP_DASHBOARD_WAREHOUSE": "s3a://lake/warehouse/",
        "RTAP_DASHBOARD_S3_ACCESS_KEY": "reader",
        "RTAP_DASHBOARD_S3_SECRET_KEY": "read-only-secret",
    }
    assert from_env(env).warehouse == "s3://lake/warehouse"


# --------------------------------------------------------------------------- live


def test_totals_and_top_categories():
    sales = sales_frame()
    assert q.totals(sales) == {"revenue": 145.5, "orders": 8, "units": 10}
    assert q.totals(sales.iloc[0:0]) == {"revenue": 0.0, "orders": 0, "units": 0}
    top = q.top_categories(sales, k=2)
    assert list(top.index) == ["toys", "home"]
    assert top.loc["toys", "share"] == round(100 / 145.5, 4)


def rates_frame() -> pd.DataFrame:
    """EUR -> USD on two days (the 19th and the 21st), GBP never."""
    return pd.DataFrame(
        [("EUR", date(2026, 11, 19), 1.10), ("EUR", date(2026, 11, 21), 1.20)],
        columns=["currency", "rate_date", "rate"],
    )


def test_amounts_are_converted_at_the_newest_rate_on_or_before_their_day():
    sales = pd.DataFrame(
        [
            (minute(0), "books", "USD", 10.0, 1, 1),
            (minute(0), "books", "EUR", 10.0, 1, 1),  # the 20th: the 19th's rate
            (minute(0) + timedelta(days=1), "home", "EUR", 10.0, 2, 2),  # the 21st's own
            (minute(0), "toys", "GBP", 7.0, 1, 1),  # no rate at all
        ],
        columns=["window_start", "category", "currency", "revenue", "orders", "units"],
    )
    out, unconverted = q.to_reporting(sales, rates_frame(), "USD", "window_start")
    assert list(out["revenue"].iloc[:3]) == [10.0, 11.0, 12.0]
    assert pd.isna(out["revenue"].iloc[3]) and unconverted == ["GBP"]
    assert list(out["revenue_native"]) == [10.0, 10.0, 10.0, 7.0]
    assert q.totals(out)["revenue"] == 33.0, "an amount without a rate is left out, not added"
    by = q.by_currency(out)
    assert by.loc["EUR", "revenue_native"] == 20.0 and by.loc["EUR", "revenue"] == 23.0
    assert pd.isna(by.loc["GBP", "revenue"]) and by.loc["GBP", "revenue_native"] == 7.0
    # A day before the first rate has none; days as dates (the marts) work the same.
    history = pd.DataFrame(
        [(date(2026, 11, 18), "EUR", 5.0), (date(2026, 11, 22), "EUR", 5.0)],
        columns=["day", "currency", "revenue"],
    )
    out, unconverted = q.to_reporting(history, rates_frame(), "USD", "day")
    assert pd.isna(out["revenue"].iloc[0]) and out["revenue"].iloc[1] == 6.0
    assert unconverted == ["EUR"]
    assert q.to_reporting(history.iloc[0:0], rates_frame(), "USD", "day")[1] == []


def test_per_minute_fills_minutes_without_sales_with_zero():
    frame = q.per_minute(sales_frame(), "revenue")
    assert list(frame.columns) == ["books", "home", "toys"]
    assert list(frame.index) == [minute(0), minute(1), minute(2)]
    assert frame.loc[minute(1)].to_dict() == {"books": 5.5, "home": 0.0, "toys": 0.0}
    assert q.per_minute(sales_frame().iloc[0:0], "orders").empty
    with pytest.raises(ValueError, match="not one of"):
        q.per_minute(sales_frame(), "margin")


def test_event_rates_are_per_second():
    rates = q.event_rates(funnel_frame())
    assert rates.loc[minute(0), "page_view"] == 10.0
    assert rates.loc[minute(1), "page_view"] == 0.0
    assert q.event_rates(pd.DataFrame()).empty
    during = minute(2) + timedelta(seconds=30)  # minute 2 is under way: not counted yet
    assert q.recent_rate(rates, during, minutes=1) == round((90 + 45 + 18) / 60, 3)
    # Five minutes, two with events: the quiet minutes count as zero.
    assert q.recent_rate(rates, during) == round((1200 + 153) / 60 / 5, 3)
    # Traffic stopped: the tile falls to zero, not to the last minutes that had events.
    assert q.recent_rate(rates, minute(10)) == 0.0
    assert q.recent_rate(pd.DataFrame(), during) == 0.0


def test_funnel_stages_and_conversions():
    stages = q.funnel_stages(funnel_frame())
    assert list(stages.index) == ["views", "clicks", "carts", "checkouts", "purchases"]
    assert stages["events"].tolist() == [900, 300, 90, 45, 18]
    assert stages.loc["clicks", "from_previous"] == round(300 / 900, 4)
    assert stages.loc["purchases", "from_previous"] == 0.4
    assert stages.loc["purchases", "from_first"] == 0.02
    assert pd.isna(stages.loc["views", "from_previous"])
    empty = q.funnel_stages(pd.DataFrame())
    assert empty["events"].sum() == 0 and empty["from_previous"].isna().all()


# --------------------------------------------------------------------------- health


@pytest.mark.parametrize(
    ("age", "lag", "status", "expected"),
    [
        (10, 500, "healthy", q.GREEN),
        (600, 0, "healthy", q.GREEN),  # idle: nothing waits
        (120, 50, "degraded", q.AMBER),
        (400, 50, "healthy", q.RED),  # > 5x the SLO with records waiting
        (None, None, None, q.RED),  # never a batch
        (5, 0, "stalled", q.RED),
        (5, 0, "down", q.RED),
        (5, 0, "stopped", q.RED),
        (120, None, None, q.AMBER),  # no health check yet: lag unknown
    ],
)
def test_freshness_slo(age, lag, status, expected):
    got = q.freshness(age, lag, status, slo_s=60)
    assert got.status == expected, got.reason
    assert got.reason


def test_a_stopped_stream_says_who_stopped_or_halted_it_and_why():
    why = "halted by stream_health: crash loop: 3 failed driver runs (stream_control)"
    got = q.freshness(5, 0, "stopped", slo_s=60, health_reasons=[why])
    assert (got.status, got.reason) == (q.RED, f"the stream is {why}")


def test_lag_per_partition_from_the_last_health_check():
    lag = q.lag_per_partition({"metrics": {"lag": {"2": 5, "0": 1, "1": 0}}})
    assert lag["records"].to_dict() == {0: 1, 1: 0, 2: 5}
    assert q.lag_per_partition(None).empty
    assert q.lag_per_partition({"metrics": {}}).empty


def progress_frame() -> pd.DataFrame:
    rows = [
        (minute(0), "lake", 10.0, 12.0, {"dead_letter": {"dead_lettered": 5}}),
        (minute(1), "lake", 20.0, 25.0, json.dumps({})),
    ]
    frame = pd.DataFrame(
        rows,
        columns=["ts", "query_name", "input_rows_per_s", "processed_rows_per_s", "observed"],
    )
    frame["input_rows"] = [100, 100]
    return frame


def test_throughput_and_dead_letter_rate():
    tp = q.throughput(progress_frame())
    assert tp.to_dict("list") == {"input": [10.0, 20.0], "processed": [12.0, 25.0]}
    overall, per_minute = q.dead_letter_rate(progress_frame())
    assert overall == 0.025  # 5 of the 200 rows the stream's one query read
    assert per_minute["dead_letter_rate"].tolist() == [0.05, 0.0]
    assert q.dead_letter_rate(pd.DataFrame())[0] is None


def test_failed_runs_count_non_zero_exits_only():
    runs = pd.DataFrame({"exit_code": [0, 1, None, 137]})
    assert q.failed_runs(runs) == 2
    assert q.failed_runs(pd.DataFrame()) == 0


# --------------------------------------------------------------------------- history


def history_sales() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "day": [date(2026, 11, 1), date(2026, 11, 1), date(2026, 11, 2)],
            "category": ["books", "toys", "books"],
            "revenue": [10.0, 20.0, 5.0],
            "orders": [1, 2, 1],
            "units": [1, 3, 2],
        }
    )


def test_history_shaping():
    sales = history_sales()
    assert q.select_categories(sales, ["toys"])["revenue"].tolist() == [20.0]
    assert len(q.select_categories(sales, [])) == 3
    daily = q.daily(sales, "revenue")
    assert daily.loc[date(2026, 11, 2)].to_dict() == {"books": 5.0, "toys": 0.0}
    funnel = pd.DataFrame(
        {"day": [date(2026, 11, 1)], "views": [10], "views_to_clicks": [0.5], "purchases": [1]}
    )
    assert list(q.funnel_conversions(funnel).columns) == ["views_to_clicks"]


def test_history_range_covers_the_newest_day_an_accepted_event_can_have():
    # At 23:50 UTC the contract accepts events of 00:05 tomorrow: their day is in the range.
    late_evening = datetime(2026, 12, 4, 23, 50, tzinfo=UTC)
    assert q.history_days(late_evening) == (date(2026, 11, 5), date(2026, 12, 5))
    newest_accepted = late_evening + timedelta(seconds=MAX_FUTURE_SKEW_SECONDS)
    assert q.history_days(late_evening)[1] == newest_accepted.date()
    # Otherwise the range ends today.
    assert q.history_days(datetime(2026, 12, 4, 12, 0, tzinfo=UTC), days=7) == (
        date(2026, 11, 27),
        date(2026, 12, 4),
    )


def test_history_without_a_warehouse_is_reported():
    with pytest.raises(q.Unavailable, match="no warehouse is configured"):
        q.load_history(from_env(BASE_ENV), date(2026, 11, 1), date(2026, 11, 2))


# --------------------------------------------------------------------------- failures


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_a_database_that_is_down_is_unavailable_with_a_clear_message():
    cfg = from_env({**BASE_ENV, "RTAP_DASHBOARD_PG_PORT": str(closed_port())})
    with pytest.raises(q.Unavailable) as err:
        q.fetch_live(cfg, 60)
    message = str(err.value)
    assert "unreachable" in message and cfg.where in message
    assert "s3cret" not in message
