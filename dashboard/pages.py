"""The dashboard's pages. Each refreshing part is a fragment (``st.fragment(run_every=...)``):
it re-queries and redraws itself without reloading the page, and a failed read shows a message
in place and is retried on the next refresh, so the page recovers by itself."""

from __future__ import annotations

from datetime import UTC, date, datetime

import altair as alt
import pandas as pd
import streamlit as st

from include.analytics.store import MIXED_CURRENCY
from include.dashboard import queries as q
from include.dashboard.config import Config

NA = "n/a"
COLORS = {q.GREEN: "green", q.AMBER: "orange", q.RED: "red"}


def _updated(cfg: Config) -> None:
    now = datetime.now(UTC).strftime("%H:%M:%S")
    st.caption(f"Updated {now} UTC · refreshes every {cfg.refresh_s:g} s · {cfg.where}")


def _unavailable(exc: q.Unavailable, retry_s: float) -> None:
    st.error(f"Data unavailable: {exc}. Retrying every {retry_s:g} s.", icon=":material/error:")


def _daily(frame: pd.DataFrame, value: str, bars: bool = False) -> alt.Chart:
    """One series per column, days on the x axis labelled YYYY-MM-DD (not a time axis, which
    repeated a date per 12-hour tick): lines with points (a single day still shows), or
    stacked bars."""
    long = frame.reset_index(names="day").melt(id_vars="day", var_name="series", value_name=value)
    long["day"] = pd.to_datetime(long["day"]).dt.strftime("%Y-%m-%d")
    chart = alt.Chart(long)
    return (chart.mark_bar() if bars else chart.mark_line(point=True)).encode(
        x=alt.X("day:O", title=None, axis=alt.Axis(labelAngle=0)),
        y=alt.Y(f"{value}:Q", title=value),
        color=alt.Color("series:N", title=None),
        tooltip=["day:O", "series:N", f"{value}:Q"],
    )


def _time_lines(frame: pd.DataFrame, value: str) -> alt.Chart:
    """Lines over time, one per column, the time axis in 24-hour UTC (``13:26``, as the page
    header; Streamlit's own line chart shows a 12-hour clock in the browser's zone)."""
    long = frame.reset_index(names="t").melt(id_vars="t", var_name="series", value_name=value)
    long["t"] = pd.to_datetime(long["t"], utc=True)
    return (
        alt.Chart(long)
        .mark_line()
        .encode(
            x=alt.X("t:T", title="UTC", scale=alt.Scale(type="utc"), axis=alt.Axis(format="%H:%M")),
            y=alt.Y(f"{value}:Q", title=value),
            color=alt.Color("series:N", title=None),
            tooltip=[
                alt.Tooltip("t:T", format="%Y-%m-%d %H:%M:%S", title="UTC"),
                "series:N",
                f"{value}:Q",
            ],
        )
    )


def _money(x: float, currency: str) -> str:
    return f"{x:,.2f} {currency}"


def _currency_note(cfg: Config, unconverted: list[str]) -> None:
    """Say which currency the amounts are in, and which amounts no total includes."""
    st.caption(
        f"Amounts in {cfg.reporting_currency}: each currency's amounts are kept apart and "
        f"converted at the newest rate on or before their day (the catalog's `fx_rates`)."
    )
    if unconverted:
        mixed = (
            f" ({MIXED_CURRENCY}: summed before amounts were kept per currency)"
            if MIXED_CURRENCY in unconverted
            else ""
        )
        st.warning(
            f"No rate into {cfg.reporting_currency} for {', '.join(unconverted)}{mixed}: "
            "those amounts are left out of the revenue totals and charts (see Revenue by "
            "currency).",
            icon=":material/currency_exchange:",
        )


def _currency_table(cfg: Config, frame: pd.DataFrame) -> pd.DataFrame:
    return frame.rename(
        columns={
            "revenue_native": "revenue (own currency)",
            "revenue": f"revenue ({cfg.reporting_currency})",
        }
    )


# --------------------------------------------------------------------------- Live


