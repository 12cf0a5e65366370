"""Product templates, contract names, listings and last trading days, checked against TqSdk's expired
contracts (``expired_quotes.json.lzma`` in the tqsdk 3.10.4 package: every future that expired from
2016 to mid-2020, with its ``expire_datetime`` at 15:00 China time on its last trading day)."""

from __future__ import annotations

import datetime as dt
import importlib.util
import json
import lzma
import math
from pathlib import Path
from typing import Any

import msgspec
import pytest

from qaex.core.calendar import CHINA_TZ, default_holiday_calendar, is_trading_day, next_trading_date
from qaex.core.contract_rules import NthTradingDay, expiry_date, month_index, year_month
from qaex.core.contracts import (
    contract_name,
    expire_datetime,
    front_month,
    instrument_for,
    last_trading_day,
    listed_contracts,
)
from qaex.core.instruments import Instrument, default_instruments
from qaex.core.products import PRODUCTS, SECOND_FRIDAY, ProductTemplate, product

HOLIDAYS = default_holiday_calendar()
REQUIRED = (
    "SHFE.cu SHFE.al SHFE.zn SHFE.ni SHFE.au SHFE.ag SHFE.rb SHFE.hc SHFE.ru SHFE.fu INE.sc "
    "DCE.m DCE.y DCE.p DCE.i DCE.jm CZCE.TA CZCE.MA CZCE.SR CZCE.CF "
    "CFFEX.IF CFFEX.IH CFFEX.IC CFFEX.IM CFFEX.T"
).split()


def d(text: str) -> dt.date:
    return dt.date.fromisoformat(text)


def ids(day: dt.date, product_id: str, calendar: Any = HOLIDAYS) -> list[str]:
    return [c.instrument_id for c in listed_contracts(PRODUCTS[product_id], day, calendar)]


# -- templates ------------------------------------------------------------------------------------
def test_every_required_product_has_a_template() -> None:
    assert {p.key for p in PRODUCTS.values()} >= set(REQUIRED)
    assert product("SHFE.rb") is PRODUCTS["rb"] and product("rb") is PRODUCTS["rb"]
    with pytest.raises(KeyError):
        product("DCE.rb")


def test_templates_agree_with_the_built_in_instruments() -> None:
    for instrument in default_instruments():
        template = PRODUCTS[instrument.product_id]
        assert template.settlement_window == (3600 if template.exchange_id == "CFFEX" else 0)
        built = instrument_for(
            template,
            next(
                c
                for c in listed_contracts(template, d("2025-11-03"))
                if c.instrument_id == instrument.instrument_id
            ),
        )
        for field in Instrument.__struct_fields__:
            # The fixed test contracts settle on the whole day's VWAP (the golden test records them so);
            # the CFFEX template settles on the last hour, as CFFEX does.
            if field not in ("expire_datetime", "upper_limit", "lower_limit", "settlement_window"):
                assert getattr(built, field) == getattr(instrument, field), (instrument.symbol, field)


@pytest.mark.parametrize("template", PRODUCTS.values(), ids=lambda t: t.key)
def test_a_template_makes_valid_instruments(template: ProductTemplate) -> None:
    contract = listed_contracts(template, d("2026-12-02"), HOLIDAYS)[0]
    instrument = instrument_for(template, contract)
    # Instrument() does not check the Annotated bounds; decoding does (as the admin route would).
    assert msgspec.convert(msgspec.to_builtins(instrument), Instrument) == instrument
    assert instrument.to_ticks(template.reference_price) is not None  # on the tick grid
    assert instrument.instrument_name.startswith(template.name) and instrument.instrument_name[-3:].isdigit()
    assert template.exchange_id in ("SHFE", "INE", "DCE", "CZCE", "CFFEX")
    assert template.product_id == (
        template.product_id.upper()
        if template.exchange_id in ("CZCE", "CFFEX")
        else template.product_id.lower()
    )


def test_sessions_have_the_trading_time_shape_and_their_night_ends() -> None:
    expected = {
        **dict.fromkeys(("cu", "al", "zn", "ni"), "25:00:00"),
        **dict.fromkeys(("au", "ag", "sc"), "26:30:00"),
        **dict.fromkeys(
            ("rb", "hc", "ru", "fu", "m", "y", "p", "i", "jm", "eg", "TA", "MA", "SR", "CF"), "23:00:00"
        ),
        **dict.fromkeys(("jd", "IF", "IH", "IC", "IM", "T"), None),
    }
    night_end = {
        p.product_id: p.trading_time.night[0][1] if p.trading_time.night else None for p in PRODUCTS.values()
    }
    assert night_end == expected
    assert PRODUCTS["T"].trading_time.day[-1] == ["13:00:00", "15:15:00"]
    for template in PRODUCTS.values():
        for pair in [*template.trading_time.day, *template.trading_time.night]:
            assert len(pair) == 2 and all(len(t) == 8 and t[2] == t[5] == ":" for t in pair)
            assert pair[0] < pair[1]


