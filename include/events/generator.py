"""Deterministic e-commerce activity: users in sessions walking a funnel, plus trouble on demand.

* **Sessions** start at times spread over ``span_seconds`` after ``start`` (with ``rhythm``,
  following a daily curve: quiet nights, a lunch bump, an evening peak) and walk the funnel:
  page view → product views (Zipf-like popularity) → clicks → cart → checkout → purchase, with
  plausible conversion (about 3 % of sessions buy).
* **Disorder**: a share of events arrives *out of order* (event time a few seconds earlier than
  its neighbours) and a share arrives *late* (event time 15-60 minutes back: the stream adds
  them to windows the dashboard already showed).
* **Trouble**: shares of bad events of every kind in :data:`BAD_KINDS`, irrelevant events
  (heartbeats, bots, internal users) and duplicates (the same bytes sent again).
* **Live mode** (``live=True``): event times are the wall clock at generation, for rate-limited
  traffic into a running stream.

The same arguments give the same events (``live`` aside). Each item is a :class:`Produced`
record carrying the Kafka key and value bytes and what the event is meant to be, so tests and
the reconciliation know what to expect.
"""

from __future__ import annotations

import math
import random
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from itertools import islice

import orjson

from include.events.catalog import Catalog, build_catalog
from include.events.contract import (
    MAX_EVENT_BYTES,
    SCHEMA_VERSION,
    Channel,
    Device,
    EventType,
    TrafficType,
)

BAD_KINDS = (
    "malformed_json",
    "wrong_type",
    "missing_field",
    "unknown_type",
    "negative_price",
    "absurd_timestamp",
    "oversize",
)
# What the contract must refuse each bad kind for: the reason of its dead letter starts with
# this (docs/event-contract.md lists the reasons). The generator's own statement, the oracle of
# the dead-letter checks.
EXPECTED_REASON_PREFIX = {
    "malformed_json": "malformed_json",
    "wrong_type": "wrong_type",
    "missing_field": "missing_field:",
    "unknown_type": "unknown_event_type",
    "negative_price": "out_of_range:price",
    "absurd_timestamp": "absurd_timestamp",
    "oversize": "oversize",
}
_DEVICES = [d.value for d in Device]
_CHANNELS = [c.value for c in Channel]
_IRRELEVANT_TRAFFIC = (TrafficType.BOT.value, TrafficType.INTERNAL.value)
_PRICED_FIELDS = ("product_id", "category", "price", "quantity", "currency")


# Not frozen: a frozen dataclass sets each field through object.__setattr__ (5x slower on the
# generator's hot path, measured by `make bench`); nothing changes a Produced after creation.
@dataclass(slots=True)
class Produced:
    key: bytes
    value: bytes
    event_id: str | None  # None when the payload has no readable id
    event_type: str | None
    kind: str  # "valid", "irrelevant", "duplicate" or one of BAD_KINDS
    revenue: float = 0.0  # price * quantity for valid purchases
    units: int = 0
    category: str | None = None
    late: bool = False  # event time 15-60 minutes back when sent
    event_time_ms: int = 0
    currency: str | None = None  # of revenue (priced events)


@dataclass(frozen=True)
class GeneratorConfig:
    seed: int = 42
    users: int = 5_000
    start: datetime | None = None  # event-time origin; default: 5 minutes ago
    span_seconds: float = 300.0  # session starts spread over this span
    rhythm: bool = False  # daily intensity curve over the span
    live: bool = False  # event time = wall clock (rate-limited traffic)
    bad_share: float = 0.0
    bad_kinds: tuple[str, ...] = BAD_KINDS
    irrelevant_share: float = 0.0
    duplicate_share: float = 0.0
    out_of_order_share: float = 0.0
    late_share: float = 0.0
    late_seconds: tuple[int, int] = (15 * 60, 60 * 60)

    def validate(self) -> None:
        unknown = set(self.bad_kinds) - set(BAD_KINDS)
        if unknown:
            raise ValueError(f"unknown bad kind(s): {sorted(unknown)}; known: {list(BAD_KINDS)}")
        shares = {
            "bad_share": self.bad_share,
            "irrelevant_share": self.irrelevant_share,
            "duplicate_share": self.duplicate_share,
            "out_of_order_share": self.out_of_order_share,
            "late_share": self.late_share,
        }
        for name, share in shares.items():
            if not 0.0 <= share < 1.0:
                raise ValueError(f"{name}={share} must be in [0, 1)")
        if self.bad_share + self.irrelevant_share + self.duplicate_share >= 1.0:
            raise ValueError("bad_share + irrelevant_share + duplicate_share must stay below 1")
        if self.users < 1 or self.span_seconds <= 0:
            raise ValueError("users must be >= 1 and span_seconds > 0")


