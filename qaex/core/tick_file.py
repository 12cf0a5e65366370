"""TqSdk DataDownloader tick CSVs: parse, write back, and build K-lines from the ticks.

Pure (no IO, no clock). A tick file (``DataDownloader(api, sym, dur_sec=0, ...)``) has the columns
``datetime,datetime_nano`` then, for its one symbol, ``SYM.last_price, SYM.highest, SYM.lowest,
SYM.average, SYM.volume, SYM.amount, SYM.open_interest`` and the book's levels, ``SYM.bid_price{i},
SYM.bid_volume{i}, SYM.ask_price{i}, SYM.ask_volume{i}`` for ``i`` = 1..5 on SHFE, INE, SSE and SZSE and
1 elsewhere (TqSdk's ``DataDownloader._get_data_cols``). ``volume`` and ``amount`` are the trading day's
running totals. A header-less file (rows appended with ``write_mode="a"``) needs the symbol; its levels
come from the number of cells.

Cells: ``#N/A`` carries the column's value of the row before (``NaN`` / 0 on the first row), ``nan`` (or
empty) is a price that does not exist (an empty book side) or a count of 0. Checks, each refused with
:class:`qaex.core.history.HistoryFileError` naming the file, the line and the column: the header, the
number of cells, rows in time order (equal times allowed: exchanges stamp some ticks alike), prices
positive and on the tick grid, counts whole and >= 0, at most :data:`MAX_ROWS` rows and
:data:`MAX_LINE` characters a line. One pass over the text: linear in its size.

:func:`bars_from_ticks` turns ticks into K-lines of any duration (1-minute and daily bars for the kept
history), aligned like the live bars (:meth:`qaex.core.kline.KlineSeries.bar_start`), with no flat bars
where no tick was (session breaks, nights).
"""

from __future__ import annotations

import math
from array import array
from collections.abc import Iterator
from typing import Any, Literal

from qaex.core.history import BarColumns, HistoryFileError, format_datetime
from qaex.core.kline import KlineSeries

MAX_ROWS = 2_000_000
"""Rows in one tick file: a few months of one contract's ticks (two a second, ~9 trading hours a day)."""
MAX_LINE = 2_000
"""Characters in one line (a 5-level row is ~250)."""
FULL_DEPTH_EXCHANGES = frozenset({"SHFE", "INE", "SSE", "SZSE"})
"""Exchanges whose tick files carry five book levels (TqSdk's DataDownloader); the others one."""
DIFF_LEVELS = 5
"""Book levels of a DIFF tick: a file's missing levels are NaN / 0."""

Kind = Literal["price", "amount", "count"]
"""A column's kind: a price (> 0, on the tick grid), an amount (a float >= 0, off grid), a count."""

BASE_FIELDS: tuple[tuple[str, Kind], ...] = (
    ("last_price", "price"),
    ("highest", "price"),
    ("lowest", "price"),
    ("average", "amount"),
    ("volume", "count"),
    ("amount", "amount"),
    ("open_interest", "count"),
)
LEVEL_FIELDS: tuple[tuple[str, Kind], ...] = (
    ("bid_price", "price"),
    ("bid_volume", "count"),
    ("ask_price", "price"),
    ("ask_volume", "count"),
)
_MISSING = ("#N/A",)
_EMPTY = ("", "nan", "NaN", "-")


def tick_fields(levels: int) -> tuple[tuple[str, Kind], ...]:
    """The fields after ``datetime_nano`` of a file with ``levels`` book levels, in column order."""
    fields = list(BASE_FIELDS)
    for level in range(1, levels + 1):
        fields.extend((f"{name}{level}", kind) for name, kind in LEVEL_FIELDS)
    return tuple(fields)


def levels_of(symbol: str) -> int:
    """The book levels DataDownloader writes for ``symbol``."""
    return DIFF_LEVELS if symbol.split(".", 1)[0] in FULL_DEPTH_EXCHANGES else 1


def tick_levels(cells: int) -> int | None:
    """The book levels of a tick row of ``cells`` cells, or None if no tick row has that many."""
    rest = cells - 2 - len(BASE_FIELDS)
    if rest <= 0 or rest % len(LEVEL_FIELDS):
        return None
    levels = rest // len(LEVEL_FIELDS)
    return levels if levels in (1, DIFF_LEVELS) else None


def is_tick_header(line: str) -> bool:
    """Whether a CSV's first line is a tick file's header."""
    return line.startswith("datetime") and ".last_price" in line


def tick_header(symbol: str, levels: int) -> str:
    return ",".join(["datetime", "datetime_nano", *(f"{symbol}.{name}" for name, _ in tick_fields(levels))])


