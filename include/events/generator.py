"""Deterministic e-commerce activity: sessions walking a funnel, plus bad events on demand.

``generate(n, seed=...)`` returns the same events for the same arguments. Each item is a
:class:`Produced` record carrying the Kafka key and value bytes and what the event is meant to
be (valid, irrelevant or a bad kind), so tests and the reconciliation know what to expect.
"""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from include.events.catalog import Catalog, build_catalog
from include.events.contract import (
    MAX_EVENT_BYTES,
    SCHEMA_VERSION,
    Channel,
    Currency,
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


@dataclass(frozen=True)
class Produced:
    key: bytes
    value: bytes
    event_id: str | None  # None when the payload has no readable id
    event_type: str | None
    kind: str  # "valid", "irrelevant", "duplicate" or one of BAD_KINDS
    revenue: float = 0.0  # price * quantity for valid purchases
    units: int = 0
    category: str | None = None


def _iso(ts: datetime) -> str:
    return ts.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class _Session:
    """A user's visit: page views, product views, maybe a cart, maybe a purchase."""

    def __init__(self, rng: random.Random, catalog: Catalog, user: int, start: datetime) -> None:
        self.rng = rng
        self.catalog = catalog
        self.user_id = f"u{user:07d}"
        self.session_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        self.time = start
        self.device = rng.choice(list(Device))
        self.channel = rng.choice(list(Channel))

    def events(self) -> Iterator[dict]:
        rng = self.rng
        yield self._event(EventType.PAGE_VIEW)
        product = self.catalog.pick(rng)
        for _ in range(rng.randint(1, 3)):
            yield self._event(EventType.PRODUCT_VIEW, product)
            if rng.random() < 0.5:
                yield self._event(EventType.CLICK, product)
            product = self.catalog.pick(rng)
        if rng.random() < 0.3:
            qty = rng.choice((1, 1, 1, 2, 3))
            yield self._event(EventType.ADD_TO_CART, product, qty)
            if rng.random() < 0.15:
                yield self._event(EventType.REMOVE_FROM_CART, product, qty)
                return
            if rng.random() < 0.6:
                yield self._event(EventType.CHECKOUT)
                if rng.random() < 0.8:
                    yield self._event(EventType.PURCHASE, product, qty)

    def _event(self, etype: EventType, product=None, qty: int | None = None) -> dict:
        self.time += timedelta(milliseconds=self.rng.randint(200, 20_000))
        event = {
            "event_id": str(uuid.UUID(int=self.rng.getrandbits(128), version=4)),
            "event_type": etype.value,
            "schema_version": SCHEMA_VERSION,
            "event_time": _iso(self.time),
            "ingestion_time": _iso(self.time + timedelta(milliseconds=self.rng.randint(5, 400))),
            "user_id": self.user_id,
            "session_id": self.session_id,
            "device": self.device.value,
            "channel": self.channel.value,
            "traffic_type": TrafficType.USER.value,
        }
        if product is not None:
            event["product_id"] = product.product_id
            event["category"] = product.category
        if qty is not None and product is not None:
            event["price"] = product.price
            event["quantity"] = qty
            event["currency"] = Currency.USD.value
        return event


def _valid(event: dict, kind: str = "valid") -> Produced:
    revenue = units = 0
    if kind == "valid" and event["event_type"] == EventType.PURCHASE.value:
        revenue = round(event["price"] * event["quantity"], 2)
        units = event["quantity"]
    return Produced(
        key=event["user_id"].encode(),
        value=json.dumps(event, separators=(",", ":")).encode(),
        event_id=event["event_id"],
        event_type=event["event_type"],
        kind=kind,
        revenue=revenue,
        units=units,
        category=event.get("category"),
    )


def _bad(kind: str, event: dict, rng: random.Random) -> Produced:
    e = dict(event)
    key = e["user_id"].encode()
    if kind == "malformed_json":
        raw = json.dumps(e)[: rng.randint(5, 40)].encode()
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
    return Produced(key, json.dumps(e).encode(), e["event_id"], e.get("event_type"), kind)


def generate(
    n: int,
    *,
    seed: int = 42,
    start: datetime | None = None,
    bad_share: float = 0.0,
    bad_kinds: tuple[str, ...] = BAD_KINDS,
    irrelevant_share: float = 0.0,
    duplicate_share: float = 0.0,
    users: int = 5_000,
) -> list[Produced]:
    """``n`` events; shares are fractions of ``n`` turned into bad/irrelevant/duplicate ones."""
    unknown = set(bad_kinds) - set(BAD_KINDS)
    if unknown:
        raise ValueError(f"unknown bad kind(s): {sorted(unknown)}; known: {list(BAD_KINDS)}")
    for name, share in (
        ("bad_share", bad_share),
        ("irrelevant_share", irrelevant_share),
        ("duplicate_share", duplicate_share),
    ):
        if not 0.0 <= share < 1.0:
            raise ValueError(f"{name}={share} must be in [0, 1)")
    rng = random.Random(seed)
    catalog = build_catalog(seed=seed)
    now = start or datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=10)
    out: list[Produced] = []
    kinds_cycle = 0
    while len(out) < n:
        session = _Session(
            rng, catalog, rng.randrange(users), now + timedelta(seconds=rng.randint(0, 300))
        )
        for event in session.events():
            if len(out) >= n:
                break
            roll = rng.random()
            if roll < bad_share and bad_kinds:
                out.append(_bad(bad_kinds[kinds_cycle % len(bad_kinds)], event, rng))
                kinds_cycle += 1
            elif roll < bad_share + irrelevant_share:
                if rng.random() < 0.5:
                    event["traffic_type"] = rng.choice(
                        (TrafficType.BOT, TrafficType.INTERNAL)
                    ).value
                else:
                    event = {
                        k: v
                        for k, v in event.items()
                        if k not in ("product_id", "category", "price", "quantity", "currency")
                    }
                    event["event_type"] = EventType.HEARTBEAT.value
                out.append(_valid(event, "irrelevant"))
            elif roll < bad_share + irrelevant_share + duplicate_share and out:
                originals = [p for p in out[-50:] if p.kind == "valid"]
                if originals:
                    dup = rng.choice(originals)
                    out.append(
                        Produced(dup.key, dup.value, dup.event_id, dup.event_type, "duplicate")
                    )
                else:
                    out.append(_valid(event))
            else:
                out.append(_valid(event))
    return out
