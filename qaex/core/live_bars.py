"""Live bars kept across a restart: which bars, what is appended when, how a kept file is read back
and joined onto the history.

Pure (no IO, no clock); the files are :mod:`qaex.exchange.live_bars`'s (docs/market-data.md, "Live
bars kept across restarts"). The rules:

* **which**: the 1-minute and the 1-day series of every contract (:data:`KEPT_DURATIONS_NS`); every
  other duration is built from them.
* **when**: :class:`LiveBarPlan` hands out, per series, the bars to append since the last bar written:
  finished bars only (the clock is past the bar's end), and a day bar in progress whenever it changed
  (a ``kill -9`` loses a minute of it, not the day); at a final flush (a settlement, a shutdown) every
  bar in progress. A bar written and changed afterwards (a late
  trade, the bar in progress at a final flush) is appended again: in a kept file a row with the same
  ``datetime`` as the row before replaces it.
* **format**: TqSdk DataDownloader's K-line CSV (:mod:`qaex.core.history`), one header line, one row
  a bar.
* **reading** (:func:`parse_kept`): tolerant. A row that is not a valid bar, a row older than the one
  before, a line longer than :data:`MAX_ROW_CHARS`, and the last line when it has no line end (a write
  torn by ``kill -9``) are skipped and reported, never raised.
* **joining** (:func:`continue_history`): the kept bars after history's last bar follow it; a kept bar
  at history's last bar replaces it; kept bars older than that are dropped. No gap, no overlap, no
  duplicates.
* **compaction**: a file holding more than :func:`compaction_limit` rows (1.25 × the bars kept per
  series) is rewritten with its newest ``keep`` bars.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from qaex.core.history import BarColumns, HistoryFileError, csv_header, csv_rows, parse_row
from qaex.core.kline import NS_PER_DAY, KlineSeries
from qaex.core.market import KEPT_DURATIONS_NS as KEPT_DURATIONS_NS

COMPACT_RATIO = 1.25
"""A kept file is compacted past this many times the bars kept per series."""
MAX_ROW_CHARS = 200
"""The longest row read (a real one is under 120 characters)."""
MAX_PROBLEMS = 5
"""Problems reported per file (the rest are counted)."""

SeriesKey = tuple[str, int]
"""``(symbol, duration_ns)``."""


def compaction_limit(keep: int) -> int:
    """Rows past which a kept file is rewritten with its newest ``keep`` bars."""
    return max(keep + 1, math.ceil(keep * COMPACT_RATIO))


def read_limit(keep: int) -> int:
    """Bytes read from the end of a kept file: every row a file below its compaction limit holds."""
    return (compaction_limit(keep) + 2) * (MAX_ROW_CHARS + 1)


@dataclass(slots=True)
class KeptFile:
    """A kept file as read: its bars (strictly increasing ``datetime``), the rows read, and what was
    skipped (at most :data:`MAX_PROBLEMS` texts; ``skipped`` counts them all)."""

    bars: BarColumns
    rows: int = 0
    skipped: int = 0
    problems: list[str] = field(default_factory=list)

    def skip(self, problem: str) -> None:
        self.skipped += 1
        if len(self.problems) < MAX_PROBLEMS:
            self.problems.append(problem)


def parse_kept(text: str, name: str, symbol: str, *, partial_start: bool = False) -> KeptFile:
    """A kept file's bars (see the module docstring). ``partial_start``: ``text`` is the file's tail
    read from inside a line: its first line is skipped."""
    columns = csv_header(symbol).split(",")
    lines = text.split("\n")
    torn = lines.pop()  # "" when the text ends with a line end
    out = KeptFile(BarColumns())
    if partial_start and lines:
        lines.pop(0)
    rows: list[Any] = []
    last_close = math.nan
    for number, line in enumerate(lines, start=1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        if line.startswith("datetime"):
            if line != ",".join(columns):
                out.skip(f"{name}:{number}: a header for another symbol or format: file skipped")
                return KeptFile(BarColumns(), 0, out.skipped, out.problems)
            continue
        out.rows += 1
        if len(line) > MAX_ROW_CHARS:
            out.skip(f"{name}:{number}: a line of {len(line)} characters")
            continue
        try:
            row = parse_row(line, name, number, columns, last_close=last_close)
        except HistoryFileError as exc:
            out.skip(str(exc))
            continue
        if rows and row[0] < rows[-1][0]:
            out.skip(f"{name}:{number}: older than the row before")
            continue
        if rows and row[0] == rows[-1][0]:
            rows[-1] = row  # the same bar written again (it changed): the later row is the bar
        else:
            rows.append(row)
        last_close = row[4]
    if torn:
        out.skip(f"{name}: a torn last line ({len(torn)} characters, no line end)")
    for row in rows:
        out.bars.append(*row)
    return out


def continue_history(history: BarColumns, kept: BarColumns) -> BarColumns:
    """``history`` followed by the ``kept`` bars from its last bar on (see the module docstring). Both
    are oldest first with strictly increasing ``datetime``; so is the result. Returns ``history``
    itself when nothing follows it."""
    if not len(history):
        return kept
    last = history.datetime[-1]
    start = bisect.bisect_left(kept.datetime, last)
    if start >= len(kept):
        return history
    replaces = kept.datetime[start] == last
    out = history.slice(0, len(history) - 1) if replaces else history.slice(0, len(history))
    for name in BarColumns.__slots__:
        getattr(out, name).extend(getattr(kept, name)[start:])
    return out


def kept_text(symbol: str, bars: BarColumns, price_decs: int, *, header: bool) -> str:
    """Rows to append to (or, with ``header``, to start) a kept file."""
    lines = csv_rows(bars.bars(), price_decs)
    if header:
        lines.insert(0, csv_header(symbol))
    return "".join(line + "\n" for line in lines)


def to_columns(bars: list[dict[str, Any]]) -> BarColumns:
    """Wire bar dicts as columns."""
    out = BarColumns()
    for bar in bars:
        out.append(
            bar["datetime"],
            bar["open"],
            bar["high"],
            bar["low"],
            bar["close"],
            bar["volume"],
            bar["open_oi"],
            bar["close_oi"],
        )
    return out


class LiveBarPlan:
    """Per kept series, the last bar written: what :meth:`take` hands out next (module docstring)."""

    def __init__(self) -> None:
        self._last: dict[SeriesKey, dict[str, Any] | None] = {}

    def begin(self, key: SeriesKey, last: Mapping[str, Any] | None) -> None:
        """Keep this series from now on: ``last`` is the newest bar the series was started with (the
        kept and historical bars attached), None to keep every bar it holds."""
        self._last[key] = None if last is None else dict(last)

    def keeping(self, key: SeriesKey) -> bool:
        return key in self._last

    def keys(self) -> list[SeriesKey]:
        return list(self._last)

    def take(self, key: SeriesKey, series: KlineSeries, now_ns: int, *, final: bool = False) -> BarColumns:
        """The bars of ``series`` to append now: those after the last written (and the last written
        again if it changed), finished ones only unless ``final`` or a day series. Nothing until
        :meth:`begin`."""
        if key not in self._last:
            return BarColumns()
        final = final or series.duration_ns >= NS_PER_DAY
        last = self._last[key]
        first = series.first_id if last is None else series.lower_bound(last["datetime"])
        out: list[dict[str, Any]] = []
        newest = series.last_id
        for item_id in range(first, newest + 1):
            bar = series.get(item_id)
            assert bar is not None
            if last is not None and bar["datetime"] == last["datetime"] and bar == last:
                continue
            if item_id == newest and not final and series.bar_start(now_ns) <= bar["datetime"]:
                break  # in progress
            out.append(bar)
        return to_columns(out)

    def written(self, key: SeriesKey, bars: BarColumns) -> None:
        """``bars`` (from :meth:`take`) are in the file."""
        if len(bars) and key in self._last:
            self._last[key] = bars.bar(len(bars) - 1)
