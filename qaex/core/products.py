"""Product templates: what every contract of a product shares, and the rules that list and expire them.

A :class:`ProductTemplate` carries a product's contract specification (tick, multiplier, margin, fees,
daily limit, order-size bounds, trading sessions), its listing and last-trading-day rules
(:mod:`qaex.core.contract_rules`) and a reference price (a plausible late-2026 level, for seeding a
market). :mod:`qaex.core.contracts` turns a template and a day into the contracts listed that day.

Figures already in :func:`qaex.core.instruments.default_instruments` (cu, au, rb, sc, m, i, SR, TA, IF)
are the same here (``tests/test_products.py`` checks); the others are typical exchange figures.
Sessions are TqSdk's ``trading_time`` shape: China-time ``[start, end]`` pairs, a night session that
runs past midnight ending at ``25:00:00`` (01:00) or ``26:30:00`` (02:30).
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Literal

import msgspec

from qaex.core.contract_rules import (
    EVEN_MONTHS,
    ODD_MONTHS,
    QUARTER_MONTHS,
    CalendarDay,
    ExpiryRule,
    FormerExpiry,
    ListingRule,
    NearAndCycle,
    NthTradingDay,
    NthWeekday,
    Rolling,
)
from qaex.core.instruments import TradingTime

DAY_COMMODITY = (("09:00:00", "10:15:00"), ("10:30:00", "11:30:00"), ("13:30:00", "15:00:00"))
DAY_CFFEX_INDEX = (("09:30:00", "11:30:00"), ("13:00:00", "15:00:00"))
DAY_CFFEX_TREASURY = (("09:30:00", "11:30:00"), ("13:00:00", "15:15:00"))


def sessions(day: tuple[tuple[str, str], ...], night_end: str | None = None) -> TradingTime:
    """A TradingTime with these day sessions and, if ``night_end`` is given, a 21:00 night session."""
    night = [["21:00:00", night_end]] if night_end else []
    return TradingTime(day=[list(pair) for pair in day], night=night)


class ProductTemplate(msgspec.Struct, frozen=True, kw_only=True, forbid_unknown_fields=True):
    """One product (``SHFE.rb``): the specification all its contracts share, and their rules."""

    exchange_id: str
    product_id: str  # as the exchange spells it: lower case on SHFE/INE/DCE, upper case on CZCE/CFFEX
    name: str  # the contract's instrument_name is this plus the instrument id's digits: 螺纹钢2701
    price_tick: float
    volume_multiple: int
    margin_ratio: float  # long and short alike
    open_commission_per_lot: float = 0.0
    open_commission_rate: float = 0.0
    close_commission_per_lot: float = 0.0
    close_commission_rate: float = 0.0
    close_today_commission_per_lot: float = 0.0
    close_today_commission_rate: float = 0.0
    limit_ratio: float
    max_limit_order_volume: int = 500
    max_market_order_volume: int = 100
    trading_time: TradingTime
    listing: ListingRule
    expiry: ExpiryRule
    former_expiries: tuple[FormerExpiry, ...] = ()  # oldest first
    main_months: tuple[int, ...] = ()
    """The delivery months the product's trading concentrates in (rb: 1, 5, 10): at a fresh start the
    nearest of them more than ``main_roll_days`` from its last trading day opens with the most open
    interest, so the main contract (KQ.m@) is where the real market's is; () : any month."""
    main_roll_days: int = 45
    settlement_rule: Literal["vwap", "last"] = "vwap"  # Instrument.settlement_rule
    settlement_window: int = 0  # Instrument.settlement_window: seconds (CFFEX: the last hour)
    reference_price: float
    reference_open_interest: int = 0

    @property
    def key(self) -> str:
        """``EXCHANGE.product``, as TqSdk's ``KQ.m@SHFE.rb`` names a product."""
        return f"{self.exchange_id}.{self.product_id}"

    def expiry_rule(self, year: int, month: int) -> ExpiryRule:
        """The last-trading-day rule that applies to the contract delivering in ``year``-``month``."""
        delivery = year * 100 + month
        for former in self.former_expiries:
            if delivery <= former.until:
                return former.rule
        return self.expiry


