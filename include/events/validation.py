"""The contract's validator: raw Kafka value bytes -> the event's typed fields, or a reason.

One pure function, :func:`check`, decides whether a record is valid under
:mod:`include.events.contract`: it is the executable definition of the rules, fuzzed by the
tests with Hypothesis. It never raises: anything unforeseen becomes the reason
``validator_error``, so no single record can stop the stream. The stream itself runs the same
rules on the JVM (``spark_apps/jvm/rtap/spark/Contract.java``, fed by :func:`jvm_spec`), where
a record never leaves the executor; ``tests/unit/test_jvm_contract.py`` checks that both give
every record the same fields and reason, on the named bad-input corpus and on fuzzed input.

Why not Spark's ``from_json``: it is lenient where the contract is not. It reads ``NaN`` and
``"NaN"`` as numbers, single-quoted JSON, the first of several documents, any JSON value as a
string field (``{"a":1}`` or ``123``), and replaces invalid UTF-8 with U+FFFD. orjson (a kept,
widely used Rust JSON library) is strict in each of those ways; the few inputs it refuses that
are still worth a precise reason (``NaN``, ``Infinity``, numbers beyond a double) are re-read
by the standard library on that rare path. On the JVM, Jackson's streaming parser (shipped with
Spark) is configured to the same strictness.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

from include.events import contract

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROS = timedelta(microseconds=1)
# RFC 3339 section 5.6 date-time: T (or t) separator, optional fraction, Z or a numeric offset.
_TIMESTAMP = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2})"
)
# C0 and C1 control characters and lone surrogates: Postgres refuses NUL, dashboards and CSV
# exports break on the others, and a surrogate cannot be written as UTF-8.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff]")
_NON_FINITE = frozenset(
    {"nan", "+nan", "-nan", "inf", "+inf", "-inf", "infinity", "+infinity", "-infinity"}
)
_REQUIRED = {t.value: frozenset(contract.required_fields(t)) for t in contract.EventType}
_EVENT_TYPES = frozenset(t.value for t in contract.EventType)
_ENUMS = {f.name: frozenset(v.value for v in f.enum) for f in contract.FIELDS if f.enum is not None}

Event = dict[str, Any]


def timestamp_micros(text: str) -> int | None:
    """Microseconds since the epoch (UTC) of an RFC 3339 date-time, or None when ``text`` is
    not one (wrong grammar, or not a real date). Digits beyond microseconds are truncated."""
    if _TIMESTAMP.fullmatch(text) is None:
        return None
    try:  # the grammar is checked; the C parser does the calendar (February 30, second 60, ...)
        t = datetime.fromisoformat(text.upper() if "t" in text or "z" in text else text)
    except ValueError:
        return None
    return (t - EPOCH) // _MICROS


def _load(value: bytes) -> tuple[Any, str | None]:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return None, "invalid_utf8"
    try:
        return orjson.loads(text), None
    except orjson.JSONDecodeError:
        pass
    # orjson refuses NaN/Infinity literals, numbers beyond a double and lone surrogates; the
    # standard library reads those (and nothing else orjson refuses), so they get a precise
    # reason below instead of malformed_json. This path runs only for refused records.
    try:
        return json.loads(text), None
    except (ValueError, RecursionError):
        return None, "malformed_json"


Checker = Callable[[Any], tuple[Any, str | None]]


def _string_checker(f: contract.Field) -> Checker:
    name, longest, allowed = f.name, f.max_length or 1 << 30, _ENUMS.get(f.name)
    wrong, empty, long_, control, invalid = (
        f"wrong_type:{name}",
        f"empty_string:{name}",
        f"too_long:{name}",
        f"control_character:{name}",
        f"invalid_value:{name}",
    )

    def check_string(v: Any) -> tuple[Any, str | None]:
        if type(v) is not str:
            return None, wrong
        if not v:
            return None, empty
        if len(v) > longest:
            return None, long_
        if _CONTROL.search(v):
            return None, control
        if allowed is not None and v not in allowed:
            return None, invalid
        return v, None

    return check_string


def _timestamp_checker(f: contract.Field) -> Checker:
    wrong, invalid = f"wrong_type:{f.name}", f"invalid_timestamp:{f.name}"

    def check_timestamp(v: Any) -> tuple[Any, str | None]:
        if type(v) is not str:
            return None, wrong
        micros = timestamp_micros(v)
        return (None, invalid) if micros is None else (micros, None)

    return check_timestamp


def _bounds(f: contract.Field) -> tuple[float, float, str]:
    """A number field's inclusive bounds and the reason of a value above them."""
    low = -math.inf if f.minimum is None else f.minimum
    high = math.inf if f.maximum is None else f.maximum
    if f.name == "schema_version":
        return low, contract.SCHEMA_VERSION, "unsupported_schema_version"
    return low, high, f"out_of_range:{f.name}"


def _number_checker(f: contract.Field) -> Checker:
    name, integral = f.name, f.type == "long"
    low, high, above = _bounds(f)
    wrong, out = f"wrong_type:{name}", f"out_of_range:{name}"

    def check_number(v: Any) -> tuple[Any, str | None]:
        t = type(v)  # bool is an int in Python, never a number in the contract
        if t is int:
            pass
        elif t is float:
            if not math.isfinite(v):
                return None, out
            if integral and not v.is_integer():
                return None, wrong
        elif t is str:
            return None, out if v.strip().lower() in _NON_FINITE else wrong
        else:
            return None, wrong
        if v < low:
            return None, out
        if v > high:
            return None, above
        return (int(v) if integral else float(v)), None

    return check_number