def live(cfg: Config) -> None:
    st.title("Live sales")
    minutes = st.select_slider(
        "Window (minutes)",
        options=sorted({5, 15, 30, 60, 180, 360, 1440, cfg.window_min}),
        value=cfg.window_min,
        key="live_window",
    )

    @st.fragment(run_every=cfg.refresh_s)
    def body() -> None:
        try:
            data = q.fetch_live(cfg, minutes)
        except q.Unavailable as exc:
            _unavailable(exc, cfg.refresh_s)
            return
        _updated(cfg)
        if data.sales.empty and data.funnel.empty:
            st.info(
                f"No data yet: no events in the last {minutes} minutes. Start the platform and "
                "its stream with `make run`, or produce events with `make demo`.",
                icon=":material/hourglass_empty:",
            )
            return
        t = q.totals(data.sales)
        rates = q.event_rates(data.funnel)
        stages = q.funnel_stages(data.funnel)
        conversion = stages["from_first"].iloc[-1]
        c = st.columns(5)
        c[0].metric(f"Revenue (last {minutes} min)", _money(t["revenue"], cfg.reporting_currency))
        c[1].metric(f"Orders (last {minutes} min)", f"{t['orders']:,}")
        c[2].metric(f"Units (last {minutes} min)", f"{t['units']:,}")
        c[3].metric("Events/s (last 5 min)", f"{q.recent_rate(rates, datetime.now(UTC)):,.2f}")
        c[4].metric("Views → purchases", NA if pd.isna(conversion) else f"{float(conversion):.2%}")

        if data.sales.empty:
            st.info(f"No purchases in the last {minutes} minutes yet.")
        else:
            _currency_note(cfg, data.unconverted)
            left, right = st.columns(2)
            with left:
                st.subheader(f"Revenue per minute by category ({cfg.reporting_currency})")
                st.altair_chart(
                    _time_lines(q.per_minute(data.sales, "revenue"), "revenue"), width="stretch"
                )
                st.subheader("Units per minute by category")
                st.altair_chart(
                    _time_lines(q.per_minute(data.sales, "units"), "units"), width="stretch"
                )
            with right:
                st.subheader("Orders per minute by category")
                st.altair_chart(
                    _time_lines(q.per_minute(data.sales, "orders"), "orders"), width="stretch"
                )
                st.subheader(f"Top categories by revenue ({cfg.reporting_currency})")
                top = q.top_categories(data.sales)
                st.bar_chart(top["revenue"], horizontal=True)
                st.subheader("Revenue by currency")
                st.dataframe(_currency_table(cfg, q.by_currency(data.sales)), width="stretch")
        left, right = st.columns(2)
        with left:
            st.subheader("Event rate by type (events/s)")
            if rates.empty:
                st.info("No events in this window.")
            else:
                st.altair_chart(_time_lines(rates, "events/s"), width="stretch")
        with right:
            st.subheader("Funnel")
            st.altair_chart(
                alt.Chart(stages.reset_index())
                .mark_bar()
                .encode(
                    x=alt.X("stage", sort=list(stages.index), title=None),
                    y=alt.Y("events", title="events"),
                    tooltip=["stage", "events", "from_previous", "from_first"],
                ),
                width="stretch",
            )
            st.dataframe(
                stages.style.format({"from_previous": "{:.2%}", "from_first": "{:.2%}"}, na_rep=NA),
                width="stretch",
            )

    body()


# --------------------------------------------------------------------------- History


@st.cache_data(ttl=60, show_spinner="Reading the warehouse marts…")
def _history(_cfg: Config, start: date, end: date) -> q.History:
    return q.load_history(_cfg, start, end)


def history(cfg: Config) -> None:
    st.title("Sales history")
    st.caption(
        "Daily marts of the Iceberg warehouse, built by the nightly compaction "
        "(`compact_warehouse`, 02:30 UTC)."
    )
    first, last = q.history_days(datetime.now(UTC))
    picked = st.date_input("Days", value=(first, last), max_value=last, key="history_days")
    if not isinstance(picked, tuple | list) or len(picked) != 2:
        st.info("Pick the last day of the range.")
        return
    start, end = picked

    @st.fragment(run_every=max(cfg.refresh_s, 30.0))
    def body() -> None:
        try:
            data = _history(cfg, start, end)
        except q.Unavailable as exc:
            _unavailable(exc, 30)
            return
        if data.sales.empty and data.funnel.empty:
            st.info(
                f"No data yet: no compacted day between {start} and {end}. The nightly "
                "compaction fills the warehouse; compact a day by hand with "
                "`make compact DAY=YYYY-MM-DD`.",
                icon=":material/hourglass_empty:",
            )
            return
        chosen = st.multiselect(
            "Categories", data.categories, placeholder="All categories", key="history_categories"
        )
        sales = q.select_categories(data.sales, chosen)
        t = q.totals(sales)
        c = st.columns(4)
        c[0].metric("Revenue", _money(t["revenue"], cfg.reporting_currency))
        c[1].metric("Orders", f"{t['orders']:,}")
        c[2].metric("Units", f"{t['units']:,}")
        c[3].metric("Days", f"{sales['day'].nunique() if not sales.empty else 0}")
        _currency_note(cfg, data.unconverted)
        left, right = st.columns(2)
        with left:
            st.subheader(f"Daily revenue by category ({cfg.reporting_currency})")
            st.altair_chart(
                _daily(q.daily(sales, "revenue"), "revenue", bars=True), width="stretch"
            )
        with right:
            st.subheader("Daily orders by category")
            st.altair_chart(_daily(q.daily(sales, "orders"), "orders"), width="stretch")
        st.subheader("Daily funnel conversion")
        conversions = q.funnel_conversions(data.funnel)
        if conversions.empty:
            st.info("No funnel rows in this range.")
        else:
            st.altair_chart(_daily(conversions, "conversion"), width="stretch")
        st.subheader("Revenue by currency")
        st.dataframe(_currency_table(cfg, q.by_currency(sales)), width="stretch")
        with st.expander("Rows"):
            st.dataframe(sales, width="stretch", hide_index=True)
            st.dataframe(data.funnel, width="stretch", hide_index=True)

    body()


