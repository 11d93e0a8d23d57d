"""The analysts' dashboard (Streamlit): ``streamlit run dashboard/app.py``.

Three pages: **Live** (per-minute aggregates the stream upserts into Postgres), **History**
(the daily marts of the Iceberg warehouse) and **Pipeline health** (progress, health checks,
restarts). Settings come from ``RTAP_DASHBOARD_*`` (include/dashboard/config.py); the devstack
starts it with read-only credentials. Queries and shaping live in include/dashboard/queries.py;
this file only lays out pages.
"""

from __future__ import annotations

import os

import streamlit as st

from dashboard import pages
from include.dashboard.config import ConfigError, from_env


def main() -> None:
    st.set_page_config(page_title="Analytics dashboard", page_icon=":bar_chart:", layout="wide")
    try:
        cfg = from_env(os.environ)
    except ConfigError as exc:
        st.error(f"The dashboard is not configured: {exc}")
        st.stop()
    nav = st.navigation(
        [
            st.Page(lambda: pages.live(cfg), title="Live", url_path="live", default=True),
            st.Page(lambda: pages.history(cfg), title="History", url_path="history"),
            st.Page(lambda: pages.health(cfg), title="Pipeline health", url_path="health"),
        ]
    )
    nav.run()


main()
