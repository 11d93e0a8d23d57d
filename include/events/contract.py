"""The user-activity event contract: one definition that producer, stream, tests and docs use.

An event is a flat JSON object. This module is the only place its fields, their bounds and the
dead-letter reasons are listed: the generator builds events from it, the validator
(:mod:`include.events.validation`, which the stream runs) enforces it, and
``docs/event-contract.md`` is generated from it (``python -m include.events.contract``).

Kafka key: ``user_id`` (per-user ordering). Value: UTF-8 JSON.

Version 2 (this one) tightened version 1 without renaming a field: numbers must be finite and
within bounds every sink can hold, string fields must be JSON strings without control
characters, ids are non-empty and bounded, timestamps follow RFC 3339 exactly. A version-1
event that meets these rules is a valid version-2 event; ``schema_version`` 1 and 2 are read.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

SCHEMA_VERSION = 2
MIN_SCHEMA_VERSION = 1  # oldest version still read (its events must meet this version's rules)
MAX_EVENT_BYTES = 8 * 1024  # larger payloads are rejected as "oversize"
# Event times further than this from the processing time are "absurd" and rejected.
MAX_FUTURE_SKEW_SECONDS = 15 * 60
MAX_PAST_AGE_DAYS = 7
# The reason of an event time outside those bounds (judged against the batch's processing time).
ABSURD_TIMESTAMP = "absurd_timestamp"

# What the sinks can hold, and the bounds derived from it (one place: the Postgres DDL and the
# tests import these). Money is stored as numeric(MONEY_PRECISION, MONEY_SCALE) in Postgres and
# the marts: a sum must stay below 10**(precision - scale). With a line (price x quantity) of
# at most MAX_PRICE * MAX_QUANTITY = 1e10, one aggregate window and category holds at least
# MONEY_HEADROOM_LINES maximal purchases before it could overflow; units are summed as 64-bit
# longs, which at MAX_QUANTITY per event overflow only after ~9e14 events of one key.
MONEY_PRECISION = 18
MONEY_SCALE = 2
MONEY_SQL_TYPE = f"numeric({MONEY_PRECISION}, {MONEY_SCALE})"
MAX_PRICE = 1_000_000.0
MAX_QUANTITY = 10_000
MONEY_HEADROOM_LINES = int(10 ** (MONEY_PRECISION - MONEY_SCALE) // (MAX_PRICE * MAX_QUANTITY)) - 1
MAX_ID_LENGTH = 128  # event, user, session and product ids
MAX_TEXT_LENGTH = 64  # category and enum-like strings


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
    maximum: float | None = None
    max_length: int | None = None  # strings: 1..max_length characters
    unit: str | None = None


FIELDS: tuple[Field, ...] = (
    Field(
        "event_id",
        "string",
        "Unique id of the event (UUID); dedupe and reconciliation key.",
        max_length=MAX_ID_LENGTH,
    ),
    Field("event_type", "string", "What happened.", enum=EventType, max_length=MAX_TEXT_LENGTH),
    Field(
        "schema_version",
        "long",
        f"Version of this contract (currently {SCHEMA_VERSION}; {MIN_SCHEMA_VERSION} is read too).",
        minimum=MIN_SCHEMA_VERSION,
    ),
    Field(
        "event_time",
        "timestamp",
        "When it happened on the client (RFC 3339; stored in UTC).",
        unit="RFC 3339",
    ),
    Field(
        "ingestion_time",
        "timestamp",
        "When the producer sent it (RFC 3339; stored in UTC).",
        unit="RFC 3339",
    ),
    Field(
        "user_id", "string", "Pseudonymous user id; also the Kafka key.", max_length=MAX_ID_LENGTH
    ),
    Field("session_id", "string", "Browsing session id.", max_length=MAX_ID_LENGTH),
    Field(
        "product_id",
        "string",
        "Catalog product id.",
        required_for=PRODUCT_EVENTS,
        max_length=MAX_ID_LENGTH,
    ),
    Field(
        "category",
        "string",
        "Catalog category of the product.",
        required_for=PRODUCT_EVENTS,
        max_length=MAX_TEXT_LENGTH,
    ),
    Field(
        "price",
        "double",
        "Unit price.",
        required_for=PRICED_EVENTS,
        minimum=0.0,
        maximum=MAX_PRICE,
        unit="currency units",
    ),
    Field(
        "quantity",
        "long",
        "Units in the cart line or order.",
        required_for=PRICED_EVENTS,
        minimum=1,
        maximum=MAX_QUANTITY,
        unit="units",
    ),
    Field(
        "currency",
        "string",
        "ISO-4217 code of price.",
        required_for=PRICED_EVENTS,
        enum=Currency,
        max_length=MAX_TEXT_LENGTH,
    ),
    Field(
        "device",
        "string",
        "Client device.",
        required_for=frozenset(),
        enum=Device,
        max_length=MAX_TEXT_LENGTH,
    ),
    Field(
        "channel",
        "string",
        "Acquisition channel.",
        required_for=frozenset(),
        enum=Channel,
        max_length=MAX_TEXT_LENGTH,
    ),
    Field(
        "traffic_type",
        "string",
        "Who generated it; bots and internal users are irrelevant.",
        required_for=frozenset(),
        enum=TrafficType,
        max_length=MAX_TEXT_LENGTH,
    ),
)

FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in FIELDS)


@dataclass(frozen=True)
class Reason:
    """A dead-letter reason: ``code`` (``<field>`` stands for a field's name), what it means, and
    an example value that earns it."""

    code: str
    meaning: str
    example: str


# The stream's deduplication (not the validator) dead-letters a second version of an event.
CONFLICTING_DUPLICATE = "conflicting_duplicate"

# Every reason a record can be dead-lettered with, in the order the validator checks them.
REASONS: tuple[Reason, ...] = (
    Reason("quarantined", "An operator quarantined its offset range (`stream_control`).", "any"),
    Reason("empty_value", "No value: a tombstone (null) or zero bytes.", "(null)"),
    Reason("oversize", f"More than {MAX_EVENT_BYTES} bytes.", '{"padding": "xxxx…"}'),
    Reason("invalid_utf8", "The bytes are not UTF-8.", '{"event_id": "\\xff"} (a raw 0xFF byte)'),
    Reason(
        "malformed_json",
        "Not exactly one strict JSON document: trailing bytes, single quotes, comments, "
        "unquoted names, truncated input.",
        '{"event_id": "a"}{"event_id": "b"}',
    ),
    Reason("not_an_object", "Valid JSON, but not an object.", "[1, 2]"),
    Reason("missing_field:<field>", "A required field is absent or null.", '{… no "user_id" …}'),
    Reason(
        "wrong_type:<field>",
        "The JSON type is not the contract's: a number, object, array or boolean where a string "
        "is due, a string or fraction where an integer is due, a number where a timestamp is due.",
        '"user_id": 123, "category": {"a": 1}, "quantity": 1.5, "event_time": 1764590400',
    ),
    Reason(
        "invalid_timestamp:<field>",
        "A string that is not an RFC 3339 date-time with a zone (`T` separator, 0-9 fraction "
        "digits, `Z` or `±HH:MM`), or not a real date.",
        '"event_time": "2026-12-01 10:00:00"',
    ),
    Reason("unknown_event_type", "`event_type` is not one the contract lists.", '"teleport"'),
    Reason("invalid_value:<field>", "Not one of the field's allowed values.", '"currency": "BTC"'),
    Reason(
        "out_of_range:<field>",
        "A number outside the field's bounds, or not finite (`NaN`, `Infinity`, as literal or "
        "as string).",
        '"price": 1e16, "price": NaN, "quantity": 0',
    ),
    Reason(
        "unsupported_schema_version",
        f"`schema_version` newer than {SCHEMA_VERSION}.",
        '"schema_version": 3',
    ),
    Reason("empty_string:<field>", "An empty string where a value is due.", '"event_id": ""'),
    Reason(
        "too_long:<field>",
        f"Longer than the field's limit ({MAX_ID_LENGTH} characters for ids, "
        f"{MAX_TEXT_LENGTH} for other strings).",
        '"category": "xxxx…"',
    ),
    Reason(
        "control_character:<field>",
        "A control character (U+0000-U+001F, U+007F-U+009F) or a lone surrogate in a string.",
        '"category": "books\\u0000"',
    ),
    Reason(
        ABSURD_TIMESTAMP,
        f"`event_time` more than {MAX_FUTURE_SKEW_SECONDS // 60} minutes after or "
        f"{MAX_PAST_AGE_DAYS} days before the batch's processing time.",
        '"event_time": "1970-01-01T00:00:00Z"',
    ),
    Reason(
        CONFLICTING_DUPLICATE,
        "The `event_id` of an event the stream first saw within its dedupe horizon, with "
        "different content (any field but `ingestion_time`): the first is kept and counted, "
        "this one is dead-lettered (an identical copy is dropped). Counted per batch in "
        "`stream_progress` (`conflicting_duplicates`).",
        '"event_id": "e1", "price": 10 … then "event_id": "e1", "price": 99',
    ),
    Reason(
        "validator_error",
        "The validator itself failed on the record (a bug): the record is kept, never dropped.",
        "(none known)",
    ),
    Reason(
        "sink_rejected:<sink>",
        "A sink refused a row the validator passed (a contract bug): the row and its batch are "
        "kept in the dead-letter path and the batch completes.",
        "(none known)",
    ),
)


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
        if f.enum:
            allowed = ", ".join(e.value for e in f.enum)
        elif f.minimum is not None and f.maximum is not None:
            allowed = f"{f.minimum:,.0f} to {f.maximum:,.0f}"
        elif f.minimum is not None:
            allowed = f">= {f.minimum:g}"
        elif f.max_length is not None:
            allowed = f"1 to {f.max_length} characters"
        else:
            allowed = ""
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
        "## Rules",
        "",
        "* The value is exactly one JSON object in UTF-8 (RFC 8259): no `NaN`/`Infinity`, no "
        "single quotes, comments or trailing bytes. A repeated name keeps its last value. Names "
        "the contract does not list are ignored.",
        "* `string` fields take JSON strings only, 1 to "
        f"{MAX_ID_LENGTH} characters for ids and 1 to {MAX_TEXT_LENGTH} for the others, without "
        "control characters. `null` counts as absent.",
        "* `long` fields take a JSON number without a fractional part (`2` and `2.0` are both 2); "
        "`double` fields any finite JSON number. Bounds are inclusive. "
        f"Money is stored as `{MONEY_SQL_TYPE}`: with prices up to {MAX_PRICE:,.0f} and "
        f"quantities up to {MAX_QUANTITY:,}, one aggregate window and category holds "
        f"{MONEY_HEADROOM_LINES:,} maximal purchases before it could overflow.",
        "* `timestamp` fields are RFC 3339 strings with a zone, e.g. `2026-12-01T10:00:00Z`, "
        "`2026-12-01T11:00:00.123456789+01:00`; fractions beyond microseconds are truncated. "
        "Epoch numbers are not timestamps (`wrong_type`).",
        f"* Event times more than {MAX_FUTURE_SKEW_SECONDS // 60} minutes in the future or more "
        f"than {MAX_PAST_AGE_DAYS} days in the past are rejected. Events of type `heartbeat` and "
        "events with `traffic_type` `bot` or `internal` are valid but irrelevant: filtered and "
        "counted.",
        f"* `schema_version` {MIN_SCHEMA_VERSION} (the first contract) is still read: its events "
        "are valid when they meet these rules.",
        "",
        "## Dead-letter reasons",
        "",
        "A record that breaks the contract goes to the dead-letter path with its original key "
        "and value bytes, its Kafka coordinates and the first reason it earns: the record as a "
        "whole first (down to `not_an_object`), then `event_type`, then each field in the "
        "table's order, then the event time against the batch's processing time.",
        "",
        "| reason | meaning | example |",
        "|---|---|---|",
    ]
    lines += [f"| `{r.code}` | {r.meaning} | `{r.example}` |" for r in REASONS]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown(), end="")
