"""The user-activity event contract: one definition that producer, stream, tests and docs use.

An event is a flat JSON object. This module is the only place its fields are listed: the
generator builds events from it, the Spark app derives its parse schema and its validation
rules from it (``spark_apps.common.contract_sql``), and ``docs/event-contract.md`` is
generated from it (``python -m include.events.contract``).

Kafka key: ``user_id`` (per-user ordering). Value: UTF-8 JSON.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

SCHEMA_VERSION = 1
MAX_EVENT_BYTES = 8 * 1024  # larger payloads are rejected as "oversize"
# Event times further than this from the processing time are "absurd" and rejected.
MAX_FUTURE_SKEW_SECONDS = 15 * 60
MAX_PAST_AGE_DAYS = 7


class EventType(StrEnum):
    PAGE_VIEW = "page_view"
    PRODUCT_VIEW = "product_view"
    CLICK = "click"
    ADD_TO_CART = "add_to_cart"
    REMOVE_FROM_CART = "remove_from_cart"
    CHECKOUT = "checkout"
    PURCHASE = "purchase"
    HEARTBEAT = "heartbeat"  # client keep-alive: valid but irrelevant for analytics


class Device(StrEnum):
    WEB = "web"
    IOS = "ios"
    ANDROID = "android"


class Channel(StrEnum):
    DIRECT = "direct"
    ORGANIC = "organic"
    PAID = "paid"
    EMAIL = "email"
    SOCIAL = "social"


class TrafficType(StrEnum):
    USER = "user"
    BOT = "bot"  # crawlers: irrelevant
    INTERNAL = "internal"  # our own test users: irrelevant


class Currency(StrEnum):
    USD = "USD"
    EUR = "EUR"
    GBP = "GBP"


PRODUCT_EVENTS = frozenset(
    {
        EventType.PRODUCT_VIEW,
        EventType.CLICK,
        EventType.ADD_TO_CART,
        EventType.REMOVE_FROM_CART,
        EventType.PURCHASE,
    }
)
PRICED_EVENTS = frozenset({EventType.ADD_TO_CART, EventType.REMOVE_FROM_CART, EventType.PURCHASE})
ALL_TYPES = frozenset(EventType)
# Funnel stages (views -> clicks -> carts -> checkouts -> purchases) and the event types that
# count for each: a stage's conversion is relative to the one before. Used by the daily funnel
# mart and by the dashboard's live funnel.
FUNNEL_STAGES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("views", (EventType.PAGE_VIEW.value, EventType.PRODUCT_VIEW.value)),
    ("clicks", (EventType.CLICK.value,)),
    ("carts", (EventType.ADD_TO_CART.value,)),
    ("checkouts", (EventType.CHECKOUT.value,)),
    ("purchases", (EventType.PURCHASE.value,)),
)


@dataclass(frozen=True)
class Field:
    name: str
    type: str  # one of: string, long, double, timestamp, boolean
    description: str
    required_for: frozenset[EventType] = field(default=ALL_TYPES)
    enum: type[StrEnum] | None = None
    minimum: float | None = None
    unit: str | None = None


FIELDS: tuple[Field, ...] = (
    Field("event_id", "string", "Unique id of the event (UUID); dedupe and reconciliation key."),
    Field("event_type", "string", "What happened.", enum=EventType),
    Field(
        "schema_version",
        "long",
        f"Version of this contract (currently {SCHEMA_VERSION}).",
        minimum=1,
    ),
    Field(
        "event_time",
        "timestamp",
        "When it happened on the client (ISO-8601, UTC).",
        unit="ISO-8601 UTC",
    ),
    Field(
        "ingestion_time",
        "timestamp",
        "When the producer sent it (ISO-8601, UTC).",
        unit="ISO-8601 UTC",
    ),
    Field("user_id", "string", "Pseudonymous user id; also the Kafka key."),
    Field("session_id", "string", "Browsing session id."),
    Field("product_id", "string", "Catalog product id.", required_for=PRODUCT_EVENTS),
    Field("category", "string", "Catalog category of the product.", required_for=PRODUCT_EVENTS),
    Field(
        "price",
        "double",
        "Unit price.",
        required_for=PRICED_EVENTS,
        minimum=0.0,
        unit="currency units",
    ),
    Field(
        "quantity",
        "long",
        "Units in the cart line or order.",
        required_for=PRICED_EVENTS,
        minimum=1,
        unit="units",
    ),
    Field(
        "currency", "string", "ISO-4217 code of price.", required_for=PRICED_EVENTS, enum=Currency
    ),
    Field("device", "string", "Client device.", required_for=frozenset(), enum=Device),
    Field("channel", "string", "Acquisition channel.", required_for=frozenset(), enum=Channel),
    Field(
        "traffic_type",
        "string",
        "Who generated it; bots and internal users are irrelevant.",
        required_for=frozenset(),
        enum=TrafficType,
    ),
)

FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)


def field_by_name(name: str) -> Field:
    for f in FIELDS:
        if f.name == name:
            return f
    raise KeyError(name)


def required_fields(event_type: EventType) -> list[str]:
    return [f.name for f in FIELDS if event_type in f.required_for]


def markdown() -> str:
    """The contract as a Markdown table (docs/event-contract.md is generated from this)."""
    lines = [
        f"# Event contract (schema version {SCHEMA_VERSION})",
        "",
        "Generated by `python -m include.events.contract` from `include/events/contract.py`; "
        "do not edit by hand.",
        "",
        f"Kafka key: `user_id`. Value: UTF-8 JSON, at most {MAX_EVENT_BYTES} bytes.",
        "",
        "| field | type | unit | allowed | required for | description |",
        "|---|---|---|---|---|---|",
    ]
    for f in FIELDS:
        allowed = (
            ", ".join(e.value for e in f.enum)
            if f.enum
            else (f">= {f.minimum:g}" if f.minimum is not None else "")
        )
        if f.required_for == ALL_TYPES:
            req = "all"
        elif not f.required_for:
            req = "optional"
        else:
            req = ", ".join(sorted(t.value for t in f.required_for))
        lines.append(
            f"| `{f.name}` | {f.type} | {f.unit or ''} | {allowed} | {req} | {f.description} |"
        )
    lines += [
        "",
        f"Event times more than {MAX_FUTURE_SKEW_SECONDS // 60} minutes in the future or more than "
        f"{MAX_PAST_AGE_DAYS} days in the past are rejected. Events of type `heartbeat` and events "
        "with `traffic_type` `bot` or `internal` are valid but irrelevant: filtered and counted.",
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(), end="")
