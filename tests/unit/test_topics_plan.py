from __future__ import annotations

import re

import pytest

from include.kafka import topics
from include.kafka.topics import Observed, TopicSpec


def spec(**kw):
    base = dict(name="events", partitions=3, replication_factor=1, config={"retention.ms": "1000"})
    base.update(kw)
    return TopicSpec(**base)


def test_declaration_in_repo_loads():
    declared = {t.name: t for t in topics.load()}
    assert "events" in declared and declared["events"].partitions >= 1


def test_missing_topic_is_created():
    p = topics.plan([spec()], {})
    assert [t.name for t in p.create] == ["events"] and p.changes


def test_in_sync_topic_is_unchanged():
    p = topics.plan([spec()], {"events": Observed(3, 1, {"retention.ms": "1000", "other": "x"})})
    assert not p.changes and p.unchanged == ["events"] and not p.refused


def test_config_drift_and_more_partitions_are_fixed():
    p = topics.plan([spec(partitions=6)], {"events": Observed(3, 1, {"retention.ms": "5"})})
    assert p.alter_config == {"events": {"retention.ms": ("5", "1000")}}
    assert p.add_partitions == {"events": (3, 6)}


def test_fewer_partitions_and_other_rf_are_refused():
    p = topics.plan([spec(partitions=1, replication_factor=3)], {"events": Observed(3, 1, {})})
    assert len(p.refused) == 2
    with pytest.raises(topics.UnsafeTopicChange, match="events: partitions"):
        topics.apply(object(), p)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            "topics:\n  t:\n    partitions: 3\n    replication_factor: 1\n    colour: red\n",
            "topic 't': unknown key",
        ),
        ("topics:\n  t:\n    partitions: zero\n    replication_factor: 1\n", "key 'partitions'"),
        ("topics:\n  t:\n    replication_factor: 1\n", "missing key 'partitions'"),
        ("topics: [\n", "not valid YAML"),
    ],
)
def test_broken_declaration_names_file_topic_and_key(tmp_path, body, message):
    path = tmp_path / "topics.yaml"
    path.write_text(body)
    with pytest.raises(topics.TopicDeclarationError, match=message) as err:
        topics.load(path)
    assert str(path) in str(err.value)


def test_await_converged_polls_until_the_broker_serves_the_declaration(monkeypatch):
    stale = Observed(partitions=3, replication_factor=1, config={"retention.ms": "1000"})
    fresh = Observed(partitions=3, replication_factor=1, config={"retention.ms": "3600000"})
    answers = iter([stale, stale, fresh])
    monkeypatch.setattr(topics, "observe", lambda admin, names: {"events": next(answers)})
    monkeypatch.setattr(topics.time, "sleep", lambda s: None)
    topics.await_converged(None, [spec(config={"retention.ms": "3600000"})], timeout=60)
    assert next(answers, None) is None


def test_await_converged_names_what_still_differs(monkeypatch):
    stale = Observed(partitions=3, replication_factor=1, config={"retention.ms": "1000"})
    monkeypatch.setattr(topics, "observe", lambda admin, names: {"events": stale})
    with pytest.raises(
        topics.TopicsNotConverged, match=re.escape("retention.ms '1000' -> '3600000'")
    ):
        topics.await_converged(None, [spec(config={"retention.ms": "3600000"})], timeout=0)
