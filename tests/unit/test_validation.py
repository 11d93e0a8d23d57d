"""The contract's validator (include/events/validation.py): every named bad-input class, the
valid edge cases, and a property-based fuzz: any bytes, any JSON document, any event with any
field replaced by any JSON value is either valid -- and then fits every sink's types -- or
dead-lettered with a documented reason. Never an exception."""

from __future__ import annotations

import io
import json
import math
import os
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from include.events import contract, validation
from include.events.generator import generate
from tests import strategies
from tests.bad_inputs import cases, purchase

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
NOW_US = int(NOW.timestamp() * 1_000_000)
CASES = cases(NOW)
CODES = {r.code.split(":<")[0] for r in contract.REASONS}


def reason_is_documented(reason: str) -> bool:
    head, _, tail = reason.partition(":")
    if head not in CODES:
        return False
    return not tail or tail in contract.FIELD_NAMES or head == "sink_rejected"


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_named_input_classes(case):
    event, reason = validation.check(case.value, NOW_US)
    assert reason == case.reason
    assert (event is None) == (reason is not None)


def test_the_corpus_covers_at_least_thirty_bad_classes_and_every_reason():
    bad = [c for c in CASES if c.reason is not None]
    assert len(bad) >= 30
    heads = {c.reason.split(":")[0] for c in bad}
    # Reasons no input can earn on its own: an operator's, a validator bug's, a sink's, and
    # the deduplication's (a second version of an event: tests/unit/test_first_seen.py).
    beyond_one_record = {"quarantined", "validator_error", "sink_rejected", "conflicting_duplicate"}
    assert heads | beyond_one_record == CODES


def test_valid_values_are_typed():
    e = purchase(NOW, event_time="2026-12-01T13:00:00.123456789+01:00", quantity=2.0)
    event, reason = validation.check(json.dumps(e).encode(), NOW_US)
    assert reason is None
    assert event["event_time"] == NOW_US + 123456, "offset applied, nanoseconds truncated"
    assert event["quantity"] == 2 and type(event["quantity"]) is int
    assert type(event["price"]) is float and event["device"] == "web"
    assert event["channel"] is None, "absent optional fields are None"


def test_absurd_timestamp_is_judged_against_the_given_processing_time():
    value = json.dumps(purchase(NOW, event_time="2026-12-01T12:14:00Z")).encode()
    assert validation.check(value, NOW_US)[1] is None
    assert validation.check(value, NOW_US - 120_000_000)[1] == "absurd_timestamp"
    assert validation.check(value, None)[1] is None, "no processing time: the rule is skipped"


def test_every_generated_event_gets_the_kind_the_generator_meant():
    produced = generate(3_000, seed=11, bad_share=0.2, irrelevant_share=0.1, start=NOW)
    for p in produced:
        _, reason = validation.check(p.value, None if p.kind == "absurd_timestamp" else NOW_US)
        if p.kind in ("valid", "irrelevant", "duplicate", "late", "out_of_order"):
            assert reason is None, (p.kind, reason)
        elif p.kind != "absurd_timestamp":
            assert reason is not None, p.kind


def test_a_validator_bug_dead_letters_the_record_instead_of_raising(monkeypatch):
    def broken(value):
        raise RuntimeError("bug")

    monkeypatch.setattr(validation, "_load", broken)
    assert validation.check(b'{"a": 1}', NOW_US) == (None, "validator_error")


# --- property-based fuzz ------------------------------------------------------------------

json_values = strategies.json_values()


def fits_the_sinks(event: dict) -> None:
    """A valid event is accepted by every sink's types: the lake's Parquet (and the Iceberg
    table compaction writes from it) through the validator's own Arrow schema, Postgres text
    (no NUL, valid UTF-8), and a money sum of MONEY_HEADROOM_LINES such lines in
    numeric(MONEY_PRECISION, MONEY_SCALE). The integration tier writes them to Postgres too."""
    schema = validation.output_schema()
    arrays = [pa.array([event[n]], schema.field(n).type) for n in contract.FIELD_NAMES]
    table = pa.Table.from_arrays(arrays, names=list(contract.FIELD_NAMES))
    buf = io.BytesIO()
    pq.write_table(table, buf)
    assert pq.read_table(io.BytesIO(buf.getvalue())).to_pylist()[0]["event_id"] == event["event_id"]
    for f in contract.FIELDS:
        v = event[f.name]
        if f.type == "string" and v is not None:
            assert "\x00" not in v and v.encode("utf-8")
    if event["price"] is not None and event["quantity"] is not None:
        assert math.isfinite(event["price"])
        line = Decimal(repr(event["price"])) * event["quantity"]
        worst = round(line * contract.MONEY_HEADROOM_LINES, contract.MONEY_SCALE)
        assert abs(worst) < Decimal(10) ** (contract.MONEY_PRECISION - contract.MONEY_SCALE)
    assert -62135596800_000_000 <= event["event_time"] <= 253402300799_999_999


