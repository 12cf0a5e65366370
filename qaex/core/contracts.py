"""A product's contracts: their names, their last trading days, and which are listed on a given day.

Pure functions of a :class:`~qaex.core.products.ProductTemplate`, a date and an optional
:class:`~qaex.core.calendar.HolidayCalendar` (None: weekends only). A contract is listed on a day when
its delivery month is in the product's listing window and its last trading day is that day or later; a
new contract appears the trading day after the one before it expired. On a closed day the answer is the
same as on the next trading day.
"""

from __future__ import annotations

import datetime as dt
from typing import NamedTuple

from qaex.core.calendar import HolidayCalendar, china_epoch_seconds
from qaex.core.contract_rules import expiry_date, month_index, year_month
from qaex.core.instruments import Instrument, TradingTime
from qaex.core.products import ProductTemplate

EXPIRE_TIME = dt.time(15, 0)
"""TqSdk's ``expire_datetime`` is 15:00 China time on the last trading day."""

_FRONT_SEARCH_MONTHS = 24  # a product has a delivery month this close: every rule lists one a quarter


class ListedContract(NamedTuple):
    instrument_id: str  # rb2701, TA701, IF2612
    symbol: str  # SHFE.rb2701
    delivery_year: int
    delivery_month: int
    last_trading_day: dt.date


def contract_name(product: ProductTemplate, year: int, month: int) -> str:
    """The instrument id delivering in ``year``-``month``: product id + YYMM (``rb2701``, ``IF2612``),
    on CZCE product id + the year's last digit + MM (``TA701`` = January 2027)."""
    if product.exchange_id == "CZCE":
        return f"{product.product_id}{year % 10}{month:02d}"
    return f"{product.product_id}{year % 100:02d}{month:02d}"


def last_trading_day(
    product: ProductTemplate, year: int, month: int, calendar: HolidayCalendar | None = None
) -> dt.date:
    """The last trading day of the product's contract delivering in ``year``-``month``."""
    return expiry_date(product.expiry_rule(year, month), year, month, calendar)


def front_month(product: ProductTemplate, day: dt.date, calendar: HolidayCalendar | None = None) -> int:
    """The month index (``year * 12 + month - 1``) of the nearest delivery month still trading on ``day``."""
    start = month_index(day.year, day.month)
    for index in range(start, start + _FRONT_SEARCH_MONTHS):
        year, month = year_month(index)
        if not product.listing.is_delivery_month(month):
            continue
        if last_trading_day(product, year, month, calendar) >= day:
            return index
    raise ValueError(f"{product.key}: no delivery month within {_FRONT_SEARCH_MONTHS} months of {day}")


def listed_contracts(
    product: ProductTemplate, trading_day: dt.date, calendar: HolidayCalendar | None = None
) -> list[ListedContract]:
    """The product's contracts trading on ``trading_day``, nearest delivery first."""
    listed = []
    for index in product.listing.listed(front_month(product, trading_day, calendar)):
        year, month = year_month(index)
        name = contract_name(product, year, month)
        last = last_trading_day(product, year, month, calendar)
        listed.append(ListedContract(name, f"{product.exchange_id}.{name}", year, month, last))
    return listed


def expire_datetime(last_day: dt.date) -> float:
    """A quote's ``expire_datetime`` (epoch seconds) for a contract whose last trading day is ``last_day``."""
    return china_epoch_seconds(last_day, EXPIRE_TIME)


def instrument_for(
    product: ProductTemplate, contract: ListedContract, *, pre_settlement: float | None = None
) -> Instrument:
    """An :class:`Instrument` for one listed contract of the product, priced at ``pre_settlement`` (by
    default the product's reference price)."""
    return Instrument(
        exchange_id=product.exchange_id,
        instrument_id=contract.instrument_id,
        product_id=product.product_id,
        instrument_name=product.name + contract.instrument_id[len(product.product_id) :],
        price_tick=product.price_tick,
        volume_multiple=product.volume_multiple,
        margin_ratio_long=product.margin_ratio,
        margin_ratio_short=product.margin_ratio,
        open_commission_per_lot=product.open_commission_per_lot,
        open_commission_rate=product.open_commission_rate,
        close_commission_per_lot=product.close_commission_per_lot,
        close_commission_rate=product.close_commission_rate,
        close_today_commission_per_lot=product.close_today_commission_per_lot,
        close_today_commission_rate=product.close_today_commission_rate,
        pre_settlement=product.reference_price if pre_settlement is None else pre_settlement,
        pre_open_interest=product.reference_open_interest,
        limit_ratio=product.limit_ratio,
        max_limit_order_volume=product.max_limit_order_volume,
        max_market_order_volume=product.max_market_order_volume,
        trading_time=TradingTime(
            day=[list(pair) for pair in product.trading_time.day],
            night=[list(pair) for pair in product.trading_time.night],
        ),
        expire_datetime=expire_datetime(contract.last_trading_day),
        settlement_rule=product.settlement_rule,
        settlement_window=product.settlement_window,
    )
