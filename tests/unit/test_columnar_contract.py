"""The contract over Arrow blocks (``include.events.columnar.check_block``, the columnar
stream's validator) against the contract's executable definition
(``include.events.validation.check``): for every record of a block the same reason, and for a
valid record the same typed fields. The oracle is the Python validator record by record; the
inputs are the named bad-input corpus, the grammar's edges, records whose syntax Arrow's reader
and Python's part on, generated backlogs and fuzzed blocks. Each block mixes good and bad
records, so that both of the fast path's fallbacks (a record kept from Arrow's reader, a block
Arrow refuses) are exercised."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime

import pyarrow as pa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from include.events import columnar, contract, validation
from include.events.generator import generate
from tests import strategies
from tests.bad_inputs import _with, cases, grammar_edges, purchase

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
NOW_US = int(NOW.timestamp() * 1_000_000)
TIMESTAMPS = {f.name for f in contract.FIELDS if f.type == "timestamp"}


def columnar_check(values: list[bytes | None]) -> list[tuple[dict | None, str | None]]:
    """What the columnar validator makes of each value, shaped like ``validation.check``."""
    checked = columnar.check_block(pa.array(values, pa.binary()), NOW_US)
    out: list[tuple[dict | None, str | None]] = [(None, None)] * len(values)
    for i, reason in checked.dead:
        out[i] = (None, reason)
    valid = checked.valid
    for name in TIMESTAMPS:  # as epoch microseconds (a year beyond 9999 in UTC is valid)
        valid = valid.set_column(
            valid.schema.get_field_index(name), name, valid[name].cast(pa.int64())
        )
    for row in valid.to_pylist():
        out[row["row"]] = ({n: row[n] for n in contract.FIELD_NAMES}, None)
    return out


def assert_same(values: list[bytes | None]) -> None:
    got = columnar_check(values)
    checked = columnar.check_block(pa.array(values, pa.binary()), NOW_US)
    rows = checked.valid["row"].to_pylist()
    assert rows == sorted(rows)
    assert [i for i, _ in checked.dead] == sorted(i for i, _ in checked.dead)
    assert len(rows) + len(checked.dead) == len(values)
    for value, answer in zip(values, got, strict=True):
        expected = validation.check(value, NOW_US)
        assert answer == expected, value
        if expected[0] is not None:  # a float must be the same double, -0.0 included
            for name, v in expected[0].items():
                if isinstance(v, float):
                    assert repr(answer[0][name]) == repr(v), (value, name)


def e(**overrides) -> dict:
    return purchase(NOW, **overrides)


def good(**overrides) -> bytes:
    return json.dumps(e(**overrides)).encode()


# Where Arrow's reader and Python's part: each must get Python's answer.
ARROW_EDGES: list[bytes | None] = [
    good(),
    b"null",  # crashes Arrow's reader: must never reach it
    b"true",
    b"5",
    b" " + good() + b"\t",
    good() + b"\r",
    good()[:-1] + b',\n"x": 1}',  # JSON whitespace may be a newline
    good().replace(b", ", b",\r\n"),
    good()[:-1] + b', "x": NaN}',  # lenient literals in an ignored field: Python reads them
    good()[:-1] + b', "x": Infinity}',
    good()[:-1] + b', "x": 1e400}',
    good()[:-1] + b', "x": "\xff"}',  # invalid UTF-8 in an ignored field
    good()[:-1] + b', "x": {"y": [1, 2]}}',
    good()[:-1] + b', "x": 1,}',
    good()[:-1] + b', "x": 01}',
    good()[:-1] + b', "x": +1}',
    good()[:-1] + b', "x": 0x10}',
    good()[:-1] + b', "x": .5}',
    good()[:-1] + b", 'x': 1}",
    good()[:-1] + b", x: 1}",
    good() + b"}",
    good() + b" " + good(),
    good() + b"\n" + good(),
    good() + b"\x00",
    b"\xef\xbb\xbf" + good(),
    good(price=0.1),
    good(price=1 / 3),
    good(price=999999.99),
    good(price=1e-320),  # a subnormal
    good(price=5),
    _with(e(), "price", "-0.0"),
    _with(e(), "price", "1.0000000000000002"),
    _with(e(), "price", "0.30000000000000004"),
    _with(e(), "price", "123456.78901234567890123"),
    _with(e(), "price", "1E2"),
    _with(e(), "price", "1e-7"),
    _with(e(), "quantity", "2.0"),
    _with(e(), "quantity", "true"),
    _with(e(), "user_id", "null"),
    _with(e(), "device", "null"),
    _with(e(), "user_id", '"a\\u0000b"'),
    _with(e(), "user_id", '"\\u00e9t\\u00e9"'),
    _with(e(), "user_id", '"caf\\u00e9"'),
    _with(e(), "user_id", '"{[x]}"'),
    _with(e(), "user_id", '"\\"quoted\\""'),
    _with(e(), "user_id", '"\\ud800\\ud800"'),
    _with(e(), "user_id", '"\\udc00\\ud800"'),
    _with(e(), "event_type", '"purchase", "event_type": "click"'),  # the last one counts
    _with(e(), "schema_version", "1"),
    _with(e(), "schema_version", "0"),
    _with(e(), "schema_version", "3"),
    good(event_id="😀" * contract.MAX_ID_LENGTH),
    good(event_id="😀" * (contract.MAX_ID_LENGTH + 1)),
    good(event_time="2026-12-01T11:59:00.5Z"),
    good(event_time="2026-12-01T11:59:00.1234567Z"),
    good(event_time="2026-12-01T17:29:00+05:30"),
    good(event_time="2026-12-01T06:59:00-05:00"),
    good(event_time="2026-11-30T23:59:59.999999-12:00"),
    good(event_time="2026-02-30T11:59:00Z"),
    good(event_time="2026-04-31T11:59:00Z"),
    good(ingestion_time="2028-02-29T11:59:00Z"),
    good(ingestion_time="2100-02-29T11:59:00Z"),
    good(ingestion_time="1899-12-31T23:59:59Z"),
    good(ingestion_time="1900-01-01T00:00:00Z"),
    good(ingestion_time="2199-12-31T23:59:59+23:59"),
    good(event_type="heartbeat", product_id=None, category=None, price=None, quantity=None),
    good(event_type="page_view", price=None, quantity=None, currency=None),
    good(event_type="page_view", price=-1),  # an optional field is still checked
    good(event_type="click", price=None, quantity=None, currency=None, product_id=None),
    b"x" * (contract.MAX_EVENT_BYTES + 1),
    good(pad="x" * (contract.MAX_EVENT_BYTES - 300)),
    # A mistyped value under a name written with an escape (the shortcut's regex does not see
    # it: the block is screened line by line), and fields' names inside strings' text.
    _with(e(), "schema_version", '"one"').replace(b'"schema_version"', b'"schema_vers\\u0069on"'),
    good(user_id='"price": "free"', session_id='x","quantity":2.5,"y":"'),
]


def test_the_named_corpus_and_the_grammars_edges_get_python_s_answer():
    corpus = [c.value for c in cases(NOW)]
    assert_same(corpus + grammar_edges(NOW) + ARROW_EDGES)


def test_each_edge_alone_and_among_valid_records_gets_python_s_answer():
    # A block Arrow refuses and a block of one record take different paths.
    valid = [good(event_id=f"v{i}") for i in range(5)]
    for value in grammar_edges(NOW) + ARROW_EDGES:
        assert_same([value])
        assert_same([*valid[:2], value, *valid[2:]])


def test_generated_backlogs_get_python_s_answer():
    for seed, bad in ((11, 0.3), (12, 0.01), (13, 0.0)):
        values = [p.value for p in generate(2_000, seed=seed, bad_share=bad, start=NOW)]
        assert_same(values)


def test_a_block_with_mistyped_records_is_read_by_arrow_once(monkeypatch):
    """Records whose values have a JSON type Arrow's reader refuses (a string for a number, a
    fraction for an integer, a number for a string) go to the exact path before the block is
    read, so the block is read once, not screened line by line and read again."""
    reads, read = [], columnar._read
    monkeypatch.setattr(columnar, "_read", lambda lines: reads.append(len(lines)) or read(lines))
    values = [p.value for p in generate(2_000, seed=14, bad_share=0.2, start=NOW)]
    mistyped = [
        _with(e(), "schema_version", '"one"'),
        _with(e(), "quantity", "2.5"),
        _with(e(), "quantity", "1e3"),
        _with(e(), "price", '"9.99"'),
        _with(e(), "price", "true"),
        _with(e(), "user_id", "42"),
        _with(e(), "event_time", "1733050740"),
    ]
    assert_same(values[:1_000] + mistyped + values[1_000:])
    assert len(reads) == 2 and reads[0] == reads[1]  # assert_same checks the block twice


def test_an_empty_block_and_a_block_of_nulls():
    assert_same([])
    assert_same([None, None])


FUZZ = settings(
    max_examples=int(os.environ.get("RTAP_COLUMNAR_FUZZ_EXAMPLES", "150")),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

numbers = st.builds(
    lambda field, x: _with(e(), field, json.dumps(x, allow_nan=True)),
    st.sampled_from(["price", "quantity", "schema_version"]),
    st.integers(-(2**70), 2**70) | st.floats(allow_nan=True, allow_infinity=True),
)
records = strategies.records(NOW) | numbers | st.just(good())


@FUZZ
@given(st.lists(records, min_size=1, max_size=60))
def test_fuzzed_blocks_get_python_s_answer(values):
    assert_same(values)


def test_a_fast_path_failure_leaves_every_record_to_the_contract(monkeypatch):
    def broken(*_):
        raise RuntimeError("a bug in the fast path")

    monkeypatch.setattr(columnar, "_rules", broken)
    assert_same([good(), b"null", good(event_id="e2"), b"\xff"])
