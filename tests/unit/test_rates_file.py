"""A deployment's own exchange rates from a CSV file (include/analytics/rates.py): parsed,
or refused with the line and the field named."""

from __future__ import annotations

from datetime import date

import pytest

from include.analytics.rates import RatesError, parse
from include.events.catalog import Rate

HEADER = "day,currency,quote,rate\n"


def test_rates_are_read_from_a_csv_file():
    rates = parse([HEADER, "2026-11-20,EUR,USD,1.0912\n", "2026-11-20, gbp ,usd,1.27\n"])
    assert rates == [
        Rate(date(2026, 11, 20), "EUR", "USD", 1.0912),
        Rate(date(2026, 11, 20), "GBP", "USD", 1.27),
    ]
    assert parse([HEADER]) == []


@pytest.mark.parametrize(
    ("line", "named"),
    [
        ("20/11/2026,EUR,USD,1.09", "rates:2: day '20/11/2026' is not an ISO date"),
        ("2026-11-20,BTC,USD,1.09", "rates:2: currency 'BTC' is not one of"),
        ("2026-11-20,EUR,EUR,1", "rates:2: currency and quote are both EUR"),
        ("2026-11-20,EUR,USD,one", "rates:2: rate 'one' is not a number"),
        ("2026-11-20,EUR,USD,-1", "rates:2: rate '-1' must be a positive number"),
        ("2026-11-20,EUR,USD,nan", "rates:2: rate 'nan' must be a positive number"),
        ("2026-11-20,EUR,USD", "rates:2: rate None is not a number"),
    ],
)
def test_a_bad_line_is_named(line, named):
    with pytest.raises(RatesError, match=named.replace("(", r"\(")):
        parse([HEADER, line + "\n"])


def test_a_file_without_the_columns_is_refused():
    with pytest.raises(RatesError, match=r"the header lacks \['quote', 'rate'\]"):
        parse(["day,currency\n", "2026-11-20,EUR\n"], "rates")
