"""A deterministic product catalog: categories, products, their prices and currencies from a
seed, and the dated exchange rates between those currencies (what turns the per-currency
amounts the platform keeps into one reporting currency)."""

from __future__ import annotations

import bisect
import hashlib
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from itertools import accumulate

CATEGORIES: dict[str, tuple[float, float]] = {  # name -> price range
    "electronics": (49.0, 1499.0),
    "books": (4.0, 60.0),
    "fashion": (9.0, 250.0),
    "home": (5.0, 400.0),
    "sports": (8.0, 600.0),
    "beauty": (3.0, 120.0),
    "toys": (5.0, 150.0),
    "grocery": (1.0, 40.0),
}


# Sellers' currencies and each one's share of the products: a marketplace with regional
# sellers, so that the demo's amounts come in several currencies (never added together).
CURRENCY_SHARES: tuple[tuple[str, float], ...] = (("USD", 0.7), ("EUR", 0.2), ("GBP", 0.1))
# Each currency's value in USD around which the synthetic daily rates move (a few per cent).
USD_VALUE: dict[str, float] = {"USD": 1.0, "EUR": 1.08, "GBP": 1.27}
RATE_DAYS_BACK = 400  # the rates loaded with the catalog: this many days back to tomorrow


@dataclass(frozen=True)
class Product:
    product_id: str
    category: str
    price: float
    currency: str = "USD"


@dataclass(frozen=True)
class Rate:
    """On ``day``, one unit of ``currency`` is worth ``rate`` units of ``quote``."""

    day: date
    currency: str
    quote: str
    rate: float


def usd_value(currency: str, day: date) -> float:
    """The synthetic value of one unit of ``currency`` in USD on ``day``: a slow wave of a few
    per cent around :data:`USD_VALUE` plus a daily wobble, a pure function of the pair and the
    day (reloading the rates never changes a published one)."""
    if currency == "USD":
        return 1.0
    n = day.toordinal()
    wobble = int(hashlib.sha256(f"{currency}{n}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
    phase = len(currency) + ord(currency[0])
    return round(
        USD_VALUE[currency] * (1 + 0.04 * math.sin(n / 45 + phase) + 0.004 * (wobble - 0.5)), 6
    )


def daily_rates(first: date, last: date) -> Iterator[Rate]:
    """Every ordered pair of the catalog's currencies, each day from ``first`` to ``last``."""
    currencies = [c for c, _ in CURRENCY_SHARES]
    day = first
    while day <= last:
        values = {c: usd_value(c, day) for c in currencies}
        for c in currencies:
            for q in currencies:
                if c != q:
                    yield Rate(day, c, q, round(values[c] / values[q], 8))
        day += timedelta(days=1)


def recent_rates(today: date | None = None, days_back: int = RATE_DAYS_BACK) -> list[Rate]:
    """The rates published with the catalog: ``days_back`` days before ``today`` (UTC) up to
    tomorrow (a reader converts with the newest rate on or before an amount's day)."""
    today = today or datetime.now(UTC).date()
    return list(daily_rates(today - timedelta(days=days_back), today + timedelta(days=1)))


@dataclass(frozen=True)
class Catalog:
    products: tuple[Product, ...]
    _cumulative: tuple[float, ...]

    def pick(self, rng: random.Random) -> Product:
        """A product by Zipf-like popularity (rank r has weight 1/r)."""
        x = rng.random() * self._cumulative[-1]
        return self.products[bisect.bisect_left(self._cumulative, x)]


def build_catalog(*, seed: int = 42, products_per_category: int = 50) -> Catalog:
    rng = random.Random(f"catalog-{seed}")
    products = []
    for category, (low, high) in CATEGORIES.items():
        for _ in range(products_per_category):
            pid = f"p{len(products):05d}"
            products.append(Product(pid, category, round(rng.uniform(low, high), 2)))
    # A product's currency from its own draw (the prices above stay those of earlier catalogs),
    # its price converted at the reference value so that it still costs about the same.
    pick_currency = random.Random(f"currency-{seed}")
    names, shares = zip(*CURRENCY_SHARES, strict=True)
    cumulative = tuple(accumulate(shares))
    for i, p in enumerate(products):
        currency = names[bisect.bisect_left(cumulative, pick_currency.random() * cumulative[-1])]
        if currency != "USD":
            price = max(round(p.price / USD_VALUE[currency], 2), 0.01)
            products[i] = Product(p.product_id, p.category, price, currency)
    rng.shuffle(products)  # popularity rank independent of category
    weights = [1.0 / rank for rank in range(1, len(products) + 1)]
    return Catalog(tuple(products), tuple(accumulate(weights)))
