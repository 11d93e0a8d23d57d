from __future__ import annotations

from include.events import contract
from tests.conftest import ROOT


def test_field_names_unique_and_types_known():
    assert len(set(contract.FIELD_NAMES)) == len(contract.FIELD_NAMES)
    assert {f.type for f in contract.FIELDS} <= {"string", "long", "double", "timestamp", "boolean"}


def test_required_fields_per_type():
    assert "price" in contract.required_fields(contract.EventType.PURCHASE)
    assert "price" not in contract.required_fields(contract.EventType.PAGE_VIEW)
    assert "category" in contract.required_fields(contract.EventType.PRODUCT_VIEW)
    for etype in contract.EventType:
        assert {"event_id", "event_type", "user_id", "event_time"} <= set(
            contract.required_fields(etype)
        )


def test_docs_are_generated_from_the_contract():
    doc = (ROOT / "docs" / "event-contract.md").read_text()
    assert doc == contract.markdown(), "docs/event-contract.md is stale: run `make docs`"
