"""China time: the clock of the Chinese futures exchanges, and the units the core counts it in.

China Standard Time is UTC+8 all year (no daylight saving), so a fixed offset is exact and a local date
or time of day is integer arithmetic on epoch nanoseconds. Nothing here reads a clock.
"""

from __future__ import annotations

import datetime as dt

CHINA_TZ = dt.timezone(dt.timedelta(hours=8))

NS_PER_SECOND = 1_000_000_000
NS_PER_DAY = 86_400 * NS_PER_SECOND
CST_OFFSET_NS = 8 * 3600 * NS_PER_SECOND
"""China time minus UTC, in nanoseconds."""

MONDAY_1990_NS = 631_123_200 * NS_PER_SECOND
"""1990-01-01 00:00 China time, a Monday: TqSdk's ``begin_mark``, from which its trading days are counted."""
MONDAY_1990 = dt.date(1990, 1, 1)

TRADING_DAY_ROLL = dt.time(18, 0)
"""From this China-time clock time on, a moment belongs to the next trading day (the night session)."""
TRADING_DAY_ROLL_NS = 18 * 3600 * NS_PER_SECOND


def parse_clock_time(text: str) -> dt.time:
    """``"15:30"`` -> 15:30; raises ValueError with the text for anything else."""
    try:
        hours, minutes = (int(part) for part in text.split(":"))
        return dt.time(hours, minutes)
    except ValueError:
        raise ValueError(f"expected HH:MM (China time), got {text!r}") from None


def china_date_of(ts_ns: int) -> dt.date:
    """The China-time calendar date of an epoch-ns moment."""
    return MONDAY_1990 + dt.timedelta(days=(ts_ns - MONDAY_1990_NS) // NS_PER_DAY)


def china_midnight_ns(day: dt.date) -> int:
    """Epoch ns of 00:00 China time on ``day``."""
    return MONDAY_1990_NS + (day - MONDAY_1990).days * NS_PER_DAY


def china_epoch_seconds(day: dt.date, at: dt.time) -> float:
    """Epoch seconds of ``at`` (China time) on ``day``, the unit of TqSdk's ``expire_datetime``."""
    return dt.datetime.combine(day, at, tzinfo=CHINA_TZ).timestamp()


def format_china_time(ts_ns: int) -> str:
    """Epoch ns as China time to the second, ``"2026-12-07 09:00:00"`` (for messages)."""
    days, rest = divmod(ts_ns + CST_OFFSET_NS, NS_PER_DAY)
    seconds = rest // NS_PER_SECOND
    day = dt.date(1970, 1, 1) + dt.timedelta(days=days)
    return f"{day.isoformat()} {seconds // 3600:02d}:{seconds // 60 % 60:02d}:{seconds % 60:02d}"


def parse_day(text: str) -> dt.date:
    """``"20261202"`` (how the engine and DIFF spell a trading day) -> 2026-12-02."""
    try:
        return dt.datetime.strptime(text, "%Y%m%d").date()
    except ValueError:
        raise ValueError(f"expected a day as YYYYMMDD, got {text!r}") from None


def format_day(day: dt.date) -> str:
    """2026-12-02 -> ``"20261202"``."""
    return day.strftime("%Y%m%d")