def test_expire_datetime_is_15_00_china_time_on_the_last_trading_day() -> None:
    assert expire_datetime(d("2026-01-15")) == 1768460400.0  # the built-in cu2601's
    assert dt.datetime.fromtimestamp(expire_datetime(d("2026-12-18")), CHINA_TZ) == dt.datetime(
        2026, 12, 18, 15, tzinfo=CHINA_TZ
    )


# -- names ------------------------------------------------------------------------------------------
def test_contract_names_follow_each_exchange() -> None:
    assert contract_name(PRODUCTS["rb"], 2027, 1) == "rb2701"
    assert contract_name(PRODUCTS["sc"], 2027, 12) == "sc2712"
    assert contract_name(PRODUCTS["m"], 2030, 5) == "m3005"
    assert contract_name(PRODUCTS["TA"], 2027, 1) == "TA701"  # CZCE: one year digit
    assert contract_name(PRODUCTS["SR"], 2030, 11) == "SR011"
    assert contract_name(PRODUCTS["IF"], 2026, 12) == "IF2612"
    assert contract_name(PRODUCTS["T"], 2027, 3) == "T2703"


# -- listings ---------------------------------------------------------------------------------------
def test_listings_on_2026_12_02() -> None:
    day = d("2026-12-02")
    symbols = {c.symbol for template in PRODUCTS.values() for c in listed_contracts(template, day, HOLIDAYS)}
    assert {"SHFE.rb2701", "SHFE.rb2705", "CFFEX.IF2612", "CZCE.TA701"} <= symbols
    assert ids(day, "rb") == [f"rb{n}" for n in (2612, *range(2701, 2712))]
    assert ids(day, "au") == ["au2612", "au2701", "au2702", "au2704", "au2706", "au2708", "au2710", "au2712"]
    assert ids(day, "ru") == ["ru2701", *[f"ru27{m:02d}" for m in range(3, 12)]]
    assert ids(day, "fu") == [f"fu27{m:02d}" for m in range(1, 13)]  # fu2612 stopped on 11-30
    assert ids(day, "sc") == [
        *[f"sc27{m:02d}" for m in range(1, 13)],
        "sc2803", "sc2806", "sc2809", "sc2812", "sc2903", "sc2906", "sc2909", "sc2912",
    ]  # fmt: skip
    assert ids(day, "m") == ["m2612", "m2701", "m2703", "m2705", "m2707", "m2708", "m2709", "m2711"]
    assert ids(day, "SR") == ["SR701", "SR703", "SR705", "SR707", "SR709", "SR711"]
    assert ids(day, "TA") == ["TA612", *[f"TA7{m:02d}" for m in range(1, 12)]]
    assert ids(day, "IF") == ["IF2612", "IF2701", "IF2703", "IF2706"]
    assert ids(day, "T") == ["T2612", "T2703", "T2706"]
    rb = {c.instrument_id: c for c in listed_contracts(PRODUCTS["rb"], day, HOLIDAYS)}
    assert rb["rb2701"].last_trading_day == d("2027-01-15")
    assert (rb["rb2705"].delivery_year, rb["rb2705"].delivery_month) == (2027, 5)


def test_a_new_contract_is_listed_the_day_after_one_expires() -> None:
    assert ids(d("2026-12-14"), "m")[-1] == "m2711"  # m2612's last trading day (the 10th)
    assert ids(d("2026-12-15"), "m") == [
        "m2701",
        "m2703",
        "m2705",
        "m2707",
        "m2708",
        "m2709",
        "m2711",
        "m2712",
    ]
    assert ids(d("2026-12-16"), "rb")[0] == "rb2701" and ids(d("2026-12-16"), "rb")[-1] == "rb2712"


