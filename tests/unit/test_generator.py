from __future__ import annotations

import json
from collections import Counter

import pytest

from include.events.generator import BAD_KINDS, generate
from include.events.producer import id_digest


def test_deterministic_for_a_seed():
    a = generate(500, seed=7)
    b = generate(500, seed=7)
    assert [p.value for p in a] == [p.value for p in b]
    assert [p.value for p in generate(500, seed=8)] != [p.value for p in a]


def test_valid_events_follow_a_funnel_and_are_keyed_by_user():
    events = generate(5_000, seed=1)
    types = Counter(json.loads(p.value)["event_type"] for p in events)
    assert types["page_view"] > types["add_to_cart"] > types["purchase"] > 0
    for p in events[:100]:
        assert p.key.decode() == json.loads(p.value)["user_id"]
    assert len({p.event_id for p in events}) == len(events)


def test_every_bad_kind_is_produced_on_demand():
    events = generate(2_000, seed=3, bad_share=0.2)
    kinds = Counter(p.kind for p in events)
    for kind in BAD_KINDS:
        assert kinds[kind] > 0, kind


def test_unknown_bad_kind_is_refused_by_name():
    with pytest.raises(ValueError, match="teleport"):
        generate(10, bad_kinds=("teleport",))


def test_id_digest_ignores_order_and_duplicates():
    assert id_digest(["b", "a", "a", None]) == id_digest(["a", "b"])
    assert id_digest(["a"]) != id_digest(["b"])
