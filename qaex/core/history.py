"""Synthetic market history: a contract's past 1-minute and daily bars, from a seed.

Pure (no IO, no clock): :func:`generate` turns a :class:`HistorySpec` (the contract's tick, limit ratio,
sessions and the figures to end on) into a :class:`ContractHistory`; the exchange service keeps the result
under the data directory (:mod:`qaex.exchange.history`) and hands it to the market state
(:meth:`qaex.core.market.MarketState.attach_history`). :func:`to_csv` / :func:`parse_csv` are TqSdk's
``DataDownloader`` K-line CSV format.

The model (docs/market-data.md, "History"):

* **days**: ``days`` trading days (the holiday calendar's) ending with ``spec.last_day``. Each day's log
  return is a product-wide shock (the same for every month of a product: ``seed/product/date``) plus a
  small shock of the contract's own and a carry drift per month to delivery, so months move together and
  spreads stay sane. The daily volatility is a quarter of the product's limit ratio; the opening gap is
  its own shock (overnight gaps at every day's first session).
* **minutes**: on the last days (``spec.minute_bars`` bars, sessions only: the product's
  ``trading_time``, a night session on the evening of the previous trading day when the calendar holds
  one), a Brownian bridge from the day's open to its close, with U-shaped volume (busy at the open and
  the close of the day).
* **anchoring**: the whole path is scaled so that the last day's settlement (the VWAP of its minute bars,
  rounded to the tick) is ``spec.settlement`` — today's ``pre_settlement`` — and the last day is then
  bent so that its last close is ``spec.close`` (today's ``pre_close``). Open interest walks back from
  ``spec.open_interest`` (today's ``pre_open_interest``).
* **rules**: every price on the tick grid and inside its day's limits (``settlement of the day before ×
  (1 ± limit ratio)``, rounded inwards), ``high >= max(open, close)``, ``low <= min(open, close)``,
  volume >= 0. Each day's settlement is the VWAP of its minute bars where it has them (else of its
  daily bar, ``(high + low + 2 close) / 4``); :attr:`ContractHistory.settlements` keeps them.

Deterministic: every random draw comes from a ``random.Random`` seeded with a string naming the seed,
the product or contract, and the trading day, so a contract's history depends only on its spec and the
seed, never on which other contracts were built first.
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import random
from array import array
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from qaex.core.calendar import (
    HolidayCalendar,
    china_midnight_ns,
    has_night_session,
    previous_trading_date,
)

if TYPE_CHECKING:
    from qaex.core.tick_file import TickColumns

NS_PER_MINUTE = 60_000_000_000
DEFAULT_DAYS = 250
"""Trading days of daily bars per contract."""
MAIN_MINUTE_BARS = 10_000
"""1-minute bars of a product's main contract: TqSdk's ``get_kline_serial(sym, 60, 10000)`` is full."""
OTHER_MINUTE_BARS = 1_200
"""1-minute bars of every other month."""
CARRY_PER_DAY = 0.00002
"""Log drift per trading day and month to delivery (contango): later months drift up a little more."""

BAR_FIELDS = ("open", "high", "low", "close", "volume", "open_oi", "close_oi")
"""A K-line's fields after ``datetime``, in TqSdk DataDownloader's column order."""


class BarColumns:
    """Bars as columns (``array``): 64 bytes a bar, against ~500 for a dict per bar."""

    __slots__ = ("close", "close_oi", "datetime", "high", "low", "open", "open_oi", "volume")

    def __init__(self) -> None:
        self.datetime = array("q")
        self.open = array("d")
        self.high = array("d")
        self.low = array("d")
        self.close = array("d")
        self.volume = array("q")
        self.open_oi = array("q")
        self.close_oi = array("q")

    def __len__(self) -> int:
        return len(self.datetime)

    def append(
        self,
        datetime: int,
        open: float,
        high: float,
        low: float,
        close: float,
        volume: int,
        open_oi: int,
        close_oi: int,
    ) -> None:
        self.datetime.append(datetime)
        self.open.append(open)
        self.high.append(high)
        self.low.append(low)
        self.close.append(close)
        self.volume.append(volume)
        self.open_oi.append(open_oi)
        self.close_oi.append(close_oi)

    def bar(self, index: int) -> dict[str, Any]:
        """Bar ``index`` as the wire dict K-line series hold."""
        return {
            "datetime": self.datetime[index],
            "open": self.open[index],
            "high": self.high[index],
            "low": self.low[index],
            "close": self.close[index],
            "volume": self.volume[index],
            "open_oi": self.open_oi[index],
            "close_oi": self.close_oi[index],
        }

    def bars(self) -> Iterable[dict[str, Any]]:
        return (self.bar(index) for index in range(len(self)))

    def tail(self, count: int) -> BarColumns:
        """The newest ``count`` bars (a copy)."""
        return self.slice(max(0, len(self) - count), len(self))

    def slice(self, start: int, end: int) -> BarColumns:
        """Bars ``start .. end - 1`` (a copy)."""
        out = BarColumns()
        for name in self.__slots__:
            getattr(out, name).extend(getattr(self, name)[start:end])
        return out

    def nbytes(self) -> int:
        return sum(getattr(self, name).itemsize * len(self) for name in self.__slots__)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BarColumns):
            return NotImplemented
        return all(getattr(self, name) == getattr(other, name) for name in self.__slots__)

    __hash__ = None  # type: ignore[assignment]


@dataclass(frozen=True, slots=True)
class HistorySpec:
    """What a contract's history ends on and is shaped by (see the module docstring)."""

    symbol: str  # SHFE.rb2701
    product: str  # SHFE.rb: months of one product share their shocks
    price_tick: float
    limit_ratio: float
    day_sessions: tuple[tuple[str, str], ...]
    night_sessions: tuple[tuple[str, str], ...]
    settlement: float  # the last day's settlement: today's pre_settlement
    close: float  # the last day's close: today's pre_close
    open_interest: int  # the last day's closing open interest: today's pre_open_interest
    last_day: dt.date  # the last trading day of the history (the one before today's)
    minute_bars: int = OTHER_MINUTE_BARS
    days: int = DEFAULT_DAYS
    months_out: int = 0  # months from the product's nearest month: the carry


