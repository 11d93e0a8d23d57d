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
