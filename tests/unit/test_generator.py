from __future__ import annotations

import itertools
import json
from collections import Counter

import pytest

from include.events.generator import BAD_KINDS, generate
from include.events.runs import id_digest


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


def test_late_and_out_of_order_shares_shift_event_time():
    from datetime import UTC, datetime

    start = datetime(2026, 11, 24, 12, tzinfo=UTC)
    shaken = generate(3_000, seed=9, start=start, late_share=0.1, out_of_order_share=0.2)
    late = [p for p in shaken if p.late]
    assert 150 < len(late) < 450
    # late events happened 15-60 minutes before they were sent
    for p in late:
        body = json.loads(p.value)
        sent = datetime.fromisoformat(body["ingestion_time"]).timestamp() * 1000
        assert 15 * 60_000 <= sent - p.event_time_ms <= 60 * 60_000 + 1_000
    inversions = sum(
        1
        for a, b in itertools.pairwise(shaken)
        if a.key == b.key and b.event_time_ms < a.event_time_ms
    )
    assert inversions > 50, "out-of-order events arrive after later ones of the same user"


def test_daily_rhythm_follows_the_curve():
    from datetime import UTC, datetime

    from include.events.generator import daily_intensity

    events = generate(
        20_000, seed=4, start=datetime(2026, 11, 24, tzinfo=UTC), span_seconds=86_400, rhythm=True
    )
    hours = Counter((p.event_time_ms // 3_600_000) % 24 for p in events)
    assert daily_intensity(20) > 3 * daily_intensity(4)
    assert hours[20] > 2 * hours[4]


def test_zipf_like_product_popularity():
    events = [json.loads(p.value) for p in generate(20_000, seed=2)]
    views = Counter(e["product_id"] for e in events if e["event_type"] == "product_view")
    top = [n for _, n in views.most_common()]
    assert top[0] > 10 * top[len(top) // 2], "a few products get most of the views"


def test_generated_fields_are_all_in_the_contract():
    from include.events.contract import FIELD_NAMES

    for p in generate(2_000, seed=6, irrelevant_share=0.2):
        assert set(json.loads(p.value)) <= set(FIELD_NAMES)


def test_pacer_holds_the_rate():
    import time

    from include.events.producer import _Pacer

    started = time.monotonic()
    pacer = _Pacer(10_000.0, started)
    pacer.wait(2_000)  # 2,000 events at 10,000/s take at least 0.2 s
    assert time.monotonic() - started >= 0.19
    with pytest.raises(ValueError, match="rate"):
        _Pacer(0, started)


def test_sellers_price_in_several_currencies_and_the_record_keeps_them_apart():
    from datetime import date, timedelta

    from include.events.catalog import CURRENCY_SHARES, build_catalog, daily_rates, usd_value

    catalog = build_catalog()
    shares = Counter(p.currency for p in catalog.products)
    assert set(shares) == {c for c, _ in CURRENCY_SHARES} and shares["USD"] > shares["EUR"]
    purchases = [
        p for p in generate(20_000, seed=5) if p.kind == "valid" and p.event_type == "purchase"
    ]
    for p in purchases:
        sent = json.loads(p.value)
        assert p.currency == sent["currency"]
        assert p.revenue == round(sent["price"] * sent["quantity"], 2)
    assert {p.currency for p in purchases} == set(shares), "the demo sells in every currency"
    # Rates: every ordered pair each day, consistent both ways and through USD, the same on
    # every load (a published rate never changes).
    day = date(2026, 11, 20)
    rates = {(r.currency, r.quote): r.rate for r in daily_rates(day, day)}
    assert len(rates) == 6 and all(r > 0 for r in rates.values())
    assert rates["EUR", "GBP"] * rates["GBP", "EUR"] == pytest.approx(1.0)
    assert rates["EUR", "USD"] == pytest.approx(usd_value("EUR", day))
    assert rates["EUR", "GBP"] == pytest.approx(rates["EUR", "USD"] / rates["GBP", "USD"])
    assert list(daily_rates(day, day + timedelta(days=2))) == list(
        daily_rates(day, day + timedelta(days=2))
    )
    assert 1.0 < usd_value("EUR", day) < 1.2 and usd_value("EUR", day) != usd_value(
        "EUR", day + timedelta(days=1)
    )