SHFE_15TH = CalendarDay(day=15)
LAST_DAY_OF_MONTH_BEFORE = NthTradingDay(n=-1, month_offset=-1)
TENTH_TRADING_DAY = NthTradingDay(n=10)
FOURTH_LAST_TRADING_DAY = NthTradingDay(n=-4)
THIRD_FRIDAY = NthWeekday(n=3, weekday=4)
SECOND_FRIDAY = NthWeekday(n=2, weekday=4)

TWELVE_MONTHS = Rolling()
CFFEX_INDEX_MONTHS = NearAndCycle(near=2, cycle=QUARTER_MONTHS, count=2)

_SHFE_METAL = {"listing": TWELVE_MONTHS, "expiry": SHFE_15TH}
_DCE = {"expiry": TENTH_TRADING_DAY, "max_limit_order_volume": 1000, "main_months": (1, 5, 9)}
_CZCE = {"expiry": TENTH_TRADING_DAY, "max_limit_order_volume": 1000, "main_months": (1, 5, 9)}
_CFFEX_INDEX = {
    "listing": CFFEX_INDEX_MONTHS,
    "expiry": THIRD_FRIDAY,
    "trading_time": sessions(DAY_CFFEX_INDEX),
    "margin_ratio": 0.12,
    "open_commission_rate": 0.000023,
    "close_commission_rate": 0.000023,
    "close_today_commission_rate": 0.00023,
    "limit_ratio": 0.10,
    "max_limit_order_volume": 20,
    "max_market_order_volume": 10,
    "settlement_window": 3600,  # CFFEX settles on the VWAP of the last hour of trading
    "main_roll_days": 5,  # index futures trade in the front month until its last week
}


def _template(**fields: object) -> ProductTemplate:
    return msgspec.convert(fields, ProductTemplate, from_attributes=True)