@dataclass(slots=True)
class ContractHistory:
    symbol: str
    minutes: BarColumns
    days: BarColumns
    settlements: list[float]  # one per daily bar
    limits: list[tuple[float, float]]  # (lower, upper) per daily bar, from the settlement before
    ticks: TickColumns | None = None  # imported ticks (qaex.core.tick_file), before the live ticks
    others: dict[int, BarColumns] = field(default_factory=dict)  # imported bars of other durations (s)

    def nbytes(self) -> int:
        return (
            self.minutes.nbytes()
            + self.days.nbytes()
            + (self.ticks.nbytes() if self.ticks is not None else 0)
            + sum(bars.nbytes() for bars in self.others.values())
        )


def price_decimals(tick: float) -> int:
    """Decimals of a price tick (0.02 -> 2, 5 -> 0)."""
    text = f"{tick:.10f}".rstrip("0")
    return len(text.split(".")[1]) if "." in text else 0


def trading_days_back(last_day: dt.date, count: int, calendar: HolidayCalendar | None) -> list[dt.date]:
    """``count`` trading days ending with ``last_day``, oldest first."""
    days = [last_day]
    while len(days) < count:
        days.append(previous_trading_date(days[-1], calendar))
    days.reverse()
    return days


def session_minutes(
    day: dt.date,
    day_sessions: Sequence[tuple[str, str]],
    night_sessions: Sequence[tuple[str, str]],
    calendar: HolidayCalendar | None,
) -> list[int]:
    """Epoch ns of every minute bar of trading day ``day``: its night session (on the evening of the
    previous trading day, when the calendar holds one) then its day sessions."""
    minutes: list[int] = []
    if night_sessions and has_night_session(day, calendar):
        evening = china_midnight_ns(previous_trading_date(day, calendar))
        for start, end in night_sessions:
            minutes.extend(_span(evening, start, end))
    midnight = china_midnight_ns(day)
    for start, end in day_sessions:
        minutes.extend(_span(midnight, start, end))
    return minutes