def daily_intensity(hour: float) -> float:
    """Relative traffic by hour of day (UTC): night trough, lunch bump, evening peak; max 1."""
    night = 0.15
    lunch = 0.45 * math.exp(-(((hour - 12.5) / 1.8) ** 2))
    evening = 0.85 * math.exp(-(((hour - 20.0) / 2.5) ** 2))
    return min(1.0, night + lunch + evening)


_dumps = orjson.dumps
# Plain strings: an enum member's .value is a descriptor lookup on the hot path.
_PAGE_VIEW = EventType.PAGE_VIEW.value
_PRODUCT_VIEW = EventType.PRODUCT_VIEW.value
_CLICK = EventType.CLICK.value
_ADD_TO_CART = EventType.ADD_TO_CART.value
_REMOVE_FROM_CART = EventType.REMOVE_FROM_CART.value
_CHECKOUT = EventType.CHECKOUT.value
_PURCHASE = EventType.PURCHASE.value
_HEARTBEAT = EventType.HEARTBEAT.value

_SECOND_CACHE: dict[int, str] = {}


def iso_ms(epoch_ms: int) -> str:
    """``2026-11-24T12:00:00.123Z`` from epoch milliseconds (cached per second: hot path)."""
    sec, ms = divmod(epoch_ms, 1000)
    prefix = _SECOND_CACHE.get(sec)
    if prefix is None:
        if len(_SECOND_CACHE) > 100_000:
            _SECOND_CACHE.clear()
        prefix = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))
        _SECOND_CACHE[sec] = prefix
    return f"{prefix}.{ms:03d}Z"


def _uuid4(rng: random.Random) -> str:
    h = f"{rng.getrandbits(128):032x}"
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-a{h[17:20]}-{h[20:]}"