class TickColumns:
    """Ticks as columns (``array``): ``datetime`` (epoch ns) and one column per field of
    :func:`tick_fields`, floats for prices and amounts, ints for counts."""

    __slots__ = ("columns", "datetime", "levels")

    def __init__(self, levels: int) -> None:
        if levels < 1:
            raise ValueError("levels >= 1")
        self.levels = levels
        self.datetime = array("q")
        self.columns: dict[str, array[Any]] = {
            name: array("q" if kind == "count" else "d") for name, kind in tick_fields(levels)
        }

    def __len__(self) -> int:
        return len(self.datetime)

    def append(self, datetime: int, values: dict[str, float]) -> None:
        """One tick: ``values`` holds every field (counts as whole floats or ints)."""
        self.datetime.append(datetime)
        for name, column in self.columns.items():
            value = values[name]
            column.append(int(value) if column.typecode == "q" else float(value))

    def tick(self, index: int) -> dict[str, Any]:
        """Tick ``index`` as the DIFF tick dict (all five levels: those the file lacks are NaN / 0)."""
        out: dict[str, Any] = {"datetime": self.datetime[index]}
        for name, column in self.columns.items():
            out[name] = column[index]
        for level in range(self.levels + 1, DIFF_LEVELS + 1):
            for name, kind in LEVEL_FIELDS:
                out[f"{name}{level}"] = 0 if kind == "count" else math.nan
        return out

    def bar(self, index: int) -> dict[str, Any]:
        """The same as :meth:`tick`: the name series' archives read items by (qaex.core.kline)."""
        return self.tick(index)

    def ticks(self) -> Iterator[dict[str, Any]]:
        return (self.tick(index) for index in range(len(self)))

    def slice(self, start: int, end: int) -> TickColumns:
        """Ticks ``start .. end - 1`` (a copy)."""
        out = TickColumns(self.levels)
        out.datetime.extend(self.datetime[start:end])
        for name, column in self.columns.items():
            out.columns[name].extend(column[start:end])
        return out

    def nbytes(self) -> int:
        return len(self) * (8 + sum(column.itemsize for column in self.columns.values()))

    def __eq__(self, other: object) -> bool:
        """Equal ticks, NaN included (compared as bytes)."""
        if not isinstance(other, TickColumns):
            return NotImplemented
        return (
            self.levels == other.levels
            and self.datetime == other.datetime
            and all(column.tobytes() == other.columns[n].tobytes() for n, column in self.columns.items())
        )

    __hash__ = None  # type: ignore[assignment]


def _on_grid(value: float, tick: float) -> bool:
    return abs(value / tick - round(value / tick)) <= 1e-6


def parse_ticks(
    text: str, name: str, *, symbol: str | None = None, price_tick: float | None = None
) -> tuple[str, TickColumns]:
    """A DataDownloader tick CSV's symbol and ticks (see the module docstring for the checks). A
    header-less file needs ``symbol``; with ``price_tick``, prices off its grid are refused."""
    lines = text.splitlines()
    if len(lines) > MAX_ROWS + 1:
        raise HistoryFileError(name, MAX_ROWS + 2, "-", f"more than {MAX_ROWS} rows")
    start = 0
    if lines and lines[0].startswith("datetime"):
        start = 1
        the_symbol, levels = _check_header(lines[0], name, symbol)
    else:
        if symbol is None:
            raise HistoryFileError(name, 1, "header", "no header line: give the symbol (--symbol)")
        first = next((line for line in lines if line.strip()), "")
        found = tick_levels(len(first.split(",")))
        if found is None:
            raise HistoryFileError(
                name, 1, "-", f"{len(first.split(','))} cells: not a tick row (13 or 29 cells)"
            )
        the_symbol, levels = symbol, found
    fields = tick_fields(levels)
    names = ["datetime", "datetime_nano", *(f"{the_symbol}.{field}" for field, _ in fields)]
    width = len(names)
    ticks = TickColumns(levels)
    previous: dict[str, float] = {field: (0.0 if kind == "count" else math.nan) for field, kind in fields}
    previous_ns: int | None = None
    for number, line in enumerate(lines[start:], start=start + 1):
        if len(line) > MAX_LINE:
            raise HistoryFileError(name, number, "-", f"a line of more than {MAX_LINE} characters")
        if not line.strip():
            continue
        cells = line.split(",")
        if len(cells) != width:
            raise HistoryFileError(name, number, "-", f"{len(cells)} cells, expected {width}")
        nano = cells[1].strip()
        try:
            ns = int(nano)
        except ValueError:
            raise HistoryFileError(name, number, names[1], f"not an integer: {nano!r}") from None
        if previous_ns is not None and ns < previous_ns:
            raise HistoryFileError(name, number, names[1], "rows not sorted by time")
        values: dict[str, float] = {}
        for position, (field, kind) in enumerate(fields, start=2):
            cell = cells[position].strip()
            values[field] = _cell(cell, kind, previous[field], price_tick, name, number, names[position])
        ticks.append(ns, values)
        previous = values
        previous_ns = ns
    return the_symbol, ticks