def _seconds(text: str) -> int:
    hours, minutes, seconds = (int(part) for part in text.split(":"))
    return hours * 3600 + minutes * 60 + seconds


def _span(midnight_ns: int, start: str, end: str) -> range:
    first, last = _seconds(start), _seconds(end)
    if last <= first:  # "01:00:00" after "21:00:00": the next calendar day
        last += 86400
    return range(midnight_ns + first * 1_000_000_000, midnight_ns + last * 1_000_000_000, NS_PER_MINUTE)


def _rng(*parts: object) -> random.Random:
    return random.Random("/".join(str(part) for part in parts))


@dataclass(slots=True)
class _Day:
    date: dt.date
    open: float
    close: float
    high: float
    low: float
    volume: int
    oi_start: int
    oi_end: int
    minutes: list[int]  # bar starts (only on the days with minute bars)
    path: list[float]  # the minute closes (same length)
    vols: list[int]


def generate(spec: HistorySpec, seed: int, calendar: HolidayCalendar | None = None) -> ContractHistory:
    """The contract's history (see the module docstring). Deterministic per ``(spec, seed)``."""
    sigma = min(max(spec.limit_ratio / 4.0, 0.004), 0.03)
    dates = trading_days_back(spec.last_day, spec.days, calendar)
    # Which days get minute bars: the newest ones until minute_bars is covered.
    minute_days: dict[dt.date, list[int]] = {}
    total = 0
    for date in reversed(dates):
        if total >= spec.minute_bars:
            break
        minutes = session_minutes(date, spec.day_sessions, spec.night_sessions, calendar)
        minute_days[date] = minutes
        total += len(minutes)
    own = _rng(seed, spec.symbol, "own")
    # Open interest, walking back from the figure to end on.
    oi_end = [0] * len(dates)
    oi = max(spec.open_interest, 0)
    for index in range(len(dates) - 1, -1, -1):
        oi_end[index] = oi
        oi = max(0, round(oi * math.exp(own.gauss(0.0, 0.015))))
    base_volume = max(spec.open_interest, 2000) * 0.6
    carry = CARRY_PER_DAY * spec.months_out
    # The walk, in log price, from 0 (scaled to the anchor below).
    days: list[_Day] = []
    log_close = 0.0
    for index, date in enumerate(dates):
        shared = _rng(seed, spec.product, date.isoformat())
        day_shock = shared.gauss(0.0, sigma)
        gap = shared.gauss(0.0, sigma * 0.25)
        day_shock = max(-2.5 * sigma, min(2.5 * sigma, day_shock))
        log_open = log_close + gap
        log_close = log_close + day_shock + own.gauss(0.0, sigma * 0.1) + carry
        volume = max(1, round(base_volume * math.exp(shared.gauss(0.0, 0.3))))
        oi_start = oi_end[index - 1] if index else oi_end[0]
        minutes = minute_days.get(date, [])
        path: list[float] = []
        vols: list[int] = []
        if minutes:
            count = len(minutes)
            walk = [0.0]
            step = sigma / math.sqrt(count)
            gauss = shared.gauss
            for _ in range(count):
                walk.append(walk[-1] + gauss(0.0, step))
            end = walk[-1]
            uniform = shared.random
            weights = [
                (0.5 + 3.0 * (2 * (i + 0.5) / count - 1) ** 2) * (0.55 + 0.9 * uniform())
                for i in range(count)
            ]
            scale = volume / sum(weights)
            for i in range(1, count + 1):
                t = i / count
                path.append(math.exp(log_open + (log_close - log_open) * t + walk[i] - t * end))
                vols.append(max(0, round(weights[i - 1] * scale)))
            high, low = max(path), min(path)
        else:
            spread = abs(shared.gauss(0.0, sigma * 0.5))
            high = math.exp(max(log_open, log_close) + spread * own.random())
            low = math.exp(min(log_open, log_close) - spread * own.random())
        days.append(
            _Day(
                date,
                math.exp(log_open),
                math.exp(log_close),
                high,
                low,
                volume,
                oi_start,
                oi_end[index],
                minutes,
                path,
                vols,
            )
        )
    return _anchor_and_round(spec, days, own)