def assert_total(value: bytes | None) -> None:
    event, reason = validation.check(value, NOW_US)
    if reason is None:
        fits_the_sinks(event)
    else:
        assert event is None and reason_is_documented(reason), reason
        assert reason != "validator_error", "the validator itself failed"


FUZZ = settings(
    max_examples=int(os.environ.get("RTAP_FUZZ_EXAMPLES", "400")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_any_bytes(value):
    assert_total(value)


@FUZZ
@given(json_values)
def test_fuzz_any_json_document(doc):
    assert_total(json.dumps(doc, allow_nan=True).encode())


@FUZZ
@given(
    st.dictionaries(st.sampled_from(contract.FIELD_NAMES), json_values, min_size=1, max_size=4),
    st.sampled_from([t.value for t in contract.EventType]),
)
def test_fuzz_events_with_any_field_replaced(replacements, event_type):
    e = {**purchase(NOW, event_type=event_type), **replacements}
    assert_total(json.dumps(e, allow_nan=True).encode())


@FUZZ
@given(
    st.floats(min_value=0, max_value=contract.MAX_PRICE),
    st.integers(min_value=1, max_value=contract.MAX_QUANTITY),
    st.datetimes(min_value=datetime(2026, 11, 25), max_value=datetime(2026, 12, 1, 12, 10)),
    st.text(min_size=1, max_size=contract.MAX_ID_LENGTH),
)
def test_fuzz_in_bounds_events_are_valid_unless_a_string_breaks_a_rule(price, qty, t, user):
    e = purchase(
        NOW,
        price=price,
        quantity=qty,
        event_time=t.replace(tzinfo=UTC).isoformat().replace("+00:00", "Z"),
        user_id=user,
    )
    event, reason = validation.check(json.dumps(e).encode(), NOW_US)
    if reason is None:
        fits_the_sinks(event)
        assert event["user_id"] == user and event["quantity"] == qty
    else:
        assert reason == "control_character:user_id", reason
        assert validation._CONTROL.search(user)


def test_the_money_bounds_follow_from_the_sink_type():
    limit = 10 ** (contract.MONEY_PRECISION - contract.MONEY_SCALE)
    line = contract.MAX_PRICE * contract.MAX_QUANTITY
    assert (
        line * contract.MONEY_HEADROOM_LINES < limit <= line * (contract.MONEY_HEADROOM_LINES + 1)
    )
    assert contract.MONEY_HEADROOM_LINES >= 100_000, "room for a busy minute of one category"
    assert f"numeric({contract.MONEY_PRECISION}, {contract.MONEY_SCALE})" == contract.MONEY_SQL_TYPE
    # Daily unit sums are 64-bit: room for far more than a day of maximal lines.
    assert (2**63 - 1) // contract.MAX_QUANTITY > 10**14


def test_timestamps_follow_rfc3339_exactly():
    t = validation.timestamp_micros
    assert t("2026-12-01T12:00:00Z") == NOW_US
    assert t("2026-12-01t12:00:00z") == NOW_US
    assert t("2026-12-01T12:00:00.5Z") == NOW_US + 500_000
    assert t("2026-12-01T13:00:00+01:00") == NOW_US
    assert t("2026-12-01T11:00:00-01:00") == NOW_US
    for bad in (
        "2026-12-01 12:00:00Z",
        "2026-12-01T12:00:00",
        "2026-12-01T12:00Z",
        "2026-12-01T12:00:00.Z",
        "2026-12-01T12:00:00.1234567890Z",
        "2026-13-01T12:00:00Z",
        "2026-12-01T12:00:60Z",
        "2026-12-01T12:00:00+24:00",
        "20261201T120000Z",
        " 2026-12-01T12:00:00Z",
    ):
        assert t(bad) is None, bad
    assert t("2026-12-01T12:00:00Z") - t("2026-11-30T12:00:00Z") == 86_400_000_000
    assert timedelta(microseconds=t("1970-01-01T00:00:00.000001Z")) == timedelta(microseconds=1)
