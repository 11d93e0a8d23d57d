"""Hypothesis strategies shared by the validators' fuzz tests (the Python definition's own, and
the JVM validator's agreement with it)."""

from __future__ import annotations

from hypothesis import strategies as st

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
