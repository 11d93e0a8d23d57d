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
from tests.bad_inputs import cases, grammar_edges

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


# Where Jackson's defaults and Python's readers part: each must get Python's answer.
EDGES = grammar_edges(NOW)


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

records = strategies.records(NOW)


@FUZZ
@given(st.lists(records, min_size=1, max_size=80))
def test_fuzzed_records_get_python_s_answer(spark, values):
    assert_same(spark, values)