def test_listings_inside_the_2026_spring_festival() -> None:
    inside, after = d("2026-02-18"), d("2026-02-24")
    for template in PRODUCTS.values():
        assert listed_contracts(template, inside, HOLIDAYS) == listed_contracts(template, after, HOLIDAYS)
    cu = {c.instrument_id: c for c in listed_contracts(PRODUCTS["cu"], inside, HOLIDAYS)}
    # The 15th (a Sunday inside the closure) rolls to the first trading day after it.
    assert cu["cu2602"].last_trading_day == d("2026-02-24")
    assert last_trading_day(PRODUCTS["cu"], 2026, 2) == d("2026-02-16")  # weekends only
    # IF: the third Friday (02-20) is closed, so the next trading day.
    assert ids(inside, "IF") == ["IF2602", "IF2603", "IF2606", "IF2609"]
    assert last_trading_day(PRODUCTS["IF"], 2026, 2, HOLIDAYS) == d("2026-02-24")
    assert last_trading_day(PRODUCTS["m"], 2026, 2, HOLIDAYS) == d("2026-02-13")  # the 10th trading day
    assert "m2603" in ids(inside, "m") and "m2602" not in ids(inside, "m")


def test_an_index_future_trades_on_its_expiry_friday_and_is_gone_the_next_day() -> None:
    friday, monday = d("2026-11-20"), d("2026-11-23")  # the third Friday of November 2026
    for product_id in ("IF", "IH", "IC", "IM"):
        on_friday = listed_contracts(PRODUCTS[product_id], friday, HOLIDAYS)
        assert on_friday[0].instrument_id == f"{product_id}2611" and on_friday[0].last_trading_day == friday
        assert ids(monday, product_id) == [f"{product_id}{n}" for n in (2612, 2701, 2703, 2706)]
    assert ids(friday, "IF") == ["IF2611", "IF2612", "IF2703", "IF2706"]


def test_listings_change_only_by_expiries_and_new_contracts() -> None:
    """Every trading day from 2026-11 to 2027-04: the previous day's contracts are still listed unless
    they expired, every contract listed expires on or after the day, and the count is steady."""
    day = d("2026-11-02")
    previous = {p: listed_contracts(t, day, HOLIDAYS) for p, t in PRODUCTS.items()}
    while day < d("2027-04-30"):
        day = next_trading_date(day, HOLIDAYS)
        for product_id, template in PRODUCTS.items():
            today = listed_contracts(template, day, HOLIDAYS)
            assert all(
                c.last_trading_day >= day and is_trading_day(c.last_trading_day, HOLIDAYS) for c in today
            )
            kept = {c.instrument_id for c in previous[product_id] if c.last_trading_day >= day}
            assert kept <= {c.instrument_id for c in today}, (product_id, day)
            assert [c.last_trading_day for c in today] == sorted(c.last_trading_day for c in today)
            previous[product_id] = today
        assert len(previous["rb"]) == 12 and len(previous["IF"]) == 4 and len(previous["T"]) == 3
        assert len(previous["sc"]) == 20 and len(previous["SR"]) == 6


def test_front_month_is_the_nearest_still_trading() -> None:
    assert year_month(front_month(PRODUCTS["T"], d("2026-12-11"), HOLIDAYS)) == (2026, 12)
    assert year_month(front_month(PRODUCTS["T"], d("2026-12-14"), HOLIDAYS)) == (2027, 3)
    assert front_month(PRODUCTS["sc"], d("2026-12-31"), HOLIDAYS) == month_index(2027, 1)


# -- last trading days against TqSdk's expired contracts -------------------------------------------
def _expired_quotes() -> dict[str, dict[str, Any]] | None:
    spec = importlib.util.find_spec("tqsdk")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "expired_quotes.json.lzma"
    with lzma.open(path, "rt", encoding="utf-8") as f:
        quotes: dict[str, dict[str, Any]] = json.load(f)
    return {symbol: quote for symbol, quote in quotes.items() if quote["ins_class"] == "FUTURE"}


EXPIRED = _expired_quotes()
needs_tqsdk = pytest.mark.skipif(EXPIRED is None, reason="tqsdk is not installed")

# Products without a template whose rule is one of the templates': checked with that rule.
RULE_ONLY = {"ZC": NthTradingDay(n=5), "eb": NthTradingDay(n=-4), "TF": SECOND_FRIDAY, "TS": SECOND_FRIDAY}

# Every mismatch, and why (docs/calendar.md):
KNOWN_MISMATCHES = {
    # TqSdk's expire_datetime for the first INE crude contracts is the first trading day of the delivery
    # month (sc2001: 2020-01-01, a holiday), not the last trading day of the month before it.
    **{
        f"INE.sc{n}": "first day of the delivery month"
        for n in (1809, 1810, 1811, 1812, *range(1901, 1913), 2001)
    },
    # 2020-01-31 was closed by the Spring Festival extension announced on 2020-01-27: TqSdk keeps the
    # dates fixed with the original schedule (jd/eg: the 4th-last trading day counted with 01-31 open).
    "SHFE.fu2002": "2020-01-31 extension",
    "INE.sc2002": "2020-01-31 extension",
    "DCE.jd2001": "2020-01-31 extension",
    "DCE.eg2001": "2020-01-31 extension",
}