_CHECKERS: dict[str, Callable[[contract.Field], Checker]] = {
    "string": _string_checker,
    "timestamp": _timestamp_checker,
    "long": _number_checker,
    "double": _number_checker,
}
# (name, checker) of every field but event_type, in the contract's order.
_FIELD_CHECKS: tuple[tuple[str, Checker], ...] = tuple(
    (f.name, _CHECKERS[f.type](f)) for f in contract.FIELDS if f.name != "event_type"
)


def check(value: bytes | None, now_micros: int | None = None) -> tuple[Event | None, str | None]:
    """``(event, None)`` with the contract's fields typed (strings, ints, floats, timestamps as
    epoch microseconds; absent optional fields are None), or ``(None, reason)``.

    ``now_micros`` is the processing time the event time is judged against (``absurd_timestamp``);
    None skips that rule. Never raises: see :data:`include.events.contract.REASONS`.
    """
    try:
        return _check(value, now_micros)
    except Exception:  # a validator bug must not stop the stream: the record is dead-lettered
        return None, "validator_error"


def _check(value: bytes | None, now_micros: int | None) -> tuple[Event | None, str | None]:
    if not value:
        return None, "empty_value"
    if len(value) > contract.MAX_EVENT_BYTES:
        return None, "oversize"
    doc, reason = _load(value)
    if reason is not None:
        return None, reason
    if type(doc) is not dict:
        return None, "not_an_object"
    etype = doc.get("event_type")
    if etype is None:
        return None, "missing_field:event_type"
    if type(etype) is not str:
        return None, "wrong_type:event_type"
    if etype not in _EVENT_TYPES:
        return None, "unknown_event_type"
    required = _REQUIRED[etype]
    event: Event = {"event_type": etype}
    for name, checker in _FIELD_CHECKS:
        v = doc.get(name)
        if v is None:
            if name in required:
                return None, f"missing_field:{name}"
            event[name] = None
            continue
        typed, reason = checker(v)
        if reason is not None:
            return None, reason
        event[name] = typed
    if now_micros is not None:
        t = event["event_time"]
        if (
            t > now_micros + contract.MAX_FUTURE_SKEW_SECONDS * 1_000_000
            or t < now_micros - contract.MAX_PAST_AGE_DAYS * 86_400_000_000
        ):
            return None, contract.ABSURD_TIMESTAMP
    return event, None


# --- The stream's validator on the JVM (spark_apps/jvm/rtap/spark/Contract.java) ------------

# The column the stream hands to the JVM validator besides Spark's Kafka source columns.
PROCESSING_TIME = "processing_time"  # epoch microseconds of the batch's time (null on a stream)
ERROR = "error"  # the reason, null when valid


def jvm_spec() -> str:
    """The contract as the JVM validator (``rtap.spark.Contract``) reads it: every fact comes
    from :mod:`include.events.contract` and the tables above, so both validators check the
    same rules (``tests/unit/test_jvm_contract.py`` checks that they agree, record by
    record)."""
    fields = []
    for f in contract.FIELDS:
        entry: dict[str, Any] = {"name": f.name, "type": f.type, "max_length": f.max_length}
        if f.name in _ENUMS:
            entry["enum"] = sorted(_ENUMS[f.name])
        if f.type in ("long", "double"):
            low, high, above = _bounds(f)
            entry["minimum"] = None if math.isinf(low) else low
            entry["maximum"] = None if math.isinf(high) else high
            entry["above_reason"] = above
        fields.append(entry)
    return json.dumps(
        {
            "max_event_bytes": contract.MAX_EVENT_BYTES,
            "fields": fields,
            "required": {t: sorted(names) for t, names in _REQUIRED.items()},
            "event_type_field": "event_type",
            "event_time_field": "event_time",
            "max_ahead_us": contract.MAX_FUTURE_SKEW_SECONDS * 1_000_000,
            "max_age_us": contract.MAX_PAST_AGE_DAYS * 86_400_000_000,
            "absurd_reason": contract.ABSURD_TIMESTAMP,
            "non_finite_strings": sorted(_NON_FINITE),
        }
    )


def output_schema():
    """The Arrow schema of a checked record: the contract's typed fields, the raw bytes, the
    Kafka coordinates and :data:`ERROR`. Spark's ``CHECKED_SCHEMA``
    (``spark_apps/transforms/events.py``) is converted from it."""
    import pyarrow as pa

    arrow = {
        "string": pa.string(),
        "long": pa.int64(),
        "double": pa.float64(),
        "timestamp": pa.timestamp("us", tz="UTC"),
        "boolean": pa.bool_(),
    }
    return pa.schema(
        [pa.field(f.name, arrow[f.type]) for f in contract.FIELDS]
        + [
            pa.field("raw_key", pa.binary()),
            pa.field("raw_value", pa.binary()),
            pa.field("raw_bytes", pa.int32()),
            pa.field("kafka_topic", pa.string()),
            pa.field("kafka_partition", pa.int32()),
            pa.field("kafka_offset", pa.int64()),
            pa.field("kafka_timestamp", pa.timestamp("us", tz="UTC")),
            pa.field(ERROR, pa.string()),
        ]
    )