_TEMPLATES = [
    # -- SHFE ---------------------------------------------------------------------------------------
    _template(**_SHFE_METAL, exchange_id="SHFE", product_id="cu", name="沪铜", price_tick=10.0,
              volume_multiple=5, margin_ratio=0.10, open_commission_rate=0.00005,
              close_commission_rate=0.00005, close_today_commission_rate=0.0001, limit_ratio=0.07,
              trading_time=sessions(DAY_COMMODITY, "25:00:00"), reference_price=86000.0,
              reference_open_interest=180000),
    _template(**_SHFE_METAL, exchange_id="SHFE", product_id="al", name="沪铝", price_tick=5.0,
              volume_multiple=5, margin_ratio=0.10, open_commission_per_lot=3.0,
              close_commission_per_lot=3.0, close_today_commission_per_lot=3.0, limit_ratio=0.07,
              trading_time=sessions(DAY_COMMODITY, "25:00:00"), reference_price=20500.0,
              reference_open_interest=500000),
    _template(**_SHFE_METAL, exchange_id="SHFE", product_id="zn", name="沪锌", price_tick=5.0,
              volume_multiple=5, margin_ratio=0.10, open_commission_per_lot=3.0,
              close_commission_per_lot=3.0, close_today_commission_per_lot=3.0, limit_ratio=0.07,
              trading_time=sessions(DAY_COMMODITY, "25:00:00"), reference_price=23000.0,
              reference_open_interest=220000),
    _template(**_SHFE_METAL, exchange_id="SHFE", product_id="ni", name="沪镍", price_tick=10.0,
              volume_multiple=1, margin_ratio=0.12, open_commission_per_lot=3.0,
              close_commission_per_lot=3.0, close_today_commission_per_lot=3.0, limit_ratio=0.08,
              trading_time=sessions(DAY_COMMODITY, "25:00:00"), reference_price=125000.0,
              reference_open_interest=250000),
    _template(exchange_id="SHFE", product_id="au", name="沪金", price_tick=0.02, volume_multiple=1000,
              margin_ratio=0.14, open_commission_per_lot=10.0, close_commission_per_lot=10.0,
              limit_ratio=0.10, trading_time=sessions(DAY_COMMODITY, "26:30:00"),
              listing=NearAndCycle(near=3, cycle=EVEN_MONTHS, within=13), expiry=SHFE_15TH,
              reference_price=950.0, reference_open_interest=210000),
    _template(**_SHFE_METAL, exchange_id="SHFE", product_id="ag", name="沪银", price_tick=1.0,
              volume_multiple=15, margin_ratio=0.14, open_commission_rate=0.00005,
              close_commission_rate=0.00005, close_today_commission_rate=0.00005, limit_ratio=0.10,
              trading_time=sessions(DAY_COMMODITY, "26:30:00"), reference_price=12000.0,
              reference_open_interest=600000),
    _template(**_SHFE_METAL, exchange_id="SHFE", product_id="rb", name="螺纹钢", price_tick=1.0,
              main_months=(1, 5, 10),
              volume_multiple=10, margin_ratio=0.07, open_commission_rate=0.0001,
              close_commission_rate=0.0001, close_today_commission_rate=0.0001, limit_ratio=0.06,
              max_limit_order_volume=1000, trading_time=sessions(DAY_COMMODITY, "23:00:00"),
              reference_price=3100.0, reference_open_interest=1900000),
    _template(**_SHFE_METAL, exchange_id="SHFE", product_id="hc", name="热轧卷板", price_tick=1.0,
              main_months=(1, 5, 10),
              volume_multiple=10, margin_ratio=0.07, open_commission_rate=0.0001,
              close_commission_rate=0.0001, close_today_commission_rate=0.0001, limit_ratio=0.06,
              max_limit_order_volume=1000, trading_time=sessions(DAY_COMMODITY, "23:00:00"),
              reference_price=3250.0, reference_open_interest=1200000),
    _template(exchange_id="SHFE", product_id="ru", name="天然橡胶", price_tick=5.0, volume_multiple=10,
              margin_ratio=0.08, open_commission_per_lot=3.0, close_commission_per_lot=3.0,
              close_today_commission_per_lot=3.0, limit_ratio=0.07,
              trading_time=sessions(DAY_COMMODITY, "23:00:00"),
              listing=Rolling(months=(1, 3, 4, 5, 6, 7, 8, 9, 10, 11)), expiry=SHFE_15TH,
              reference_price=15500.0, reference_open_interest=150000),
    _template(exchange_id="SHFE", product_id="fu", name="燃料油", price_tick=1.0, volume_multiple=10,
              margin_ratio=0.10, open_commission_rate=0.00005, close_commission_rate=0.00005,
              close_today_commission_rate=0.00005, limit_ratio=0.08,
              trading_time=sessions(DAY_COMMODITY, "23:00:00"), listing=TWELVE_MONTHS,
              expiry=LAST_DAY_OF_MONTH_BEFORE, reference_price=2900.0, reference_open_interest=400000),
    # -- INE ----------------------------------------------------------------------------------------
    _template(exchange_id="INE", product_id="sc", name="原油", price_tick=0.1, volume_multiple=1000,
              margin_ratio=0.12, open_commission_per_lot=20.0, close_commission_per_lot=20.0,
              limit_ratio=0.08, trading_time=sessions(DAY_COMMODITY, "26:30:00"),
              listing=NearAndCycle(near=12, cycle=QUARTER_MONTHS, count=8),
              expiry=LAST_DAY_OF_MONTH_BEFORE, reference_price=480.0, reference_open_interest=30000),
    # -- DCE ----------------------------------------------------------------------------------------
    _template(**_DCE, exchange_id="DCE", product_id="m", name="豆粕", price_tick=1.0, volume_multiple=10,
              margin_ratio=0.07, open_commission_per_lot=1.5, close_commission_per_lot=1.5,
              close_today_commission_per_lot=1.5, limit_ratio=0.06,
              trading_time=sessions(DAY_COMMODITY, "23:00:00"),
              listing=Rolling(months=(1, 3, 5, 7, 8, 9, 11, 12)), reference_price=3000.0,
              reference_open_interest=1500000),
    _template(**_DCE, exchange_id="DCE", product_id="y", name="豆油", price_tick=2.0, volume_multiple=10,
              margin_ratio=0.07, open_commission_per_lot=2.5, close_commission_per_lot=2.5,
              close_today_commission_per_lot=2.5, limit_ratio=0.06,
              trading_time=sessions(DAY_COMMODITY, "23:00:00"),
              listing=Rolling(months=(1, 3, 5, 7, 8, 9, 11, 12)), reference_price=8200.0,
              reference_open_interest=700000),
    _template(**_DCE, exchange_id="DCE", product_id="p", name="棕榈油", price_tick=2.0, volume_multiple=10,
              margin_ratio=0.08, open_commission_per_lot=2.5, close_commission_per_lot=2.5,
              close_today_commission_per_lot=2.5, limit_ratio=0.07,
              trading_time=sessions(DAY_COMMODITY, "23:00:00"), listing=TWELVE_MONTHS,
              reference_price=9000.0, reference_open_interest=500000),
    _template(**_DCE, exchange_id="DCE", product_id="i", name="铁矿石", price_tick=0.5, volume_multiple=100,
              margin_ratio=0.11, open_commission_rate=0.0001, close_commission_rate=0.0001,
              close_today_commission_rate=0.0001, limit_ratio=0.08,
              trading_time=sessions(DAY_COMMODITY, "23:00:00"), listing=TWELVE_MONTHS,
              reference_price=780.0, reference_open_interest=600000),
    _template(**_DCE, exchange_id="DCE", product_id="jm", name="焦煤", price_tick=0.5, volume_multiple=60,
              margin_ratio=0.15, open_commission_rate=0.0001, close_commission_rate=0.0001,
              close_today_commission_rate=0.0003, limit_ratio=0.08,
              trading_time=sessions(DAY_COMMODITY, "23:00:00"), listing=TWELVE_MONTHS,
              reference_price=1150.0, reference_open_interest=500000),
    _template(exchange_id="DCE", product_id="jd", name="鸡蛋", price_tick=1.0, volume_multiple=10,
              margin_ratio=0.08, open_commission_rate=0.00015, close_commission_rate=0.00015,
              close_today_commission_rate=0.00015, limit_ratio=0.06, max_limit_order_volume=1000,
              trading_time=sessions(DAY_COMMODITY), listing=TWELVE_MONTHS,
              expiry=FOURTH_LAST_TRADING_DAY,
              former_expiries=(FormerExpiry(until=201702, rule=TENTH_TRADING_DAY),),
              reference_price=3400.0, reference_open_interest=300000),
    _template(exchange_id="DCE", product_id="eg", name="乙二醇", price_tick=1.0, volume_multiple=10,
              margin_ratio=0.08, open_commission_per_lot=3.0, close_commission_per_lot=3.0,
              close_today_commission_per_lot=3.0, limit_ratio=0.06, max_limit_order_volume=1000,
              trading_time=sessions(DAY_COMMODITY, "23:00:00"), listing=TWELVE_MONTHS,
              expiry=FOURTH_LAST_TRADING_DAY, reference_price=4300.0, reference_open_interest=400000),
    # -- CZCE ---------------------------------------------------------------------------------------
    _template(**_CZCE, exchange_id="CZCE", product_id="TA", name="PTA", price_tick=2.0, volume_multiple=5,
              margin_ratio=0.07, open_commission_per_lot=3.0, close_commission_per_lot=3.0,
              limit_ratio=0.06, trading_time=sessions(DAY_COMMODITY, "23:00:00"),
              listing=TWELVE_MONTHS, reference_price=4700.0, reference_open_interest=900000),
    _template(**_CZCE, exchange_id="CZCE", product_id="MA", name="甲醇", price_tick=1.0, volume_multiple=10,
              margin_ratio=0.08, open_commission_per_lot=2.0, close_commission_per_lot=2.0,
              close_today_commission_per_lot=6.0, limit_ratio=0.07,
              trading_time=sessions(DAY_COMMODITY, "23:00:00"), listing=TWELVE_MONTHS,
              reference_price=2400.0, reference_open_interest=900000),
    _template(**_CZCE, exchange_id="CZCE", product_id="SR", name="白糖", price_tick=1.0, volume_multiple=10,
              margin_ratio=0.07, open_commission_per_lot=3.0, close_commission_per_lot=3.0,
              limit_ratio=0.06, trading_time=sessions(DAY_COMMODITY, "23:00:00"),
              listing=Rolling(months=ODD_MONTHS), reference_price=5500.0, reference_open_interest=400000),
    _template(**_CZCE, exchange_id="CZCE", product_id="CF", name="棉花", price_tick=5.0, volume_multiple=5,
              margin_ratio=0.07, open_commission_per_lot=4.3, close_commission_per_lot=4.3,
              limit_ratio=0.06, trading_time=sessions(DAY_COMMODITY, "23:00:00"),
              listing=Rolling(months=ODD_MONTHS), reference_price=14000.0, reference_open_interest=700000),
    # -- CFFEX --------------------------------------------------------------------------------------
    _template(**_CFFEX_INDEX, exchange_id="CFFEX", product_id="IF", name="沪深300股指", price_tick=0.2,
              volume_multiple=300, reference_price=4500.0, reference_open_interest=250000),
    _template(**_CFFEX_INDEX, exchange_id="CFFEX", product_id="IH", name="上证50股指", price_tick=0.2,
              volume_multiple=300, reference_price=3000.0, reference_open_interest=100000),
    _template(**_CFFEX_INDEX, exchange_id="CFFEX", product_id="IC", name="中证500股指", price_tick=0.2,
              volume_multiple=200, reference_price=7000.0, reference_open_interest=250000),
    _template(**_CFFEX_INDEX, exchange_id="CFFEX", product_id="IM", name="中证1000股指", price_tick=0.2,
              volume_multiple=200, reference_price=7300.0, reference_open_interest=300000),
    _template(exchange_id="CFFEX", product_id="T", name="十年期国债", price_tick=0.005,
              volume_multiple=10000, margin_ratio=0.02, open_commission_per_lot=3.0,
              close_commission_per_lot=3.0, limit_ratio=0.02, max_limit_order_volume=50,
              max_market_order_volume=30, trading_time=sessions(DAY_CFFEX_TREASURY),
              settlement_window=3600, main_roll_days=20,
              listing=NearAndCycle(near=0, cycle=QUARTER_MONTHS, count=3), expiry=SECOND_FRIDAY,
              reference_price=108.5, reference_open_interest=200000),
]  # fmt: skip

