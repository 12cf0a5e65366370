"""The rules that say which delivery months of a product are listed and when each contract stops trading.

Rules are small frozen msgspec structs (tagged, so a product file could carry them): an *expiry rule*
turns a delivery month into its last trading day given a :class:`HolidayCalendar`; a *listing rule*
turns the front month (the nearest delivery month still trading) into the delivery months listed
alongside it. Which rule each product follows is in :mod:`qaex.core.products`; docs/calendar.md has the
exchange wording.

A month is handled as an index, ``year * 12 + month - 1``, so month arithmetic is integer arithmetic.
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated

import msgspec

from qaex.core.calendar import (
    HolidayCalendar,
    nth_trading_day_of_month,
    roll_forward,
)

Month = Annotated[int, msgspec.Meta(ge=1, le=12)]
ALL_MONTHS: tuple[int, ...] = tuple(range(1, 13))
ODD_MONTHS: tuple[int, ...] = (1, 3, 5, 7, 9, 11)
EVEN_MONTHS: tuple[int, ...] = (2, 4, 6, 8, 10, 12)
QUARTER_MONTHS: tuple[int, ...] = (3, 6, 9, 12)


def month_index(year: int, month: int) -> int:
    return year * 12 + month - 1


def year_month(index: int) -> tuple[int, int]:
    year, month0 = divmod(index, 12)
    return year, month0 + 1


# -- last trading day ------------------------------------------------------------------------------
class CalendarDay(msgspec.Struct, frozen=True, tag="calendar_day"):
    """A fixed day of the delivery month, or the next trading day when it is closed (SHFE: the 15th)."""

    day: Annotated[int, msgspec.Meta(ge=1, le=28)]


class NthTradingDay(msgspec.Struct, frozen=True, tag="nth_trading_day"):
    """The ``n``-th trading day of the month ``month_offset`` months from delivery; ``n < 0`` counts from
    the end. DCE/CZCE: ``n=10``; CZCE ZC: 5; DCE jd/eg/eb/pg/lh: ``-4``; SHFE fu, INE sc: ``n=-1,
    month_offset=-1`` (the last trading day of the month before delivery)."""

    n: Annotated[int, msgspec.Meta(ge=-23, le=23)]
    month_offset: Annotated[int, msgspec.Meta(ge=-2, le=0)] = 0

    def __post_init__(self) -> None:
        if self.n == 0:
            raise ValueError("NthTradingDay.n counts from 1 (or from -1 at the month's end), not 0")


class NthWeekday(msgspec.Struct, frozen=True, tag="nth_weekday"):
    """The ``n``-th ``weekday`` (0 = Monday, 4 = Friday) of the delivery month, or the next trading day
    when it is closed. CFFEX index futures: the third Friday; treasury futures: the second."""

    n: Annotated[int, msgspec.Meta(ge=1, le=4)]
    weekday: Annotated[int, msgspec.Meta(ge=0, le=4)] = 4


ExpiryRule = CalendarDay | NthTradingDay | NthWeekday


def expiry_date(rule: ExpiryRule, year: int, month: int, calendar: HolidayCalendar | None) -> dt.date:
    """The last trading day of the contract delivering in ``year``-``month`` under ``rule``."""
    if isinstance(rule, CalendarDay):
        return roll_forward(dt.date(year, month, rule.day), calendar)
    if isinstance(rule, NthTradingDay):
        shifted_year, shifted_month = year_month(month_index(year, month) + rule.month_offset)
        return nth_trading_day_of_month(shifted_year, shifted_month, rule.n, calendar)
    first = dt.date(year, month, 1)
    day = first + dt.timedelta(days=(rule.weekday - first.weekday()) % 7 + 7 * (rule.n - 1))
    return roll_forward(day, calendar)


class FormerExpiry(msgspec.Struct, frozen=True):
    """An expiry rule no longer in force: it applied to delivery months up to ``until`` (``YYYYMM``)."""

    until: Annotated[int, msgspec.Meta(ge=199001, le=209912)]
    rule: ExpiryRule


# -- listed months ---------------------------------------------------------------------------------
class Rolling(msgspec.Struct, frozen=True, tag="rolling"):
    """The product's delivery ``months`` that fall within ``window`` consecutive months from the front
    month (most commodities: every month, or the product's own set, within twelve)."""

    months: tuple[Month, ...] = ALL_MONTHS
    window: Annotated[int, msgspec.Meta(ge=1, le=60)] = 12

    def is_delivery_month(self, month: int) -> bool:
        return month in self.months

    def listed(self, front: int) -> list[int]:
        return [index for index in range(front, front + self.window) if year_month(index)[1] in self.months]


class NearAndCycle(msgspec.Struct, frozen=True, tag="near_and_cycle"):
    """``near`` consecutive months from the front month, then months of ``cycle``: the next ``count``
    of them, or (``within``) those inside ``within`` months from the front month.

    SHFE au: 3 near + even months within 13; INE sc: 12 near + the next 8 quarter months; CFFEX index
    futures: 2 near + the next 2 quarter months; CFFEX treasury futures: the 3 nearest quarter months.
    """

    near: Annotated[int, msgspec.Meta(ge=0, le=24)]
    cycle: tuple[Month, ...]
    count: Annotated[int, msgspec.Meta(ge=0, le=24)] = 0
    within: Annotated[int, msgspec.Meta(ge=0, le=60)] = 0

    def __post_init__(self) -> None:
        if (self.count > 0) == (self.within > 0):
            raise ValueError("NearAndCycle takes exactly one of count and within")
        if not self.cycle:
            raise ValueError("NearAndCycle needs a cycle of months")

    def is_delivery_month(self, month: int) -> bool:
        return self.near > 0 or month in self.cycle

    def listed(self, front: int) -> list[int]:
        months = list(range(front, front + self.near))
        if self.within:
            months += [
                index
                for index in range(front + self.near, front + self.within)
                if year_month(index)[1] in self.cycle
            ]
            return months
        index = front + self.near
        while len(months) < self.near + self.count:
            if year_month(index)[1] in self.cycle:
                months.append(index)
            index += 1
        return months


ListingRule = Rolling | NearAndCycle
