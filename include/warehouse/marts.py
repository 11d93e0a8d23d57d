"""The warehouse's marts, declared once.

A mart is a table of the marts namespace, partitioned by ``day``, made by one transform of
``spark_apps/transforms/warehouse.py`` from the verified events of its days. The nightly
compaction builds every mart for the day it compacts (``spark_apps/compact_events.py``),
``rebuild_marts`` builds them for any days from the events table (a new mart covers the days
whose raw files expired), the dashboard reads them and the tests check them, all from this
list. A new mart: a transform ``events -> rows with a day column`` and one line here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class Mart:
    name: str  # the table in the marts namespace
    transform: str  # the function of spark_apps.transforms.warehouse that makes its rows
    grain: str  # what one row is

    def table(self, catalog: str, namespace: str) -> str:
        return f"{catalog}.{namespace}.{self.name}"


SALES = Mart(
    "daily_sales_by_category",
    "daily_sales",
    "a day, a category and a currency: revenue (in that currency), orders, units, buyers, "
    "average order value",
)
FUNNEL = Mart(
    "daily_funnel",
    "daily_funnel",
    "a day: sessions reaching each funnel stage, and each step's conversion",
)
MARTS: tuple[Mart, ...] = (SALES, FUNNEL)


def named(names: str | Iterable[str] = "") -> tuple[Mart, ...]:
    """The marts of ``names`` (comma-separated or a list; empty: all), in registry order;
    an unknown name raises ``ValueError`` listing the known ones."""
    wanted = [n.strip() for n in (names.split(",") if isinstance(names, str) else names)]
    wanted = [n for n in wanted if n]
    if not wanted:
        return MARTS
    known = {m.name: m for m in MARTS}
    unknown = sorted(set(wanted) - set(known))
    if unknown:
        raise ValueError(f"unknown mart(s) {unknown}; the marts are {sorted(known)}")
    return tuple(m for m in MARTS if m.name in wanted)