def _anchor_and_round(spec: HistorySpec, days: list[_Day], own: random.Random) -> ContractHistory:
    tick = spec.price_tick
    decs = price_decimals(tick)

    def px(count: int) -> float:
        return round(count * tick, decs)

    last = days[-1]
    if last.path:
        vwap = sum(p * v for p, v in zip(last.path, last.vols, strict=True)) / max(sum(last.vols), 1)
    else:
        vwap = (last.high + last.low + 2 * last.close) / 4
    factor = spec.settlement / vwap

    def ticks(price: float) -> int:
        return round(price * factor / tick)

    target_settle = round(spec.settlement / tick)
    target_close = round(spec.close / tick)
    minutes = BarColumns()
    daily = BarColumns()
    settlements: list[float] = []
    limits: list[tuple[float, float]] = []
    previous_settle: int | None = None
    previous_close: int | None = None
    for index, day in enumerate(days):
        if previous_settle is None:
            lower, upper = 1, 1 << 53
        else:
            lower = max(1, math.ceil(previous_settle * (1 - spec.limit_ratio) - 1e-9))
            upper = math.floor(previous_settle * (1 + spec.limit_ratio) + 1e-9)
        is_last = index == len(days) - 1
        if day.path:
            closes = [ticks(p) for p in day.path]
            vols = list(day.vols)
            if is_last:
                closes = _bend(closes, vols, target_close, target_settle)
            closes = [min(upper, max(lower, c)) for c in closes]
            if is_last:
                _fix_vwap(closes, vols, target_settle, lower, upper)
            open_ticks = min(upper, max(lower, ticks(day.open)))
            count = len(closes)
            oi_start, oi_end = day.oi_start, day.oi_end
            previous = open_ticks
            wiggle = max(1, round(abs(closes[-1] - open_ticks) / max(count, 1) ** 0.5))
            day_high, day_low = open_ticks, open_ticks
            oi_before = oi_start
            for i, close in enumerate(closes):
                bar_open = previous
                high = min(upper, max(bar_open, close) + int(own.random() * (wiggle + 1)))
                low = max(lower, min(bar_open, close) - int(own.random() * (wiggle + 1)))
                oi_after = round(oi_start + (oi_end - oi_start) * (i + 1) / count)
                if i < count - 1:
                    oi_after = max(0, oi_after + round(own.gauss(0.0, max(oi_end, 100) * 0.0005)))
                minutes.append(
                    day.minutes[i],
                    px(bar_open),
                    px(high),
                    px(low),
                    px(close),
                    vols[i],
                    oi_before,
                    oi_after,
                )
                oi_before = oi_after
                previous = close
                day_high, day_low = max(day_high, high), min(day_low, low)
            total = sum(vols)
            settle = (
                round(sum(c * v for c, v in zip(closes, vols, strict=True)) / total) if total else closes[-1]
            )
            settle = min(upper, max(lower, settle))
            d_open, d_high, d_low, d_close, volume = open_ticks, day_high, day_low, closes[-1], total
        else:
            d_open = min(upper, max(lower, ticks(day.open)))
            d_close = min(upper, max(lower, ticks(day.close)))
            if is_last:
                d_close = target_close
            d_high = min(upper, max(d_open, d_close, ticks(day.high)))
            d_low = max(lower, min(d_open, d_close, ticks(day.low)))
            volume = day.volume
            settle = target_settle if is_last else round((d_high + d_low + 2 * d_close) / 4)
            settle = min(upper, max(lower, settle))
        if previous_close is None:
            previous_close = d_open
        daily.append(
            china_midnight_ns(day.date),
            px(d_open),
            px(d_high),
            px(d_low),
            px(d_close),
            volume,
            day.oi_start,
            day.oi_end,
        )
        settlements.append(px(settle))
        limits.append((px(lower), px(upper)) if previous_settle is not None else (0.0, math.inf))
        previous_settle, previous_close = settle, d_close
    # Keep exactly the newest minute_bars minutes.
    if len(minutes) > spec.minute_bars:
        minutes = minutes.tail(spec.minute_bars)
    return ContractHistory(spec.symbol, minutes, daily, settlements, limits)


