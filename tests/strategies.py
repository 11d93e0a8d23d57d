"""Hypothesis strategies shared by the validators' fuzz tests (the Python definition's own, and
the JVM validator's agreement with it)."""

from __future__ import annotations

import json
from datetime import datetime

from hypothesis import strategies as st

from include.events import contract
from tests.bad_inputs import purchase

# Strings that sit on a rule's edge: non-finite numbers spelled as strings, a valid timestamp,
# enum values, an empty string, a control character.
EDGE_STRINGS = ["NaN", "Infinity", " inf", "", "2026-12-01T11:59:00Z", "purchase", "USD", "\x00"]


def json_values(text: int = 40, width: int = 4, leaves: int = 12) -> st.SearchStrategy:
    """Any JSON value: scalars (big integers, non-finite floats, edge strings) nested in lists
    and objects up to ``width`` wide with at most ``leaves`` scalars."""
    scalars = (
        st.none()
        | st.booleans()
        | st.integers(min_value=-(2**70), max_value=2**70)
        | st.floats(allow_nan=True, allow_infinity=True)
        | st.text(max_size=text)
        | st.sampled_from(EDGE_STRINGS)
    )
    return st.recursive(
        scalars,
        lambda inner: (
            st.lists(inner, max_size=width)
            | st.dictionaries(st.text(max_size=10), inner, max_size=width)
        ),
        max_leaves=leaves,
    )


def records(now: datetime) -> st.SearchStrategy[bytes]:
    """Kafka values for a validator: random bytes, any JSON document, events (valid purchases
    around ``now`` of every type) with up to three fields replaced by any JSON value, and events
    whose ``event_time`` is written in the forms RFC 3339 allows and some it does not."""
    values = json_values(text=20, width=3, leaves=8)

    def event(**overrides) -> dict:
        return purchase(now, **overrides)

    events = st.builds(
        lambda replacements, event_type: json.dumps(
            {**event(event_type=event_type), **replacements}, allow_nan=True
        ).encode(),
        st.dictionaries(st.sampled_from(contract.FIELD_NAMES), values, min_size=1, max_size=3),
        st.sampled_from([t.value for t in contract.EventType]),
    )
    timestamps = st.builds(
        lambda d, sep, frac, zone: json.dumps(
            event(event_time=d.strftime("%Y-%m-%d") + sep + d.strftime("%H:%M:%S") + frac + zone)
        ).encode(),
        st.datetimes(min_value=datetime(2026, 11, 20), max_value=datetime(2026, 12, 2)),
        st.sampled_from(["T", "t", " "]),
        st.sampled_from(["", ".5", ".123456", ".1234567", ".123456789", ".1234567890"]),
        st.sampled_from(["Z", "z", "+01:00", "-05:30", "+00:99", "+23:60", "", "+1:00"]),
    )
    return (
        st.binary(max_size=120)
        | st.builds(lambda d: json.dumps(d, allow_nan=True).encode(), values)
        | events
        | timestamps
    )
