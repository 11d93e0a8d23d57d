"""A deterministic product catalog: categories, products and prices from a seed."""

from __future__ import annotations

import bisect
import random
from dataclasses import dataclass
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


@dataclass(frozen=True)
class Product:
    product_id: str
    category: str
    price: float


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
    rng.shuffle(products)  # popularity rank independent of category
    weights = [1.0 / rank for rank in range(1, len(products) + 1)]
    return Catalog(tuple(products), tuple(accumulate(weights)))