# Delivery months of the products' rules for which TqSdk's file has no contract (all 2016-2018).
MISSING_FROM_TQSDK = {"jd1607", "jd1608", "hc1602", "jm1604", "fu1610", "fu1701", "fu1707", "fu1802"}


def _last_day_by_rule(quote: dict[str, Any]) -> dt.date:
    year, month = quote["delivery_year"], quote["delivery_month"]
    if quote["product_id"] in RULE_ONLY:
        return expiry_date(RULE_ONLY[quote["product_id"]], year, month, HOLIDAYS)
    return last_trading_day(PRODUCTS[quote["product_id"]], year, month, HOLIDAYS)


def _expired_of_covered_products() -> list[dict[str, Any]]:
    assert EXPIRED is not None
    return [q for q in EXPIRED.values() if q["product_id"] in PRODUCTS or q["product_id"] in RULE_ONLY]


def match_rates() -> dict[str, tuple[int, int]]:
    """``product_id -> (matching, expired contracts)`` (also printed by ``python tests/test_products.py``)."""
    rates: dict[str, tuple[int, int]] = {}
    for quote in _expired_of_covered_products():
        tqsdk_day = dt.datetime.fromtimestamp(quote["expire_datetime"], CHINA_TZ).date()
        matched, total = rates.get(quote["product_id"], (0, 0))
        rates[quote["product_id"]] = (matched + (tqsdk_day == _last_day_by_rule(quote)), total + 1)
    return rates


@needs_tqsdk
def test_last_trading_days_match_tqsdks_expired_contracts() -> None:
    mismatches = {}
    for quote in _expired_of_covered_products():
        expire = dt.datetime.fromtimestamp(quote["expire_datetime"], CHINA_TZ)
        assert expire.time() == dt.time(15, 0)
        if expire.date() != _last_day_by_rule(quote):
            mismatches[quote["instrument_id"]] = (str(expire.date()), str(_last_day_by_rule(quote)))
    assert set(mismatches) == set(KNOWN_MISMATCHES), mismatches
    rates = match_rates()
    assert (set(PRODUCTS) | set(RULE_ONLY)) - set(rates) == {"IM"}  # CFFEX listed IM in 2022
    assert sum(total for _, total in rates.values()) > 1300


@needs_tqsdk
def test_expired_contract_names_and_months_follow_the_templates() -> None:
    by_product: dict[str, list[tuple[int, int]]] = {}
    latest_by_product: dict[str, dict[str, Any]] = {}
    for quote in _expired_of_covered_products():
        if quote["product_id"] not in PRODUCTS:
            continue
        template = PRODUCTS[quote["product_id"]]
        year, month = quote["delivery_year"], quote["delivery_month"]
        assert f"{template.exchange_id}.{contract_name(template, year, month)}" == quote["instrument_id"]
        by_product.setdefault(template.product_id, []).append((year, month))
        latest = latest_by_product.setdefault(template.product_id, quote)
        if quote["expire_datetime"] > latest["expire_datetime"]:
            latest_by_product[template.product_id] = quote
    for product_id, months in by_product.items():
        template = PRODUCTS[product_id]
        first, last = month_index(*min(months)), month_index(*max(months))
        expected = [
            year_month(i)
            for i in range(first, last + 1)
            if template.listing.is_delivery_month(year_month(i)[1])
        ]
        assert set(months) <= set(expected), product_id  # no month outside the product's months
        missing = {f"{product_id}{y % 100:02d}{m:02d}" for y, m in set(expected) - set(months)}
        assert missing <= MISSING_FROM_TQSDK, product_id
        # The specification as of the newest expired contract (2020): ticks and multipliers unchanged.
        latest = latest_by_product[product_id]
        assert math.isclose(latest["price_tick"], template.price_tick), product_id
        assert latest["volume_multiple"] == template.volume_multiple, product_id
        assert latest["trading_time"]["day"] == template.trading_time.day, product_id
        assert latest["trading_time"].get("night", []) == template.trading_time.night, product_id


if __name__ == "__main__":
    for product_id, (matched, total) in sorted(match_rates().items()):
        print(f"{product_id:3} {matched:3}/{total:3}")
