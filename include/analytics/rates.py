"""Dated exchange rates from a file into the catalog's ``fx_rates`` table: how a deployment
replaces the demo's synthetic series (``include/events/catalog.py``) with its own.

Usage::

    python -m include.analytics.rates RATES.csv [--schema public]

The CSV has a header and the columns ``day,currency,quote,rate`` (ISO date; the contract's
currency codes; on ``day`` one unit of ``currency`` is worth ``rate`` units of ``quote``).
Postgres is reached through libpq's ``PG*`` environment. The rows are upserted (keyed by pair
and day) in one transaction; a bad line stops the load with its line number and nothing is
written.
"""

from __future__ import annotations

import argparse
import csv
import math
import sys
from collections.abc import Iterable
from datetime import date

from include.events.catalog import Rate
from include.events.contract import Currency

COLUMNS = ("day", "currency", "quote", "rate")


class RatesError(ValueError):
    """A rates file cannot be loaded; the message names the line and the field."""


def parse(lines: Iterable[str], source: str = "rates") -> list[Rate]:
    """The rates of a CSV file's ``lines``; :class:`RatesError` on the first bad line."""
    reader = csv.DictReader(lines)
    missing = [c for c in COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise RatesError(f"{source}: the header lacks {missing} (columns: {', '.join(COLUMNS)})")
    known = {c.value for c in Currency}
    out: list[Rate] = []
    for row in reader:
        where = f"{source}:{reader.line_num}"
        try:
            day = date.fromisoformat((row["day"] or "").strip())
        except ValueError:
            raise RatesError(f"{where}: day {row['day']!r} is not an ISO date") from None
        pair = []
        for field in ("currency", "quote"):
            code = (row[field] or "").strip().upper()
            if code not in known:
                raise RatesError(f"{where}: {field} {row[field]!r} is not one of {sorted(known)}")
            pair.append(code)
        if pair[0] == pair[1]:
            raise RatesError(f"{where}: currency and quote are both {pair[0]}")
        try:
            rate = float(row["rate"])
        except (TypeError, ValueError):
            raise RatesError(f"{where}: rate {row['rate']!r} is not a number") from None
        if not math.isfinite(rate) or rate <= 0:
            raise RatesError(f"{where}: rate {row['rate']!r} must be a positive number")
        out.append(Rate(day, pair[0], pair[1], rate))
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m include.analytics.rates", description=__doc__)
    p.add_argument("file", help="CSV with the columns day,currency,quote,rate")
    p.add_argument("--schema", default="public", help="the analytics schema (migrated)")
    args = p.parse_args(argv)
    from include.analytics import store
    from include.endpoints import PostgresEndpoint

    try:
        with open(args.file, newline="") as f:
            rates = parse(f, args.file)
    except (OSError, RatesError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    conn = store.connect(PostgresEndpoint.from_libpq_env(), schema=args.schema)
    try:
        store.upsert_rates(conn, rates)
        conn.commit()
    finally:
        conn.close()
    print(f"{len(rates)} rate(s) loaded into {args.schema}.fx_rates")
    return 0


if __name__ == "__main__":
    sys.exit(main())
