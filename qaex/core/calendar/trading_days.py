"""Trading days: the 18:00 roll, stepping over weekends and closures, and days counted within a month.

Every function takes an optional :class:`HolidayCalendar`. Without one (None) only weekends are closed:
that is exactly TqSdk's ``tqsdk.datetime._get_trading_day_from_timestamp``, which the DIFF wire (daily
K-line ``datetime``) follows. With one, listed closures are skipped too.

A trading day starts at 18:00 China time the evening before (the night session): a moment from 18:00 on
belongs to the next trading day, and a Friday evening or a Saturday to Monday's (or, with a calendar,
to the first trading day after the closures).
"""

from __future__ import annotations

import datetime as dt

from qaex.core.calendar.china_time import (
    CHINA_TZ,
    MONDAY_1990,
    MONDAY_1990_NS,
    NS_PER_DAY,
    TRADING_DAY_ROLL_NS,
    china_midnight_ns,
    format_day,
    parse_day,
)
from qaex.core.calendar.holidays import HolidayCalendar

_ONE_DAY = dt.timedelta(days=1)


def is_trading_day(day: dt.date, calendar: HolidayCalendar | None = None) -> bool:
    """A weekday that the calendar (if any) does not list as a closure."""
    return calendar.is_trading_day(day) if calendar is not None else day.weekday() < 5


def roll_forward(day: dt.date, calendar: HolidayCalendar | None = None) -> dt.date:
    """``day`` if it is a trading day, else the first trading day after it."""
    while not is_trading_day(day, calendar):
        day += _ONE_DAY
    return day


def next_trading_date(day: dt.date, calendar: HolidayCalendar | None = None) -> dt.date:
    """The first trading day strictly after ``day``."""
    return roll_forward(day + _ONE_DAY, calendar)


def previous_trading_date(day: dt.date, calendar: HolidayCalendar | None = None) -> dt.date:
    """The last trading day strictly before ``day``."""
    day -= _ONE_DAY
    while not is_trading_day(day, calendar):
        day -= _ONE_DAY
    return day


def trading_days_of_month(year: int, month: int, calendar: HolidayCalendar | None = None) -> list[dt.date]:
    """Every trading day of a calendar month, in order."""
    day = dt.date(year, month, 1)
    days = []
    while day.month == month:
        if is_trading_day(day, calendar):
            days.append(day)
        day += _ONE_DAY
    return days


def nth_trading_day_of_month(
    year: int, month: int, n: int, calendar: HolidayCalendar | None = None
) -> dt.date:
    """The ``n``-th trading day of a month (1 = the first); ``n < 0`` counts from the end (-1 = the last)."""
    days = trading_days_of_month(year, month, calendar)
    if n == 0 or abs(n) > len(days):
        raise ValueError(f"{year}-{month:02d} has {len(days)} trading days; no trading day number {n}")
    return days[n - 1] if n > 0 else days[n]


def has_night_session(day: dt.date, calendar: HolidayCalendar | None = None) -> bool:
    """Whether trading day ``day`` opens with a night session (the evening of the trading day before).

    The exchanges hold none on the evening before a closure: there is no night session for the first
    trading day after a holiday, but there is one across an ordinary weekend (Friday night for Monday).
    """
    previous = previous_trading_date(day, calendar)
    following = previous + _ONE_DAY
    while following.weekday() >= 5:
        following += _ONE_DAY
    return following == day


# -- the 18:00 roll --------------------------------------------------------------------------------
def trading_day_start_ns(ts_ns: int, calendar: HolidayCalendar | None = None) -> int:
    """Local midnight (as epoch ns) of the trading day ``ts_ns`` belongs to.

    Without a calendar this is TqSdk's ``_get_trading_day_from_timestamp`` in integers, to the
    nanosecond: from 18:00 on the next day; Saturday and Sunday roll to Monday.
    """
    days, time_of_day = divmod(ts_ns - MONDAY_1990_NS, NS_PER_DAY)
    if time_of_day >= TRADING_DAY_ROLL_NS:
        days += 1
    weekday = days % 7  # 0 = Monday
    if weekday >= 5:
        days += 7 - weekday
    if calendar is not None:
        return china_midnight_ns(roll_forward(MONDAY_1990 + dt.timedelta(days=days), calendar))
    return MONDAY_1990_NS + days * NS_PER_DAY


def trading_day_of(ts: int, calendar: HolidayCalendar | None = None) -> str:
    """The trading day (``"YYYYMMDD"``) epoch-ns ``ts`` belongs to: from 18:00 China time on, the next
    trading day's; weekends (and, with a calendar, closures) roll on to the next trading day."""
    start = trading_day_start_ns(ts, calendar)
    return format_day(MONDAY_1990 + dt.timedelta(days=(start - MONDAY_1990_NS) // NS_PER_DAY))


def next_trading_day(day: str, calendar: HolidayCalendar | None = None) -> str:
    """The trading day after ``"YYYYMMDD"``, as ``"YYYYMMDD"``."""
    return format_day(next_trading_date(parse_day(day), calendar))


# -- the settlement schedule -----------------------------------------------------------------------
def next_settlement(now_ns: int, at: dt.time, calendar: HolidayCalendar | None = None) -> int:
    """Epoch ns of the first trading-day moment at ``at`` (China time) strictly after ``now_ns``.

    Without a calendar every weekday settles; with one, closures are skipped as well.
    """
    now = dt.datetime.fromtimestamp(now_ns / 1e9, CHINA_TZ)
    candidate = dt.datetime.combine(now.date(), at, tzinfo=CHINA_TZ)
    while candidate <= now or not is_trading_day(candidate.date(), calendar):
        candidate += _ONE_DAY
    return int(candidate.timestamp()) * 1_000_000_000 + candidate.microsecond * 1000