def _bend(closes: list[int], vols: list[int], close: int, settle: int) -> list[int]:
    """Add ``a + b·t`` (t from 1/n to 1) to a day's closes so that it ends at ``close`` with its VWAP at
    ``settle`` (before rounding)."""
    total = sum(vols) or 1
    count = len(closes)
    vwap = sum(c * v for c, v in zip(closes, vols, strict=True)) / total
    t_mean = sum(v * (i + 1) / count for i, v in enumerate(vols)) / total
    end_gap = close - closes[-1]
    if t_mean >= 1 - 1e-9:
        b = 0.0
    else:
        b = (end_gap - (settle - vwap)) / (1 - t_mean)
    a = end_gap - b
    return [round(c + a + b * (i + 1) / count) if i < count - 1 else close for i, c in enumerate(closes)]


def _fix_vwap(closes: list[int], vols: list[int], settle: int, lower: int, upper: int) -> None:
    """Move interior closes one tick at a time until the VWAP rounds to ``settle`` (the last close stays)."""
    total = sum(vols)
    if not total:
        return
    weighted = sum(c * v for c, v in zip(closes, vols, strict=True))
    order = sorted(range(len(closes) - 1), key=lambda i: -vols[i])
    for _ in range(8):
        if round(weighted / total) == settle:
            return
        for i in order:
            error = weighted / total - settle
            if abs(error) < 0.5 and round(weighted / total) == settle:
                return
            step = -1 if error > 0 else 1
            if vols[i] and lower <= closes[i] + step <= upper:
                closes[i] += step
                weighted += step * vols[i]


# -- TqSdk DataDownloader CSV ------------------------------------------------------------------------
def csv_header(symbol: str) -> str:
    return ",".join(["datetime", "datetime_nano", *(f"{symbol}.{name}" for name in BAR_FIELDS)])


def format_datetime(ns: int) -> str:
    """DataDownloader's ``datetime`` column: China time with nine fraction digits."""
    seconds, fraction = divmod(ns, 1_000_000_000)
    days, second_of_day = divmod(seconds + 8 * 3600, 86400)
    hours, rest = divmod(second_of_day, 3600)
    return f"{_date_text(days)} {hours:02d}:{rest // 60:02d}:{rest % 60:02d}.{fraction:09d}"


@functools.lru_cache(maxsize=4096)
def _date_text(days: int) -> str:
    return (dt.date(1970, 1, 1) + dt.timedelta(days=days)).isoformat()


def to_csv(symbol: str, bars: BarColumns, price_decs: int) -> str:
    """The bars as a DataDownloader K-line CSV (header line included)."""
    return "\n".join([csv_header(symbol), *csv_rows(bars.bars(), price_decs)]) + "\n"


def csv_rows(bars: Iterable[Mapping[str, Any]], price_decs: int) -> list[str]:
    """DataDownloader K-line rows (no header, no line ends) of wire bar dicts."""
    fmt = f"{{:.{price_decs}f}}".format
    return [
        f"{format_datetime(bar['datetime'])},{bar['datetime']},{fmt(bar['open'])},{fmt(bar['high'])},"
        f"{fmt(bar['low'])},{fmt(bar['close'])},{bar['volume']},{bar['open_oi']},{bar['close_oi']}"
        for bar in bars
    ]


class HistoryFileError(ValueError):
    """A history file refused: names the file, the line and the column."""

    def __init__(self, name: str, line: int, column: str, message: str) -> None:
        super().__init__(f"{name}:{line}: column {column}: {message}")
        self.name, self.line, self.column = name, line, column


