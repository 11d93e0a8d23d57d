"""PROBE: the columnar fast path (bench/columnar_pipeline.py) against the per-record validator
(include/events/validation.py) on the named bad inputs, 20,000 generated records (30 % bad)
and extra JSON edge cases: which records one accepts and the other refuses.

Run: python bench/columnar_contract_probe.py (from the repository root)."""

import sys, collections

sys.path.insert(0, ".")
import pyarrow as pa, pyarrow.compute as pc, pyarrow.json as pj
from bench import columnar_pipeline as colpipe
from include.events import validation
from include.events.generator import generate
from tests.bad_inputs import cases
from datetime import UTC, datetime

NOW = datetime(2026, 12, 1, 12, 0, tzinfo=UTC)
NOW_US = int(NOW.timestamp() * 1_000_000)
opts = pj.ParseOptions(explicit_schema=colpipe.arrow_schema(), unexpected_field_behavior="ignore")


def fast(values, neighbours=True):
    """Fast-path verdict per value (True = valid); the values in one block with a valid
    neighbour around them."""
    arr = pa.array(values, pa.binary())
    parts, bad = colpipe.parse_lines(arr, opts)
    verdict = [False] * len(values)
    for idx, t in parts:
        ok, _ = colpipe.checks(t, NOW_US)
        for i, v in enumerate(ok.to_pylist()):
            verdict[int(idx[i])] = bool(v)
    return verdict


def oracle(v):
    return validation.check(v, NOW_US)[1]


disagree = collections.Counter()
examples = {}


def compare(values, label):
    n = 0
    # null values: Arrow's binary join would drop them; the fast path treats empty/null before parse
    vals = [v if v else b"" for v in values]
    for v, f in zip(values, fast(vals)):
        r = oracle(v)
        o = r is None
        if o != f:
            key = (
                (label, "fast accepts, contract refuses: " + str(r))
                if f
                else (label, "fast refuses, contract accepts")
            )
            disagree[key] += 1
            examples.setdefault(key, v)
        n += 1
    return n


c = cases(NOW)
n1 = compare([x.value for x in c], "named cases")
gen = (
    generate(20000, seed=3, bad_share=0.3, now=NOW)
    if "now" in generate.__code__.co_varnames
    else generate(20000, seed=3, bad_share=0.3)
)
n2 = compare([g.value for g in gen], "generator bad_share 0.3")
print("named cases", n1, "generator", n2)
for k, v in sorted(disagree.items()):
    print(v, k, repr(examples[k])[:160])

import json as _json
from tests.bad_inputs import purchase

base = purchase(NOW)


def doc(**o):
    d = dict(base, event_id="x-" + "-".join(o) if o else "x-base")
    d.update(o)
    return _json.dumps(d)


extra = {
    "dup_name": doc()[:-1] + ', "price": 99.0}',
    "lone_surrogate": doc(category="ab\\ud800cd").replace("\\\\ud800", "\\ud800"),
    "nan_literal": doc()[:-1] + ', "quantity": NaN}',
    "price_as_string": doc(price="10.5"),
    "qty_as_string": doc(quantity="2"),
    "big_int": doc()[:-1].replace('"quantity": 2', '"quantity": 99999999999999999999') + "}",
    "exp_huge": doc()[:-1] + ', "price": 1e400}',
    "trailing_comma": doc()[:-1] + ",}",
    "single_quotes": doc().replace('"', "'"),
    "raw_newline": doc().replace(", ", ",\n", 1),
    "leading_space": "  " + doc(),
    "trailing_newline": doc() + "\n",
    "nested_obj_in_string": doc(category={"a": 1}),
    "bool_in_string": doc(user_id=True),
    "num_in_string": doc(user_id=123),
    "array_top": "[" + doc() + "]",
    "ts_number": doc(event_time=1764590400),
    "ts_space": doc(event_time="2026-12-01 11:59:30Z"),
    "ts_no_zone": doc(event_time="2026-12-01T11:59:30"),
    "unknown_field": doc()[:-1] + ', "zzz": [1,2,{"a":null}]}',
    "null_required": doc(user_id=None),
    "escaped_unicode_ok": doc(category="caf\u00e9"),
    "escaped_control": doc(category="a\u0001b"),
    "c1_control": doc(category="a\u0085b"),
    "neg_zero_qty": doc(quantity=-0),
    "float_qty_integral": doc(quantity=2.0),
    "schema_v1": doc(schema_version=1),
    "schema_v0": doc(schema_version=0),
}
before = dict(disagree)
compare([v.encode() for v in extra.values()], "extra")
names = list(extra)
vals = [v.encode() for v in extra.values()]
fv = fast(vals)
for name, v, f in zip(names, vals, fv):
    r = oracle(v)
    if (r is None) != f:
        print("extra:", name, "fast", "accepts" if f else "refuses", "contract", r)
