"""The contract over a block of records at once: Kafka values (an Arrow binary array) -> the
valid events as an Arrow table, and the reason of each record that breaks the contract.

The verdicts are :func:`include.events.validation.check`'s, record for record, and so are a
valid event's typed fields; only the way there differs. Most records take the **fast path**:
Arrow's JSON reader parses the whole block with the contract's types (C++, one pass, no Python
object per record) and the contract's rules run as vectorized masks over its columns. Every
record the fast path does not accept, for whatever reason, is judged by ``validation.check``
itself (the **exact path**), so a reason always comes from the contract's own definition, and
a record that only *looks* bad to Arrow (``2.0`` for an integer, a name given twice) is still
valid. So the fast path can never refuse what the contract accepts; what it must never do is
accept what the contract refuses, or read a value differently. That is why a record reaches
Arrow's reader only when it is one flat JSON object on one line in valid UTF-8 without a
byte-order mark, without a run of 20 digits or a control character (Arrow's reader takes invalid UTF-8 inside an ignored field, a byte-order mark,
blank lines and a second document on a line; a top-level ``null`` crashes it), and why a
timestamp is cast by Arrow only in the plain form whose reading is certain (anything else is
the exact path's). ``tests/unit/test_columnar_contract.py`` compares both on the named bad
inputs, the grammar's edges, generated backlogs and fuzzed blocks.

Why Arrow's reader (pyarrow, already the lake's and the compaction's library): measured in
``bench/limits.md`` ("the columnar core"), parsing and checking a micro-batch this way costs a
fraction of a row-at-a-time parse on the JVM or in Python, and its output is already the
columns the lake's Parquet writer takes.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pj

from include.events import contract, validation

TIMESTAMP = pa.timestamp("us", tz="UTC")
_ARROW = {"string": pa.string(), "long": pa.int64(), "double": pa.float64(), "timestamp": TIMESTAMP}
# The contract's fields as Arrow types (timestamps as instants in microseconds, UTC).
SCHEMA = pa.schema([pa.field(f.name, _ARROW[f.type]) for f in contract.FIELDS])
# What Arrow's reader is asked for: timestamps as their text, checked and cast afterwards.
_READ_SCHEMA = pa.schema(
    [
        pa.field(f.name, pa.string() if f.type == "timestamp" else _ARROW[f.type])
        for f in contract.FIELDS
    ]
)
_PARSE = pj.ParseOptions(explicit_schema=_READ_SCHEMA, unexpected_field_behavior="ignore")
# A line Arrow's reader may see: one flat object (no nested object or array: their depth and
# their contents are the exact path's), space or tab around it, nothing else.
_FLAT_OBJECT = r"^[ \t]*\{[^\[{\r\n]*\}[ \t]*$"
# What sends a line to the exact path wherever it stands (one scan of the line): a number (or
# a string) of 20 digits or more, beyond 64 bits, where Python's reader and Arrow's part
# (Python refuses an integer of over 4,300 digits even in an ignored field); a C0 or C1
# control character, raw or escaped (``\u0000``-``\u001f``, ``\u007f``-``\u009f``), so that
# no string the fast path accepts holds one.
_EXACT_ONLY = (
    r"[0-9]{20}|\\u00(?:[01][0-9a-fA-F]|7[fF]|[89][0-9a-fA-F])|[\x{00}-\x{1f}\x{7f}-\x{9f}]"
)
# A contract field whose value starts as a JSON type Arrow's reader would refuse for it (a
# string where a number belongs, a fraction or an exponent in an integer, a number or a
# boolean where a string belongs): Arrow refuses a whole block for one such line, which was
# then screened line by line in Python, so a realistic block (a few wrongly typed records)
# cost twice a clean one. Such a line goes to the exact path instead (a good line it sends
# there is still judged right); a mistyped value this misses (a name written with escapes)
# still reaches the line-by-line screen: it is a shortcut, not a guard.
_REFUSED_VALUE = {
    "string": '[^"n \t]',
    "timestamp": '[^"n \t]',
    "long": "[^-0-9n \t]|-?[0-9]+[.eE]",
    "double": "[^-0-9n \t]",
}
_WRONG_TYPE = "|".join(
    f'"{re.escape(f.name)}"[ \t]*:[ \t]*(?:{_REFUSED_VALUE[f.type]})' for f in contract.FIELDS
)
_EXACT_SCAN = f"{_EXACT_ONLY}|{_WRONG_TYPE}"  # one scan of each line
# The timestamps the fast path casts: RFC 3339 in its plain form, a year 1900-2199, fields in
# range, at most microseconds, `T` and `Z` upper-case. Anything else goes to the exact path.
_PLAIN_TIMESTAMP = (
    r"^(?:19|20|21)[0-9]{2}-(?:0[1-9]|1[0-2])-(?:0[1-9]|[12][0-9]|3[01])"
    r"T(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\.[0-9]{1,6})?"
    r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])$"
)
# The JSON types a field's value may have for Arrow's reader to take it (a block it refuses is
# screened line by line with these; a line that passes is read again with the others).
_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "timestamp": (str,),
    "long": (int,),
    "double": (int, float),
}
_SCREEN = tuple((f.name, _JSON_TYPES[f.type]) for f in contract.FIELDS)


@dataclass(frozen=True)
class Checked:
    """One block's verdicts: ``valid`` holds the valid events (:data:`SCHEMA`, then ``row``,
    the record's index in the block, ascending); ``dead`` the (index, reason) of every other
    record, ascending by index."""

    valid: pa.Table
    dead: list[tuple[int, str]]


def check_block(values: pa.Array | pa.ChunkedArray, now_micros: int) -> Checked:
    """Judge every record of ``values`` (Kafka values: binary, nulls allowed) against the
    contract at the processing time ``now_micros`` (epoch microseconds), as
    ``validation.check(value, now_micros)`` would. Never raises on a record's content."""
    if isinstance(values, pa.ChunkedArray):
        values = values.combine_chunks()
    values = values.cast(pa.binary()) if values.type != pa.binary() else values
    n = len(values)
    try:
        parsed, exact = _fast_path(values, now_micros)
    except Exception:  # a fast-path failure must not stop the stream: every record exactly
        parsed, exact = [], [np.arange(n)]
    slow = np.sort(np.concatenate(exact)) if exact else np.zeros(0, np.int64)
    events: list[dict[str, Any]] = []
    event_rows: list[int] = []
    dead: list[tuple[int, str]] = []
    for i in slow.tolist():
        event, reason = validation.check(values[i].as_py(), now_micros)
        if reason is None:
            events.append(event)  # type: ignore[arg-type]
            event_rows.append(i)
        else:
            dead.append((i, reason))
    if events:
        parsed.append((np.asarray(event_rows, np.int64), _from_events(events)))
    return Checked(_ordered(parsed, n), dead)


