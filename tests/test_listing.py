"""What the exchange lists on a trading day (qaex.core.listing), on dates that matter: today's,
inside the Spring Festival, a CFFEX expiry Friday; what a settlement adds and removes; and the
opening figures of a fresh listing."""

from __future__ import annotations

import msgspec

from qaex.core.calendar import default_holiday_calendar
from qaex.core.instruments import Instrument
from qaex.core.listing import DEFAULT_KEEP_EXPIRED_DAYS, listing_update
from qaex.core.main_contracts import choose_main
from qaex.core.products import PRODUCTS, products_from_mapping

CALENDAR = default_holiday_calendar()


def listed(day: str, *products: str) -> dict[str, list[str]]:
    update = listing_update({}, [PRODUCTS[p] for p in products], day, CALENDAR)
    by_product: dict[str, list[str]] = {}
    for instrument in update.new:
        by_product.setdefault(instrument.product_id, []).append(instrument.instrument_id)
    return by_product


def test_the_listing_on_2026_12_02() -> None:
    found = listed("20261202", "rb", "IF", "TA", "sc", "au", "T", "m")
    assert found["rb"] == ["rb2612"] + [f"rb27{m:02d}" for m in range(1, 12)]
    assert found["IF"] == ["IF2612", "IF2701", "IF2703", "IF2706"]
    assert found["TA"] == ["TA612"] + [f"TA7{m:02d}" for m in range(1, 12)]
    assert found["sc"][:2] == ["sc2701", "sc2702"] and found["sc"][-1] == "sc2912" and len(found["sc"]) == 20
    assert found["au"] == ["au2612", "au2701", "au2702", "au2704", "au2706", "au2708", "au2710", "au2712"]
    assert found["T"] == ["T2612", "T2703", "T2706"]  # T2612 trades until the second Friday, 11 Dec
    assert found["m"] == ["m2612", "m2701", "m2703", "m2705", "m2707", "m2708", "m2709", "m2711"]


def test_a_closed_day_inside_the_spring_festival_lists_what_the_next_trading_day_lists() -> None:
    closed = listed("20270210", "rb", "IF", "m", "cu")  # Wednesday, Spring Festival 2027 (estimated)
    assert closed == listed("20270215", "rb", "IF", "m", "cu")  # the Monday after
    # rb2702's 15th is that Monday: still listed on it; the day after, rb2703 is the front.
    assert closed["rb"][0] == "rb2702"
    assert listed("20270216", "rb")["rb"][0] == "rb2703"


def test_a_cffex_expiry_friday_lists_the_expiring_month_and_the_next_day_does_not() -> None:
    # IF2612: the third Friday of December 2026 is the 18th, a trading day.
    assert listed("20261218", "IF")["IF"] == ["IF2612", "IF2701", "IF2703", "IF2706"]
    assert listed("20261221", "IF")["IF"] == ["IF2701", "IF2702", "IF2703", "IF2706"]


def test_a_fresh_listing_puts_the_open_interest_on_the_usual_main_month() -> None:
    update = listing_update({}, PRODUCTS.values(), "20261207", CALENDAR)
    by_product: dict[str, list[Instrument]] = {}
    for instrument in update.new:
        by_product.setdefault(instrument.product_key, []).append(instrument)
    mains = {
        key: choose_main(None, contracts, {i.symbol: i.pre_open_interest for i in contracts})
        for key, contracts in by_product.items()
    }
    assert mains["SHFE.rb"] == "SHFE.rb2705"  # rb trades 01/05/10; rb2701 is within 45 days of its end
    assert mains["DCE.i"] == "DCE.i2705" and mains["CZCE.TA"] == "CZCE.TA705"
    assert mains["CFFEX.IF"] == "CFFEX.IF2612"  # index futures: the front month until its last week
    rb = by_product["SHFE.rb"]
    assert max(i.pre_open_interest for i in rb) == PRODUCTS["rb"].reference_open_interest
    assert all(i.pre_settlement == PRODUCTS["rb"].reference_price for i in rb)
    assert all(not i.expired and i.last_trading_day >= "20261207" for i in update.new)


def test_a_settlement_lists_the_new_month_at_its_neighbours_price_and_delists_old_expired_ones() -> None:
    rb = PRODUCTS["rb"]
    first = listing_update({}, [rb], "20261215", CALENDAR).new
    registry = {i.symbol: i for i in first}
    registry["SHFE.rb2711"].pre_settlement = 3217.0  # the furthest live month, after a settlement
    registry["SHFE.rb2612"].expired = True  # settled on its last trading day, 2026-12-15
    update = listing_update(registry, [rb], "20261216", CALENDAR)
    assert [i.symbol for i in update.new] == ["SHFE.rb2712"]
    new = update.new[0]
    assert (new.pre_settlement, new.pre_close, new.pre_open_interest) == (3217.0, 3217.0, 0)
    assert new.upper_limit == 3410.0 and new.lower_limit == 3024.0  # ±6 % of the neighbour's price
    assert not update.delist  # kept while the horizon has not passed
    assert DEFAULT_KEEP_EXPIRED_DAYS == 7
    assert not listing_update(registry, [rb], "20261222", CALENDAR).delist  # 7 days after: still kept
    assert listing_update(registry, [rb], "20261223", CALENDAR).delist == ["SHFE.rb2612"]
    unexpiring = msgspec.structs.replace(registry["SHFE.rb2612"], expire_datetime=0.0)
    assert not listing_update({unexpiring.symbol: unexpiring}, [], "20300101", CALENDAR).delist


def test_a_product_file_overrides_a_builtin_product_and_adds_its_own() -> None:
    products = products_from_mapping(
        {
            "product": [
                {"product_id": "rb", "margin_ratio": 0.2},
                dict(msgspec.to_builtins(PRODUCTS["cu"]), product_id="cuX"),
            ]
        }
    )
    assert products["rb"].margin_ratio == 0.2 and products["rb"].price_tick == 1.0
    assert "cuX" in products and len(products) == len(PRODUCTS) + 1
    only = products_from_mapping({"include_builtin": False, "product": [{"product_id": "IF"}]})
    assert list(only) == ["IF"]
