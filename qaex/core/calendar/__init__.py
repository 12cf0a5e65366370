"""China time and the trading-day calendar: one home for both.

* :mod:`~qaex.core.calendar.china_time`: ``CHINA_TZ`` (UTC+8), ns units, the 18:00 roll constant,
  clock-time and ``YYYYMMDD`` parsing;
* :mod:`~qaex.core.calendar.holidays`: :class:`HolidayCalendar`, the exchanges' weekday closures, and the
  packaged data (``qaex/data/holidays.toml``);
* :mod:`~qaex.core.calendar.trading_days`: trading days (the 18:00 roll, next/previous, n-th of a month,
  night sessions) and the daily settlement schedule;
* :mod:`~qaex.core.calendar.sessions`: whether a contract trades at a moment (``is_open``,
  ``next_open``) and the market-hours policy (``QAEX_MARKET_HOURS``: what is enforced and published).

Pure time arithmetic: no clock is read here (callers pass timestamps), so everything is unit-testable.
See docs/calendar.md.
"""

from __future__ import annotations

from qaex.core.calendar.china_time import (
    CHINA_TZ,
    CST_OFFSET_NS,
    MONDAY_1990_NS,
    NS_PER_DAY,
    NS_PER_SECOND,
    TRADING_DAY_ROLL,
    china_date_of,
    china_epoch_seconds,
    china_midnight_ns,
    format_china_time,
    format_day,
    parse_clock_time,
    parse_day,
)
from qaex.core.calendar.holidays import HolidayCalendar, YearStatus, default_holiday_calendar
from qaex.core.calendar.sessions import (
    ALWAYS_OPEN,
    MARKET_HOURS,
    MarketHours,
    closed_message,
    has_night_on_evening,
    is_open,
    next_open,
    next_opening,
    next_session_start,
    published_trading_time,
)
from qaex.core.calendar.trading_days import (
    has_night_session,
    is_trading_day,
    next_settlement,
    next_trading_date,
    next_trading_day,
    nth_trading_day_of_month,
    previous_trading_date,
    roll_forward,
    trading_day_of,
    trading_day_start_ns,
    trading_days_of_month,
)

__all__ = [
    "ALWAYS_OPEN",
    "CHINA_TZ",
    "CST_OFFSET_NS",
    "MARKET_HOURS",
    "MONDAY_1990_NS",
    "NS_PER_DAY",
    "NS_PER_SECOND",
    "TRADING_DAY_ROLL",
    "HolidayCalendar",
    "MarketHours",
    "YearStatus",
    "china_date_of",
    "china_epoch_seconds",
    "china_midnight_ns",
    "closed_message",
    "default_holiday_calendar",
    "format_china_time",
    "format_day",
    "has_night_on_evening",
    "has_night_session",
    "is_open",
    "is_trading_day",
    "next_open",
    "next_opening",
    "next_session_start",
    "next_settlement",
    "next_trading_date",
    "next_trading_day",
    "nth_trading_day_of_month",
    "parse_clock_time",
    "parse_day",
    "previous_trading_date",
    "published_trading_time",
    "roll_forward",
    "trading_day_of",
    "trading_day_start_ns",
    "trading_days_of_month",
]
