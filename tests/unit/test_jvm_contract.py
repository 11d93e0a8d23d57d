"""The stream's JVM validator (``rtap.spark.Contract``, run by ``tx.parse``) against the
contract's executable definition (``include.events.validation.check``): for every record both
must give the same reason, and for a valid record the same typed fields. The oracle is the
Python validator, never the JVM path itself; the inputs are the named bad-input corpus, the
grammar's edges where Jackson and Python's JSON readers differ by default, and fuzzed bytes,
documents and events."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pyspark.sql import functions as F

from include.events import contract, validation
from include.events.generator import generate
from spark_apps.transforms import events as tx
from tests import strategies
from tests.bad_inputs import _with, cases, purchase

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
NOW_US = int(NOW.timestamp() * 1_000_000)
TIMESTAMPS = {f.name for f in contract.FIELDS if f.type == "timestamp"}


def jvm_check(spark, values: list[bytes | None]) -> list[tuple[dict | None, str | None]]:
    """What the stream's validator makes of each value, shaped like ``validation.check``."""
    rows = [(b"k", v, "events", 0, i, NOW) for i, v in enumerate(values)]
    checked = tx.parse(spark.createDataFrame(rows, tx.KAFKA_SCHEMA), now=F.lit(NOW))
    fields = [
        F.unix_micros(name).alias(name) if name in TIMESTAMPS else F.col(name)
        for name in contract.FIELD_NAMES
    ]
    out = checked.select("kafka_offset", tx.ERROR, *fields).orderBy("kafka_offset").collect()
    results = []
    for row in out:
        error = row[tx.ERROR]
        event = None if error else {n: row[n] for n in contract.FIELD_NAMES}
        results.append((event, error))
    return results


def assert_same(spark, values: list[bytes | None]) -> None:
    jvm = jvm_check(spark, values)
    for value, got in zip(values, jvm, strict=True):
        assert got == validation.check(value, NOW_US), value


def e(**overrides) -> dict:
    return purchase(NOW, **overrides)


def raw(field: str, token: str) -> bytes:
    return _with(e(), field, token)


def ts(text: str) -> bytes:
    return json.dumps(e(event_time=text)).encode()


# Where Jackson's defaults and Python's readers part: each must get Python's answer.
EDGES: list[bytes | None] = [
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


def test_the_named_corpus_and_the_grammars_edges_get_python_s_answer(spark):
    corpus = [c.value for c in cases(NOW)]
    generated = [p.value for p in generate(300, seed=11, bad_share=0.3, start=NOW)]
    assert_same(spark, corpus + EDGES + generated)


def test_the_jvm_validator_reads_the_contract_from_python():
    spec = json.loads(validation.jvm_spec())
    assert [f["name"] for f in spec["fields"]] == list(contract.FIELD_NAMES)
    assert set(spec["required"]) == {t.value for t in contract.EventType}
    version = next(f for f in spec["fields"] if f["name"] == "schema_version")
    assert version["maximum"] == contract.SCHEMA_VERSION
    assert version["above_reason"] == "unsupported_schema_version"


FUZZ = settings(
    max_examples=int(os.environ.get("RTAP_JVM_FUZZ_EXAMPLES", "25")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

json_values = strategies.json_values(text=20, width=3, leaves=8)
events = st.builds(
    lambda replacements, event_type: json.dumps(
        {**e(event_type=event_type), **replacements}, allow_nan=True
    ).encode(),
    st.dictionaries(st.sampled_from(contract.FIELD_NAMES), json_values, min_size=1, max_size=3),
    st.sampled_from([t.value for t in contract.EventType]),
)
timestamps = st.builds(
    lambda d, sep, frac, zone: ts(
        d.strftime("%Y-%m-%d") + sep + d.strftime("%H:%M:%S") + frac + zone
    ),
    st.datetimes(min_value=datetime(2026, 11, 20), max_value=datetime(2026, 12, 2)),
    st.sampled_from(["T", "t", " "]),
    st.sampled_from(["", ".5", ".123456", ".1234567", ".123456789", ".1234567890"]),
    st.sampled_from(["Z", "z", "+01:00", "-05:30", "+00:99", "+23:60", "", "+1:00"]),
)
records = (
    st.binary(max_size=120)
    | st.builds(lambda d: json.dumps(d, allow_nan=True).encode(), json_values)
    | events
    | timestamps
)


@FUZZ
@given(st.lists(records, min_size=1, max_size=80))
def test_fuzzed_records_get_python_s_answer(spark, values):
    assert_same(spark, values)