# --------------------------------------------------------------------------- Pipeline health


def health(cfg: Config) -> None:
    st.title("Pipeline health")

    @st.fragment(run_every=cfg.refresh_s)
    def body() -> None:
        try:
            h = q.fetch_health(cfg)
        except q.Unavailable as exc:
            _unavailable(exc, cfg.refresh_s)
            return
        _updated(cfg)
        last = h.last_batch
        check = h.health or {}
        metrics = check.get("metrics") or {}
        total_lag = metrics.get("total_lag")
        fresh = q.freshness(
            None if last is None else float(last["age_s"]),
            None if total_lag is None else int(total_lag),
            check.get("status"),
            cfg.freshness_slo_s,
            check.get("reasons") or (),
        )
        color = COLORS[fresh.status]
        st.markdown(
            f"### Freshness SLO: :{color}[{fresh.status.upper()}]\n{fresh.reason}",
        )
        if last is None:
            st.info(
                "No data yet: the stream has not finished a batch. `make run` starts it "
                "through Airflow (`stream_events`).",
                icon=":material/hourglass_empty:",
            )
        dl_rate, dl_series = q.dead_letter_rate(h.progress)
        c = st.columns(6)
        c[0].metric("Last batch age", NA if last is None else f"{float(last['age_s']):.0f} s")
        c[1].metric(
            "Rows/s (processed)",
            NA if last is None else f"{float(last['processed_rows_per_s']):,.1f}",
        )
        c[2].metric("Lag (records)", NA if total_lag is None else f"{int(total_lag):,}")
        c[3].metric("Dead-letter rate", NA if dl_rate is None else f"{dl_rate:.2%}")
        c[4].metric("Failed driver runs (24 h)", f"{q.failed_runs(h.runs)}")
        c[5].metric("Restarts by the health DAG (24 h)", f"{len(h.restarts)}")
        if check:
            status = check.get("status", "?")
            reasons = "; ".join(check.get("reasons") or []) or "no findings"
            st.markdown(
                f"**Last health check** ({float(check['age_s']):.0f} s ago): `{status}` — {reasons}"
            )
        else:
            st.info("The health DAG (`stream_health`) has not recorded a check yet.")
        if cfg.airflow_url:
            st.markdown(
                f"[stream_health]({cfg.airflow_url}/dags/stream_health) · "
                f"[stream_events]({cfg.airflow_url}/dags/stream_events) · "
                f"[stream_control]({cfg.airflow_url}/dags/stream_control) in Airflow"
            )
        left, right = st.columns(2)
        with left:
            st.subheader("Lag per partition (last health check)")
            lag = q.lag_per_partition(check)
            if lag.empty:
                st.info("No lag figures yet.")
            else:
                st.bar_chart(lag)
            st.subheader("Dead-letter rate per minute")
            if dl_series.empty:
                st.info("No dead-letter batches in the last hour.")
            else:
                st.altair_chart(_time_lines(dl_series, "dead letters"), width="stretch")
        with right:
            st.subheader("Rows/s per batch (lake query)")
            tp = q.throughput(h.progress)
            if tp.empty:
                st.info("No batches in the last hour.")
            else:
                st.altair_chart(_time_lines(tp, "rows/s"), width="stretch")
            st.subheader("Driver runs (24 h)")
            st.dataframe(h.runs, width="stretch", hide_index=True)
        if not h.restarts.empty:
            st.subheader("Restarts (24 h)")
            st.dataframe(h.restarts, width="stretch", hide_index=True)

    body()
