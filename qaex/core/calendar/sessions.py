"""Trading sessions: whether a contract trades at a moment, and the market-hours policy.

A contract's sessions are TqSdk's ``trading_time`` shape (``Instrument.trading_time``): China-time
``[start, end)`` pairs as ``"HH:MM:SS"``, a ``day`` list and a ``night`` list. A night session that
runs past midnight ends at ``"25:00:00"`` / ``"26:30:00"`` (TqSdk's spelling) or, equally, at
``"01:00:00"`` / ``"02:30:00"`` (an end before the start is on the next calendar day).

The rule (docs/calendar.md, "Sessions"):

* the **day sessions** run on every trading day (``calendar``: weekdays that are not closures);
* the **night session** runs on the evening of a trading day ``E`` and belongs to the next trading day;
  it is held only when the first weekday after ``E`` is a trading day. So there is one on an ordinary
  Friday evening (it belongs to Monday and ends early on Saturday), and none on the evening before a
  holiday (the first trading day after a holiday opens with its day session). This is
  :func:`qaex.core.calendar.has_night_session` seen from the evening.

The **policy** (``QAEX_MARKET_HOURS``) decides what the exchange enforces and what it tells clients,
here and nowhere else:

* ``always`` (the default): nothing is enforced, and every contract *publishes* :data:`ALWAYS_OPEN`
  (in DIFF quotes, ins_query answers, the HTTP instrument list), which TqSdk reads as open at every
  minute of every day. The instrument's own sessions stay in its spec and the journal.
* ``exchange``: orders outside a session are refused, and contracts publish their own sessions.

Pure: no clock is read (callers pass epoch-ns timestamps).
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterable, Iterator, Sequence
from typing import Any, Final, Literal, Protocol

from qaex.core.calendar.china_time import CST_OFFSET_NS, NS_PER_DAY, NS_PER_SECOND, format_china_time
from qaex.core.calendar.holidays import HolidayCalendar
from qaex.core.calendar.trading_days import is_trading_day

MarketHours = Literal["always", "exchange"]
MARKET_HOURS: Final[tuple[MarketHours, ...]] = ("always", "exchange")

ALWAYS_OPEN: Final[dict[str, list[list[str]]]] = {
    "day": [["00:00:00", "18:00:00"]],
    "night": [["18:00:00", "72:00:00"]],
}
"""The sessions every contract publishes under ``always``. TqSdk (``tqsdk.datetime._is_in_trading_time``)
counts day spans from the trading day's date and night spans from the previous trading day's date (a
moment from 18:00 belongs to the next trading day; weekends roll to Monday), so ``00:00-18:00`` plus
``18:00-72:00`` of the previous trading day covers every minute, weekends included (Friday 18:00 to
Monday 18:00 is 72 hours)."""

_LOOKAHEAD_DAYS = 400
"""How far :func:`next_open` looks: past the longest closure, a year of a contract with no session."""
_EPOCH = dt.date(1970, 1, 1)
_ONE_DAY = dt.timedelta(days=1)
_NOON = 12 * 3600


class TradingTimeLike(Protocol):
    """``Instrument.trading_time``: ``day`` and ``night`` lists of ``[start, end]`` strings."""

    @property
    def day(self) -> Sequence[Sequence[str]]: ...

    @property
    def night(self) -> Sequence[Sequence[str]]: ...


def published_trading_time(trading_time: TradingTimeLike, market_hours: MarketHours) -> dict[str, Any]:
    """The ``trading_time`` a contract shows its clients under the policy: its own sessions
    (``exchange``), or :data:`ALWAYS_OPEN` (``always``). A fresh dict each time (callers may keep it)."""
    day: Sequence[Sequence[str]]
    night: Sequence[Sequence[str]]
    if market_hours == "always":
        day, night = ALWAYS_OPEN["day"], ALWAYS_OPEN["night"]
    else:
        day, night = trading_time.day, trading_time.night
    return {"day": [list(span) for span in day], "night": [list(span) for span in night]}


# -- parsing -----------------------------------------------------------------------------------------
def _seconds(text: str) -> int:
    try:
        hours, minutes, seconds = (int(part) for part in text.split(":"))
    except ValueError:
        raise ValueError(f"expected a session time as HH:MM:SS, got {text!r}") from None
    return (hours * 60 + minutes) * 60 + seconds


Spans = tuple[tuple[int, int], ...]
"""``[start, end)`` in ns after the China midnight of the calendar day the session is held on."""


@functools.lru_cache(maxsize=256)
def _spans(day: tuple[tuple[str, ...], ...], night: tuple[tuple[str, ...], ...]) -> tuple[Spans, Spans]:
    days = tuple((_seconds(s[0]) * NS_PER_SECOND, _seconds(s[1]) * NS_PER_SECOND) for s in day)
    nights = []
    for span in night:
        start, end = _seconds(span[0]), _seconds(span[1])
        if start < _NOON:  # a night span that starts after midnight ("00:00:00"-"02:30:00")
            start += 86_400
        while end <= start:  # "02:30:00" after a 21:00 start: the next calendar day
            end += 86_400
        nights.append((start * NS_PER_SECOND, end * NS_PER_SECOND))
    return days, tuple(nights)


def _parsed(trading_time: TradingTimeLike) -> tuple[Spans, Spans]:
    return _spans(
        tuple(tuple(span) for span in trading_time.day), tuple(tuple(span) for span in trading_time.night)
    )


# -- the rule ----------------------------------------------------------------------------------------
def has_night_on_evening(day: dt.date, calendar: HolidayCalendar | None = None) -> bool:
    """Whether the evening of calendar date ``day`` holds a night session: ``day`` is a trading day and
    so is the first weekday after it (no night session before a holiday; Friday's, for Monday, exists)."""
    if not is_trading_day(day, calendar):
        return False
    following = day + _ONE_DAY
    while following.weekday() >= 5:
        following += _ONE_DAY
    return is_trading_day(following, calendar)


def _windows(
    day: dt.date, midnight: int, spans: tuple[Spans, Spans], calendar: HolidayCalendar | None
) -> Iterator[tuple[int, int]]:
    """The sessions held on calendar date ``day`` (its night session may end on a later date)."""
    days, nights = spans
    if days and is_trading_day(day, calendar):
        for start, end in days:
            yield midnight + start, midnight + end
    if nights and has_night_on_evening(day, calendar):
        for start, end in nights:
            yield midnight + start, midnight + end


def _china_day(ts_ns: int) -> tuple[dt.date, int]:
    """The China calendar date of ``ts_ns`` and the epoch ns of its midnight."""
    days = (ts_ns + CST_OFFSET_NS) // NS_PER_DAY
    return _EPOCH + dt.timedelta(days=days), days * NS_PER_DAY - CST_OFFSET_NS


def _reach_days(spans: tuple[Spans, Spans]) -> int:
    """How many calendar days back a session can start and still be running (night spans past 24:00)."""
    longest = max((end for _, end in spans[1]), default=0)
    return int(longest // NS_PER_DAY) + 1


def is_open(trading_time: TradingTimeLike, ts_ns: int, calendar: HolidayCalendar | None = None) -> bool:
    """Whether a contract with these sessions trades at ``ts_ns`` (epoch ns; sessions in China time).

    ``calendar``: the closures (None: weekends only). A session is ``[start, end)``: open at its start,
    closed at its end.
    """
    spans = _parsed(trading_time)
    day, midnight = _china_day(ts_ns)
    for back in range(_reach_days(spans) + 1):
        for start, end in _windows(day - back * _ONE_DAY, midnight - back * NS_PER_DAY, spans, calendar):
            if start <= ts_ns < end:
                return True
    return False


def _first_window(
    trading_time: TradingTimeLike, ts_ns: int, calendar: HolidayCalendar | None, *, strictly_after: bool
) -> int:
    spans = _parsed(trading_time)
    day, midnight = _china_day(ts_ns)
    back = _reach_days(spans)
    day, midnight = day - back * _ONE_DAY, midnight - back * NS_PER_DAY
    best: int | None = None
    for _ in range(_LOOKAHEAD_DAYS + back):
        for start, end in _windows(day, midnight, spans, calendar):
            if strictly_after:
                candidate = start if start > ts_ns else None
            else:
                candidate = max(start, ts_ns) if end > ts_ns else None
            if candidate is not None and (best is None or candidate < best):
                best = candidate
        day, midnight = day + _ONE_DAY, midnight + NS_PER_DAY
        if best is not None and best < midnight:  # every later date's sessions start after its midnight
            return best
    raise ValueError(f"no trading session within {_LOOKAHEAD_DAYS} days")


def next_open(trading_time: TradingTimeLike, ts_ns: int, calendar: HolidayCalendar | None = None) -> int:
    """The first moment at or after ``ts_ns`` at which :func:`is_open` is true: ``ts_ns`` itself while
    open, else the start of the next session. ValueError if there is none within 400 days (a contract
    with no sessions)."""
    return _first_window(trading_time, ts_ns, calendar, strictly_after=False)


def next_session_start(
    trading_time: TradingTimeLike, ts_ns: int, calendar: HolidayCalendar | None = None
) -> int:
    """The start of the first session that starts strictly after ``ts_ns`` (when quotes are restamped,
    so that clients see the market open). ValueError as :func:`next_open`."""
    return _first_window(trading_time, ts_ns, calendar, strictly_after=True)


def closed_message(
    symbol: str, trading_time: TradingTimeLike, ts_ns: int, calendar: HolidayCalendar | None = None
) -> str | None:
    """None while ``symbol`` trades at ``ts_ns``; else the refusal's text (``market_closed``), with when
    it opens next."""
    if is_open(trading_time, ts_ns, calendar):
        return None
    try:
        when = f", 下一交易时段 {format_china_time(next_open(trading_time, ts_ns, calendar))} 开始"
    except ValueError:
        when = ", 该合约没有交易时段"
    return f"下单失败, 合约 {symbol} 不在交易时间{when}"


def next_opening(
    contracts: Iterable[tuple[str, TradingTimeLike]], ts_ns: int, calendar: HolidayCalendar | None = None
) -> tuple[int, list[str]] | None:
    """The first session start strictly after ``ts_ns`` over ``(symbol, trading_time)`` pairs, and the
    symbols whose session starts then; None when none of them has a session."""
    first: int | None = None
    symbols: list[str] = []
    for symbol, trading_time in contracts:
        try:
            start = next_session_start(trading_time, ts_ns, calendar)
        except ValueError:
            continue
        if first is None or start < first:
            first, symbols = start, [symbol]
        elif start == first:
            symbols.append(symbol)
    return None if first is None else (first, symbols)
