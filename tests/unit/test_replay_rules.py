"""Which dead letters the replay may send back to the topic."""

from __future__ import annotations

from spark_apps.replay_dead_letters import is_replayable


def test_records_without_a_value_are_never_replayed():
    assert not is_replayable(None, "empty_value", "")
    assert not is_replayable(b"", "empty_value", "empty_value")


def test_second_versions_of_an_event_only_when_named():
    value = b'{"event_id": "e1"}'
    assert is_replayable(value, "missing_field:user_id", "")
    assert not is_replayable(value, "conflicting_duplicate", "")
    assert not is_replayable(value, "conflicting_duplicate", "c")
    assert is_replayable(value, "conflicting_duplicate", "conflicting_duplicate")
