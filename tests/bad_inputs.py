"""Named bad-input classes (and valid edge cases) for the contract: the validator's unit tests
and the real-stack corpus test share them. Each case says which reason the record must be
dead-lettered with, or that it must land (``None``).

Built around ``now`` so that event times are valid when the case is not about time.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta

from include.events import contract


@dataclass(frozen=True)
class Case:
    name: str
    value: bytes | None
    reason: str | None  # None: valid, must land


def iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def purchase(now: datetime, **overrides) -> dict:
    e = {
        "event_id": "e1",
        "event_type": "purchase",
        "schema_version": contract.SCHEMA_VERSION,
        "event_time": iso(now - timedelta(seconds=30)),
        "ingestion_time": iso(now - timedelta(seconds=29)),
        "user_id": "u-corpus",
        "session_id": "s-corpus",
        "product_id": "p00001",
        "category": "books",
        "price": 12.5,
        "quantity": 2,
        "currency": "USD",
        "device": "web",
    }
    e.update(overrides)
    return {k: v for k, v in e.items() if v is not None}


def _dump(e: dict) -> bytes:
    return json.dumps(e).encode()


def _with(e: dict, field: str, raw_json: str) -> bytes:
    """``e`` with ``field`` set to a raw JSON token (for tokens json.dumps cannot write)."""
    rest = {k: v for k, v in e.items() if k != field}
    return json.dumps(rest)[:-1].encode() + f', "{field}": {raw_json}}}'.encode()


def cases(now: datetime, prefix: str = "c") -> list[Case]:
    """Every named class once; event ids are ``<prefix>-<name>`` (unique per call)."""

    def e(name: str, **overrides) -> dict:
        return purchase(now, **{"event_id": f"{prefix}-{name}", **overrides})

    def case(name: str, value: bytes | None, reason: str | None) -> Case:
        return Case(name, value, reason)

    out = [
        # Non-finite and oversized numbers: Spark read NaN, Infinity and 1e308 as prices.
        case("nan_literal", _with(e("nan_literal"), "price", "NaN"), "out_of_range:price"),
        case("nan_string", _dump(e("nan_string", price="NaN")), "out_of_range:price"),
        case("infinity_literal", _with(e("inf"), "price", "Infinity"), "out_of_range:price"),
        case("minus_infinity", _with(e("minf"), "price", "-Infinity"), "out_of_range:price"),
        case("infinity_string", _dump(e("infs", price="Infinity")), "out_of_range:price"),
        case("price_1e308", _dump(e("p308", price=1e308)), "out_of_range:price"),
        case("price_1e16", _dump(e("p16", price=1e16)), "out_of_range:price"),
        case("price_beyond_double", _with(e("p400"), "price", "1e400"), "out_of_range:price"),
        case(
            "price_above_max",
            _dump(e("pmax", price=contract.MAX_PRICE + 0.01)),
            "out_of_range:price",
        ),
        case("negative_price", _dump(e("pneg", price=-1.0)), "out_of_range:price"),
        case(
            "quantity_huge", _with(e("qhuge"), "quantity", "10" + "0" * 20), "out_of_range:quantity"
        ),
        case("quantity_zero", _dump(e("q0", quantity=0)), "out_of_range:quantity"),
        case("quantity_fraction", _dump(e("qfrac", quantity=1.5)), "wrong_type:quantity"),
        case("quantity_boolean", _dump(e("qbool", quantity=True)), "wrong_type:quantity"),
        case("price_as_string", _dump(e("pstr", price="12.50")), "wrong_type:price"),
        # Strings that are not strings.
        case("category_object", _dump(e("cobj", category={"a": 1})), "wrong_type:category"),
        case("category_array", _dump(e("carr", category=["books"])), "wrong_type:category"),
        case("user_id_number", _dump(e("unum", user_id=123)), "wrong_type:user_id"),
        case("event_type_number", _dump(e("etnum", event_type=7)), "wrong_type:event_type"),
        # Not exactly one strict JSON document.
        case("trailing_bytes", _dump(e("trail")) + b" trailing", "malformed_json"),
        case("two_documents", _dump(e("two1")) + _dump(e("two2")), "malformed_json"),
        case(
            "single_quoted",
            _dump(e("sq")).replace(b'"', b"'"),
            "malformed_json",
        ),
        case("truncated", _dump(e("trunc"))[:40], "malformed_json"),
        case("comment", b"/* hi */" + _dump(e("comment")), "malformed_json"),
        case("leading_zero", _with(e("lz"), "quantity", "02"), "malformed_json"),
        case("byte_order_mark", b"\xef\xbb\xbf" + _dump(e("bom")), "malformed_json"),
        case("json_array", b"[1, 2, 3]", "not_an_object"),
        case("json_string", b'"purchase"', "not_an_object"),
        # Bytes and characters.
        case(
            "invalid_utf8",
            _dump(e("utf8", category="books-XX")).replace(b"XX", b"\xff\xfe"),
            "invalid_utf8",
        ),
        case(
            "nul_character", _dump(e("nul", category="books\u0000")), "control_character:category"
        ),
        case(
            "escape_character", _dump(e("esc", user_id="u\u001b[31m")), "control_character:user_id"
        ),
        case(
            "lone_surrogate",
            _with(e("surr"), "session_id", '"\\ud800"'),
            "control_character:session_id",
        ),
        case("empty_event_id", _dump(e("x", event_id="")), "empty_string:event_id"),
        case(
            "long_event_id",
            _dump(e("x", event_id="x" * (contract.MAX_ID_LENGTH + 1))),
            "too_long:event_id",
        ),
        # Times.
        case(
            "epoch_event_time",
            _dump(e("epoch", event_time=int(now.timestamp()))),
            "wrong_type:event_time",
        ),
        case(
            "space_separated_time",
            _dump(e("space", event_time=iso(now).replace("T", " "))),
            "invalid_timestamp:event_time",
        ),
        case(
            "time_without_zone",
            _dump(e("nozone", event_time=iso(now)[:-1])),
            "invalid_timestamp:event_time",
        ),
        case(
            "february_30",
            _dump(e("feb30", event_time="2026-02-30T10:00:00Z")),
            "invalid_timestamp:event_time",
        ),
        case(
            "far_future",
            _dump(e("future", event_time=iso(now + timedelta(hours=2)))),
            "absurd_timestamp",
        ),
        case("ancient", _dump(e("ancient", event_time="1970-01-01T00:00:00Z")), "absurd_timestamp"),
        # Empty, oversize, unknown, missing.
        case("tombstone", None, "empty_value"),
        case("empty_bytes", b"", "empty_value"),
        case("oversize", _dump(e("big", padding="x" * contract.MAX_EVENT_BYTES)), "oversize"),
        case("unknown_event_type", _dump(e("tele", event_type="teleport")), "unknown_event_type"),
        case("unknown_currency", _dump(e("btc", currency="BTC")), "invalid_value:currency"),
        case("future_schema", _dump(e("v3", schema_version=3)), "unsupported_schema_version"),
        case("missing_user_id", _dump(e("nouser", user_id=None)), "missing_field:user_id"),
        case("null_price", _with(e("nullp"), "price", "null"), "missing_field:price"),
    ]
    valid = [
        # Valid edge cases that must land.
        case("micros_fraction", _dump(e("us", event_time=iso(now)[:-5] + ".123456Z")), None),
        case("nanos_fraction", _dump(e("ns", event_time=iso(now)[:-5] + ".123456789Z")), None),
        case(
            "offset_time",
            _dump(
                e(
                    "offset",
                    event_time=(now + timedelta(hours=5, minutes=30)).strftime(
                        "%Y-%m-%dT%H:%M:%S+05:30"
                    ),
                )
            ),
            None,
        ),
        case("integral_float_quantity", _dump(e("q2f", quantity=2.0)), None),
        case("unknown_extra_field", _dump(e("extra", coupon="XMAS")), None),
        case("schema_version_1", _dump(e("v1", schema_version=1)), None),
        case(
            "max_price",
            _dump(e("maxp", price=contract.MAX_PRICE, quantity=contract.MAX_QUANTITY)),
            None,
        ),
    ]
    return out + valid


# A case the stream's deduplication drops: an identical copy of an event it already kept.
DROPPED = "(dropped copy)"


def duplicate_cases(now: datetime, prefix: str = "c") -> tuple[list[Case], list[Case]]:
    """Versions of one event for the stream (the validator passes each): the first lands, an
    identical copy is dropped, one with other content is dead-lettered
    ``conflicting_duplicate``; the second list arrives in a later micro-batch."""
    first = purchase(now, event_id=f"{prefix}-dup")
    resent = {**first, "ingestion_time": iso(now)}  # a producer's retry re-stamps its send time
    return (
        [
            Case("dup_first", json.dumps(first).encode(), None),
            Case("dup_copy", json.dumps(first).encode(), DROPPED),
            Case(
                "dup_conflict",
                json.dumps({**first, "price": 99.0}).encode(),
                contract.CONFLICTING_DUPLICATE,
            ),
        ],
        [
            Case("dup_resent_later", json.dumps(resent).encode(), DROPPED),
            Case(
                "dup_conflict_later",
                json.dumps({**first, "quantity": 7}).encode(),
                contract.CONFLICTING_DUPLICATE,
            ),
        ],
    )


def grammar_edges(now: datetime) -> list[bytes | None]:
    """Where JSON readers part by default (Jackson's, Arrow's, Python's): records whose verdict
    and fields every validator of the stream must take from ``include.events.validation``."""

    def e(**overrides) -> dict:
        return purchase(now, **overrides)

    def raw(field: str, token: str) -> bytes:
        return _with(e(), field, token)

    def ts(text: str) -> bytes:
        return json.dumps(e(event_time=text)).encode()

    return [
        None,
        b"",
        b"   ",
        b"null",
        b"[1, 2]",
        b'"a"',
        b"\xef\xbb\xbf" + json.dumps(e()).encode(),  # a byte order mark
        json.dumps(e()).encode() + b"\x00",
        json.dumps(e()).encode() + b" \n\t",
        json.dumps(e()).encode() + b" {}",
        b'{"event_type": "purchase", "event_type": 7}',  # the last value of a repeated name
        b'{"event_type": 7, ' + json.dumps(e()).encode()[1:],
        raw("price", "NaN"),
        raw("price", "-Infinity"),
        raw("price", "+Infinity"),
        raw("price", "-NaN"),
        raw("price", "+INF"),
        raw("price", "-INF"),
        raw("price", "1e400"),
        raw("price", "-0.0"),
        raw("price", "1E2"),
        raw("quantity", "2.0"),
        raw("quantity", "1e3"),
        raw("quantity", "-0"),
        raw("quantity", "18446744073709551616"),
        raw("quantity", "-" + "9" * 400),
        raw("schema_version", "3"),
        raw("schema_version", "2.0"),
        raw("device", '[1, {"a": NaN}]'),
        raw("channel", '[1, {"a": +INF}]'),  # a lenient literal deep in a value
        raw("traffic_type", '"\\u0085"'),
        raw("user_id", '"\\ud800"'),  # a lone surrogate
        raw("user_id", '"\\ud83d\\ude00"'),  # a pair: one code point
        raw("user_id", '"' + "\\ud83d\\ude00" * contract.MAX_ID_LENGTH + '"'),
        raw("user_id", '"' + "x" * (contract.MAX_ID_LENGTH + 1) + '"'),
        raw("user_id", '"\x7f"'),
        raw("price", '"\\u00a0nan "'),  # Python's strip() takes NBSP
        raw("price", '"\\u1680INFINITY"'),
        raw("price", '"\\u200bnan"'),  # a zero-width space is not whitespace
        raw("unknown", "[" * 1024 + "]" * 1024),
        raw("unknown", "[" * 1025 + "]" * 1025),
        raw("unknown", "1" * 5000),
        b'{"a": 1,}',
        b"{'a': 1}",
        b"{a: 1}",
        b"/* c */ {}",
        b"\xff",
        b"\xed\xa0\x80",  # an encoded surrogate
        b"\xc0\xaf",  # an overlong encoding
        b"\xf4\x90\x80\x80",  # beyond U+10FFFF
        ts("2026-12-01T11:59:00Z"),
        ts("2026-12-01t11:59:00z"),
        ts("2026-12-01T11:59:00.123456789Z"),
        ts("2026-12-01T11:59:00.1234567891Z"),
        ts("2026-12-01T11:59:00.Z"),
        ts("2026-12-01T12:58:00+00:99"),
        ts("2026-12-01T11:59:00+23:59"),
        ts("2026-12-01T11:59:00+24:00"),
        ts("2026-12-01T11:59:00-00:00"),
        ts("2026-12-01T11:59:60Z"),
        ts("2026-12-01T24:00:00Z"),
        ts("2026-02-29T11:59:00Z"),
        ts("0000-01-01T00:00:00Z"),
        ts("2026-12-01T11:59:00"),
        ts("2026-12-01 11:59:00Z"),
        # Arabic-Indic digits: Python's \d takes them, the date does not
        ts("\u0662\u0660\u0662\u0666-12-01T11:59:00Z"),
        ts("2026-12-01T11:59:00.\u0661Z"),
        json.dumps(e(ingestion_time="0001-01-01T00:00:00+01:00")).encode(),
        json.dumps(e(ingestion_time="9999-12-31T23:59:59-23:59")).encode(),
        json.dumps(e(event_time="2026-12-01T12:15:00Z")).encode(),
        json.dumps(e(event_time="2026-12-01T12:15:00.000001Z")).encode(),
        json.dumps(e(event_time="2026-11-24T12:00:00Z")).encode(),
        json.dumps(e(event_time="2026-11-24T11:59:59.999999Z")).encode(),
    ]