def _fast_path(
    values: pa.Array, now_micros: int
) -> tuple[list[tuple[np.ndarray, pa.Table]], list[np.ndarray]]:
    """(the rows the fast path accepts with their typed events, the rows left to the exact
    path)."""
    fast = _fast_candidates(values)
    parsed: list[tuple[np.ndarray, pa.Table]] = []
    exact: list[np.ndarray] = [np.flatnonzero(~fast)]
    rows = np.flatnonzero(fast)
    if not len(rows):
        return parsed, exact
    lines = values.take(pa.array(rows))
    table = _read(lines)
    if table is None:  # a line Arrow refuses: screen each, read the rest again at once
        ok = np.fromiter((_screened(v) for v in lines.to_pylist()), bool, len(rows))
        exact.append(rows[~ok])
        rows = rows[ok]
        table = _read(lines.filter(pa.array(ok))) if len(rows) else None
        if table is None:
            exact.append(rows)
            return parsed, exact
    accepted, typed = _rules(table, now_micros)
    keep = accepted.to_numpy(zero_copy_only=False)
    exact.append(rows[~keep])
    if keep.any():
        parsed.append((rows[keep], typed.filter(pa.array(keep))))
    return parsed, exact


def _fast_candidates(values: pa.Array) -> np.ndarray:
    """True where a record may go to Arrow's reader: a value, at most the contract's size,
    valid UTF-8, no byte-order mark, one flat object on one line."""
    size = pc.binary_length(values)
    ok = pc.and_(
        pc.is_valid(values), pc.less_equal(pc.fill_null(size, 0), contract.MAX_EVENT_BYTES)
    )
    ok = pc.and_(ok, pc.greater(pc.fill_null(size, 0), 0))
    # A value that is not UTF-8 is read as the empty text, which is no object; a byte-order
    # mark is not space or tab.
    text = pc.if_else(_utf8_valid(values), values, pa.scalar(b"", pa.binary())).cast(pa.string())
    ok = pc.and_(ok, pc.match_substring_regex(text, _FLAT_OBJECT))
    ok = pc.and_(ok, pc.invert(pc.match_substring_regex(text, _EXACT_SCAN)))
    return pc.fill_null(ok, False).to_numpy(zero_copy_only=False)


def _utf8_valid(values: pa.Array) -> pa.Array:
    """True where a value is valid UTF-8 (null for a null value)."""
    try:
        values.cast(pa.string())
    except pa.ArrowInvalid:  # at least one is not: find which, one by one (a rare block)
        flags = []
        for v in values.to_pylist():
            if v is None:
                flags.append(None)
                continue
            try:
                v.decode("utf-8")
            except UnicodeDecodeError:
                flags.append(False)
            else:
                flags.append(True)
        return pa.array(flags, pa.bool_())
    return pc.is_valid(values)


def _read(lines: pa.Array) -> pa.Table | None:
    """Arrow's reading of the lines (one row each), or None when it refuses any of them."""
    joined = pc.binary_join(
        pa.ListArray.from_arrays(pa.array([0, len(lines)], pa.int32()), lines), b"\n"
    )
    try:
        table = pj.read_json(pa.BufferReader(joined[0].as_buffer()), parse_options=_PARSE)
    except (pa.ArrowException, ValueError):
        return None
    return table if table.num_rows == len(lines) else None