def _check_header(line: str, name: str, symbol: str | None) -> tuple[str, int]:
    header = [cell.strip() for cell in line.split(",")]
    levels = tick_levels(len(header))
    if levels is None or header[:2] != ["datetime", "datetime_nano"] or "." not in header[2]:
        raise HistoryFileError(
            name,
            1,
            "header",
            "not a tick file: want datetime,datetime_nano, SYM.last_price..SYM.open_interest and 1 or 5 "
            "book levels (one symbol)",
        )
    found = header[2].rsplit(".", 1)[0]
    expected = ["datetime", "datetime_nano", *(f"{found}.{field}" for field, _ in tick_fields(levels))]
    for position, (got, want) in enumerate(zip(header, expected, strict=True)):
        if got != want:
            raise HistoryFileError(name, 1, str(position + 1), f"header {got!r}, expected {want!r}")
    if symbol is not None and found != symbol:
        raise HistoryFileError(name, 1, "3", f"file is for {found}, not {symbol}")
    return found, levels


def _cell(
    cell: str, kind: Kind, previous: float, price_tick: float | None, name: str, line: int, column: str
) -> float:
    if cell in _MISSING:
        return previous
    if cell in _EMPTY:
        return 0.0 if kind == "count" else math.nan
    try:
        value = float(cell)
    except ValueError:
        raise HistoryFileError(name, line, column, f"not a number: {cell!r}") from None
    if kind == "price":
        if not math.isfinite(value) or value <= 0:
            raise HistoryFileError(name, line, column, f"not a price: {cell!r}")
        if price_tick and not _on_grid(value, price_tick):
            raise HistoryFileError(name, line, column, f"{cell} is off the tick grid ({price_tick})")
    elif kind == "amount":
        if not math.isfinite(value) or value < 0:
            raise HistoryFileError(name, line, column, f"not an amount >= 0: {cell!r}")
    elif value < 0 or value != int(value) or value >= 2**63:
        raise HistoryFileError(name, line, column, f"not a count >= 0: {cell!r}")
    return value


def ticks_to_csv(symbol: str, ticks: TickColumns, price_decs: int, *, header: bool = True) -> str:
    """The ticks as a DataDownloader tick CSV (prices to ``price_decs`` decimals, ``nan`` for a price
    that does not exist); ``header=False``: rows only, as an appended file."""
    lines = [tick_header(symbol, ticks.levels)] if header else []
    formats = [(ticks.columns[field], kind) for field, kind in tick_fields(ticks.levels)]
    for index in range(len(ticks)):
        ns = ticks.datetime[index]
        cells = [format_datetime(ns), str(ns)]
        for column, kind in formats:
            value = column[index]
            if kind == "count":
                cells.append(str(value))
            elif value != value:
                cells.append("nan")
            else:
                cells.append(repr(round(value, price_decs)) if kind == "price" else repr(value))
        lines.append(",".join(cells))
    return "\n".join(lines) + "\n" if lines else ""


def traded(previous_volume: int, volume: int) -> int:
    """Lots traded between two ticks, from the trading day's running ``volume`` (a smaller figure is
    a new day's: all of it traded since)."""
    return volume - previous_volume if volume >= previous_volume else volume


def bars_from_ticks(ticks: TickColumns, duration_s: int) -> BarColumns:
    """K-lines of ``duration_s`` seconds from ticks (those with a last price), aligned like live bars.
    A bar's volume is what traded in it, ``open_oi`` the open interest before its first tick."""
    aligner = KlineSeries("-", duration_s * 1_000_000_000, 1)
    bars = BarColumns()
    last = ticks.columns["last_price"]
    volumes = ticks.columns["volume"]
    interest = ticks.columns["open_interest"]
    start = -1
    open_ = high = low = close = 0.0
    volume = 0
    open_oi = close_oi = 0
    previous_volume = 0
    previous_oi: int | None = None
    for index in range(len(ticks)):
        lots = traded(previous_volume, volumes[index])
        previous_volume = volumes[index]
        price = last[index]
        oi = interest[index]
        if price != price:
            previous_oi = oi
            continue
        bar_start = aligner.bar_start(ticks.datetime[index])
        if bar_start != start:
            if start >= 0:
                bars.append(start, open_, high, low, close, volume, open_oi, close_oi)
            start = bar_start
            open_ = high = low = price
            volume = 0
            open_oi = oi if previous_oi is None else previous_oi
        high, low, close = max(high, price), min(low, price), price
        volume += lots
        close_oi = oi
        previous_oi = oi
    if start >= 0:
        bars.append(start, open_, high, low, close, volume, open_oi, close_oi)
    return bars