PRODUCTS: Mapping[str, ProductTemplate] = MappingProxyType({t.product_id: t for t in _TEMPLATES})
"""Every template by product id (``"rb"``, ``"TA"``, ``"IF"``: unique across the exchanges)."""


def product(name: str) -> ProductTemplate:
    """A template by product id (``"rb"``) or by ``EXCHANGE.product`` (``"SHFE.rb"``); KeyError if none."""
    exchange, _, product_id = name.rpartition(".")
    template = PRODUCTS[product_id]
    if exchange and exchange != template.exchange_id:
        raise KeyError(name)
    return template


def products_from_mapping(
    document: Mapping[str, Any], base: Mapping[str, ProductTemplate] = PRODUCTS
) -> dict[str, ProductTemplate]:
    """The products a listing file (``QAEX_PRODUCTS``) asks for: ``[[product]]`` tables, each a whole
    template, or ``product_id`` (and ``exchange_id``) of a built-in one plus the fields to change.

    ``include_builtin = false`` at top level lists only the file's products; by default the built-in
    ones are kept and the file adds or overrides. ValueError names the table that is wrong.
    """
    keep = document.get("include_builtin", True)
    if not isinstance(keep, bool):
        raise ValueError("include_builtin must be true or false")
    products = dict(base) if keep else {}
    tables = document.get("product", [])
    if not isinstance(tables, list):
        raise ValueError("[[product]] must be a list of tables")
    for table in tables:
        if not isinstance(table, dict):
            raise ValueError("each [[product]] must be a table")
        product_id = table.get("product_id")
        known = base.get(product_id) if isinstance(product_id, str) else None
        fields = dict(msgspec.to_builtins(known)) if known is not None else {}
        fields.update(table)
        try:
            template = msgspec.convert(fields, ProductTemplate)
        except msgspec.ValidationError as exc:
            raise ValueError(f"[[product]] {str(product_id)[:32]!r}: {exc}") from None
        products[template.product_id] = template
    if not products:
        raise ValueError("the product file lists no [[product]] and include_builtin is false")
    return products
