"""The dashboard's time charts read in 24-hour UTC, as the page header (a 13:26 UTC minute is
"13:26", never a 12-hour "01:26" in the browser's zone)."""

from __future__ import annotations

import pandas as pd

from dashboard.pages import _time_lines


def test_time_axes_are_24_hour_utc():
    frame = pd.DataFrame(
        {"books": [1.0, 2.0], "games": [0.0, 3.0]},
        index=pd.to_datetime(["2026-12-02T13:26:00Z", "2026-12-02T13:27:00Z"]),
    )
    spec = _time_lines(frame, "revenue").to_dict()
    x = spec["encoding"]["x"]
    assert (x["type"], x["axis"]["format"], x["scale"]["type"]) == ("temporal", "%H:%M", "utc")
    (rows,) = spec["datasets"].values()
    assert len(rows) == 4 and {r["series"] for r in rows} == {"books", "games"}
    assert pd.Timestamp(rows[0]["t"]) == pd.Timestamp("2026-12-02T13:26:00Z")


def test_daily_bars_are_labelled_by_date_without_a_clock():
    from dashboard.pages import _daily

    frame = pd.DataFrame({"books": [5.0, 7.0]}, index=pd.to_datetime(["2026-11-29", "2026-11-30"]))
    spec = _daily(frame, "revenue", bars=True).to_dict()
    assert spec["encoding"]["x"]["type"] == "ordinal"
    (rows,) = spec["datasets"].values()
    assert [r["day"] for r in rows] == ["2026-11-29", "2026-11-30"]