class _Simulation:
    def __init__(self, cfg: GeneratorConfig, clock: Callable[[], float]) -> None:
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        self.catalog: Catalog = build_catalog()  # one catalog for every run: stable product ids
        self.clock = clock
        origin = cfg.start or (datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5))
        self.origin_ms = int(origin.timestamp() * 1000)
        self.recent: deque[Produced] = deque(maxlen=64)  # candidates for duplicates

    # ---- sessions -------------------------------------------------------------------------

    def _session_start_ms(self) -> int:
        if self.cfg.live:
            return int(self.clock() * 1000)
        rng = self.rng
        span_ms = int(self.cfg.span_seconds * 1000)
        while True:
            t = self.origin_ms + rng.randrange(span_ms)
            if not self.cfg.rhythm:
                return t
            hour = (t // 1000 % 86_400) / 3600.0
            if rng.random() < daily_intensity(hour):
                return t

    def sessions(self) -> Iterator[dict]:
        while True:
            yield from self._session()

    def _session(self) -> Iterator[dict]:
        """One user's visit, as event dicts with times in epoch ms."""
        rng = self.rng
        pick = self.catalog.pick
        rnd = rng.random
        live = self.cfg.live
        user_id = f"u{int(rnd() * self.cfg.users):07d}"
        session_id = _uuid4(rng)
        device = rng.choice(_DEVICES)
        channel = rng.choice(_CHANNELS)
        t = self._session_start_ms()

        def event(etype: str, product=None, qty: int | None = None) -> dict:
            nonlocal t
            # random() arithmetic instead of randint(): this is the generator's hot path
            t = int(self.clock() * 1000) if live else t + 200 + int(rnd() * 19_800)
            e = {
                "event_id": _uuid4(rng),
                "event_type": etype,
                "schema_version": SCHEMA_VERSION,
                "event_time": t,
                "ingestion_time": t + 5 + int(rnd() * 395),
                "user_id": user_id,
                "session_id": session_id,
                "device": device,
                "channel": channel,
                "traffic_type": "user",
            }
            if product is not None:
                e["product_id"] = product.product_id
                e["category"] = product.category
                if qty is not None:
                    e["price"] = product.price
                    e["quantity"] = qty
                    e["currency"] = product.currency
            return e

        yield event(_PAGE_VIEW)
        product = pick(rng)
        for _ in range(rng.randint(1, 3)):
            yield event(_PRODUCT_VIEW, product)
            if rng.random() < 0.5:
                yield event(_CLICK, product)
            product = pick(rng)
        if rng.random() < 0.3:
            qty = rng.choice((1, 1, 1, 2, 3))
            yield event(_ADD_TO_CART, product, qty)
            if rng.random() < 0.15:
                yield event(_REMOVE_FROM_CART, product, qty)
                return
            if rng.random() < 0.6:
                yield event(_CHECKOUT)
                if rng.random() < 0.8:
                    yield event(_PURCHASE, product, qty)

    # ---- shaping each event ---------------------------------------------------------------

    def _finish(self, e: dict, kind: str, late: bool = False) -> Produced:
        t = e["event_time"]
        e["event_time"] = iso_ms(t)
        e["ingestion_time"] = iso_ms(e["ingestion_time"])
        revenue, units = 0.0, 0
        if kind == "valid" and e["event_type"] == _PURCHASE:
            revenue = round(e["price"] * e["quantity"], 2)
            units = e["quantity"]
        # positional: the hot path (key, value, event_id, event_type, kind, revenue, units,
        # category, late, event_time_ms, currency)
        return Produced(
            e["user_id"].encode(),
            _dumps(e),
            e["event_id"],
            e["event_type"],
            kind,
            revenue,
            units,
            e.get("category"),
            late,
            t,
            e.get("currency"),
        )

    def _bad(self, kind: str, e: dict) -> Produced:
        rng = self.rng
        key = e["user_id"].encode()
        e["event_time"] = iso_ms(e["event_time"])
        e["ingestion_time"] = iso_ms(e["ingestion_time"])
        if kind == "malformed_json":
            raw = orjson.dumps(e)[: rng.randint(5, 40)]
            return Produced(key, raw, None, None, kind)
        if kind == "wrong_type":
            e["schema_version"] = "one"
            e["quantity"] = "lots"
        elif kind == "missing_field":
            del e["user_id"]
        elif kind == "unknown_type":
            e["event_type"] = "teleport"
        elif kind == "negative_price":
            e.update(
                event_type="purchase",
                product_id=e.get("product_id") or "p00000",
                category=e.get("category") or "books",
                price=-abs(e.get("price") or 9.99),
                quantity=1,
                currency="USD",
            )
        elif kind == "absurd_timestamp":
            e["event_time"] = (
                "1970-01-01T00:00:00.000Z" if rng.random() < 0.5 else "2999-01-01T00:00:00.000Z"
            )
        elif kind == "oversize":
            e["padding"] = "x" * (MAX_EVENT_BYTES + 100)
        return Produced(key, orjson.dumps(e), e["event_id"], e.get("event_type"), kind)

    def events(self) -> Iterator[Produced]:
        cfg = self.cfg
        rng = self.rng
        bad_cut = cfg.bad_share
        irrelevant_cut = bad_cut + cfg.irrelevant_share
        duplicate_cut = irrelevant_cut + cfg.duplicate_share
        bad_i = 0
        recent = self.recent
        for e in self.sessions():
            roll = rng.random()
            if roll < bad_cut and cfg.bad_kinds:
                yield self._bad(cfg.bad_kinds[bad_i % len(cfg.bad_kinds)], e)
                bad_i += 1
                continue
            if roll < duplicate_cut and roll >= irrelevant_cut and recent:
                yield replace(rng.choice(recent), kind="duplicate", revenue=0.0, units=0)
                continue
            late = False
            shift = rng.random()
            if shift < cfg.late_share:
                back = rng.randint(*cfg.late_seconds) * 1000
                e["event_time"] -= back  # happened long ago (e.g. an app offline), sent now
                late = True
            elif shift < cfg.late_share + cfg.out_of_order_share:
                e["event_time"] -= rng.randint(1_000, 30_000)
            if roll < irrelevant_cut:
                if rng.random() < 0.5:
                    e["traffic_type"] = rng.choice(_IRRELEVANT_TRAFFIC)
                else:
                    for k in _PRICED_FIELDS:
                        e.pop(k, None)
                    e["event_type"] = _HEARTBEAT
                yield self._finish(e, "irrelevant", late)
                continue
            produced = self._finish(e, "valid", late)
            recent.append(produced)  # a deque of the last 64
            yield produced


def iter_events(cfg: GeneratorConfig, clock: Callable[[], float] = time.time) -> Iterator[Produced]:
    """An endless stream of events for ``cfg``."""
    cfg.validate()
    return _Simulation(cfg, clock).events()


def generate(n: int, **kwargs) -> list[Produced]:
    """``n`` events; keyword arguments are :class:`GeneratorConfig` fields."""
    return list(islice(iter_events(GeneratorConfig(**kwargs)), n))