def parse_csv(
    text: str, name: str, *, symbol: str | None = None, price_tick: float | None = None
) -> tuple[str, BarColumns]:
    """A DataDownloader K-line CSV's symbol and bars. Checks: the header names one symbol's seven
    K-line columns; rows sorted by ``datetime_nano`` with no repeats; ``high >= max(open, close)``,
    ``low <= min(open, close)``; volumes and open interest >= 0; prices on ``price_tick``'s grid when
    given. ``#N/A`` cells carry the previous close (prices) or 0. A header-less file (appended rows)
    needs ``symbol``. Raises :class:`HistoryFileError`."""
    lines = text.splitlines()
    columns = ["datetime", "datetime_nano", *(f"{symbol}.{n}" for n in BAR_FIELDS)] if symbol else None
    start = 0
    if lines and lines[0].startswith("datetime"):
        header = [cell.strip() for cell in lines[0].split(",")]
        start = 1
        if len(header) != 9 or header[:2] != ["datetime", "datetime_nano"]:
            raise HistoryFileError(
                name,
                1,
                "header",
                "not a K-line file: want datetime,datetime_nano and SYM.open..SYM.close_oi (one symbol)",
            )
        found = header[2].rsplit(".", 1)[0]
        expected = ["datetime", "datetime_nano", *(f"{found}.{n}" for n in BAR_FIELDS)]
        for position, (got, want) in enumerate(zip(header, expected, strict=True)):
            if got != want:
                raise HistoryFileError(name, 1, str(position + 1), f"header {got!r}, expected {want!r}")
        if symbol is not None and found != symbol:
            raise HistoryFileError(name, 1, "3", f"file is for {found}, not {symbol}")
        columns = header
    if columns is None:
        raise HistoryFileError(name, 1, "header", "no header line: give the symbol (--symbol)")
    the_symbol = columns[2].rsplit(".", 1)[0]
    bars = BarColumns()
    previous_ns: int | None = None
    last_close = math.nan
    for number, line in enumerate(lines[start:], start=start + 1):
        if not line.strip():
            continue
        row = parse_row(line, name, number, columns, last_close=last_close, price_tick=price_tick)
        if previous_ns is not None and row[0] <= previous_ns:
            raise HistoryFileError(name, number, columns[1], "rows not sorted by time (or repeated)")
        bars.append(*row)
        previous_ns = row[0]
        last_close = row[4]
    return the_symbol, bars


Row = tuple[int, float, float, float, float, int, int, int]
"""One K-line row: datetime (epoch ns) and :data:`BAR_FIELDS`."""


def parse_row(
    line: str,
    name: str,
    number: int,
    columns: Sequence[str],
    *,
    last_close: float = math.nan,
    price_tick: float | None = None,
) -> Row:
    """One DataDownloader K-line row, checked (see :func:`parse_csv`; the order of rows is the caller's).
    ``columns``: the header's nine names, for the messages. Raises :class:`HistoryFileError`."""
    cells = [cell.strip() for cell in line.split(",")]
    if len(cells) != 9:
        raise HistoryFileError(name, number, "-", f"{len(cells)} cells, expected 9")
    try:
        ns = int(cells[1])
    except ValueError:
        raise HistoryFileError(name, number, columns[1], f"not an integer: {cells[1]!r}") from None
    if not 0 <= ns < 1 << 63:
        raise HistoryFileError(name, number, columns[1], f"not a time: {cells[1]!r}")
    values: list[float] = []
    for position in range(2, 9):
        cell = cells[position]
        if cell in ("#N/A", "", "nan", "NaN"):
            value = last_close if position < 6 else 0.0
        else:
            try:
                value = float(cell)
            except ValueError:
                raise HistoryFileError(name, number, columns[position], f"not a number: {cell!r}") from None
        if position < 6:
            if not math.isfinite(value) or value <= 0:
                raise HistoryFileError(name, number, columns[position], f"not a price: {cell!r}")
            if price_tick and abs(value / price_tick - round(value / price_tick)) > 1e-6:
                raise HistoryFileError(
                    name, number, columns[position], f"{cell} is off the tick grid ({price_tick})"
                )
        elif not 0 <= value < 1 << 63 or value != int(value):
            raise HistoryFileError(name, number, columns[position], f"not a count >= 0: {cell!r}")
        values.append(value)
    open_, high, low, close = values[:4]
    if high < max(open_, close):
        raise HistoryFileError(name, number, columns[3], f"high {high} below open/close")
    if low > min(open_, close):
        raise HistoryFileError(name, number, columns[4], f"low {low} above open/close")
    return ns, open_, high, low, close, int(values[4]), int(values[5]), int(values[6])