def _screened(value: bytes) -> bool:
    """Whether Arrow's reader could take this line: one JSON object whose contract fields have
    the JSON types Arrow reads them as (orjson: strict, as the contract's validator)."""
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return False
    if type(doc) is not dict:
        return False
    for name, kinds in _SCREEN:
        v = doc.get(name)
        if v is not None and type(v) not in kinds:
            return False
    return True


def _rules(table: pa.Table, now_micros: int) -> tuple[pa.Array, pa.Table]:
    """True where a row Arrow read meets every rule of the contract (False is no verdict: the
    exact path judges it), and the table with its timestamps cast."""
    true = pa.array(np.ones(table.num_rows, bool))
    ok = true
    etype = table["event_type"]
    ok = pc.and_(
        ok,
        pc.fill_null(pc.is_in(etype, value_set=pa.array(sorted(validation._EVENT_TYPES))), False),
    )
    columns = {}
    for f in contract.FIELDS:
        col = table[f.name]
        present = pc.is_valid(col)
        if f.required_for:
            needed = pc.is_in(etype, value_set=pa.array(sorted(t.value for t in f.required_for)))
            ok = pc.and_(ok, pc.or_(present, pc.invert(pc.fill_null(needed, False))))
        good: Any = true
        if f.type == "string":
            length = pc.utf8_length(col)
            good = pc.and_(pc.greater(length, 0), pc.less_equal(length, f.max_length or 1 << 30))
            if f.enum is not None:
                good = pc.and_(
                    good, pc.is_in(col, value_set=pa.array(sorted(validation._ENUMS[f.name])))
                )
        elif f.type in ("long", "double"):
            low, high, _ = validation._bounds(f)
            good = pc.and_(pc.greater_equal(col, low), pc.less_equal(col, high))
            if f.type == "double":  # NaN fails any bound; an unbounded field could be infinite
                good = pc.and_(good, pc.is_finite(col))
        elif f.type == "timestamp":
            good, col = _timestamps(col)
        ok = pc.and_(ok, pc.or_(pc.invert(present), pc.fill_null(good, False)))
        columns[f.name] = col
    event_time = pc.cast(columns["event_time"], pa.int64())
    late = now_micros - contract.MAX_PAST_AGE_DAYS * 86_400_000_000
    ahead = now_micros + contract.MAX_FUTURE_SKEW_SECONDS * 1_000_000
    ok = pc.and_(
        ok,
        pc.fill_null(
            pc.and_(pc.greater_equal(event_time, late), pc.less_equal(event_time, ahead)), False
        ),
    )
    return pc.fill_null(ok, False), pa.table(columns, schema=SCHEMA)


def _timestamps(text: pa.ChunkedArray) -> tuple[pa.Array, pa.Array]:
    """(True where the text is a plain RFC 3339 time of a real date, the instants): a time in
    any other form is left to the exact path (False), a null stays null."""
    plain = pc.match_substring_regex(text, _PLAIN_TIMESTAMP)
    candidates = pc.if_else(plain, text, pa.scalar(None, pa.string()))
    try:
        return plain, pc.cast(candidates, TIMESTAMP)
    except pa.ArrowInvalid:  # a date that is not real (February 30): each one alone
        pass
    out: list[Any] = []
    flags: list[bool | None] = []
    for v in candidates.to_pylist():
        try:
            out.append(pc.cast(pa.array([v], pa.string()), TIMESTAMP)[0].as_py())
            flags.append(None if v is None else True)
        except pa.ArrowInvalid:
            out.append(None)
            flags.append(False)
    good = pc.and_(plain, pa.array(flags, pa.bool_()))
    return good, pa.array(out, TIMESTAMP)


def _from_events(events: Sequence[dict[str, Any]]) -> pa.Table:
    """The exact path's valid events (``validation.check``'s typed fields) as :data:`SCHEMA`."""
    columns = {}
    for f in contract.FIELDS:
        values = [e[f.name] for e in events]
        if f.type == "timestamp":
            columns[f.name] = pa.array(values, pa.int64()).cast(TIMESTAMP)
        else:
            columns[f.name] = pa.array(values, _ARROW[f.type])
    return pa.table(columns, schema=SCHEMA)


def _ordered(parts: Sequence[tuple[np.ndarray, pa.Table]], n: int) -> pa.Table:
    """The valid events of both paths in the block's order, with their ``row``."""
    schema = SCHEMA.append(pa.field("row", pa.int64()))
    if not parts:
        return schema.empty_table()
    tables = [t.append_column("row", pa.array(r, pa.int64())) for r, t in parts]
    table = pa.concat_tables(tables) if len(tables) > 1 else tables[0]
    if len(tables) > 1:
        table = table.take(pc.sort_indices(table["row"]))
    return table
