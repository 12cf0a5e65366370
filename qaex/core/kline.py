"""Tick and K-line series: bounded, id-addressed histories that hand out DIFF merge patches.

Both series number their items from 0, one by one, and never renumber: when the history is full the
oldest item is dropped and ids keep increasing (``first_id`` moves up). A closed bar is never rewritten;
only the newest bar (and the newest tick never) changes after it was handed out.

Bar alignment (all in exchange local time, UTC+8):

* durations under a day: ``start = floor((ts + 8 h) / duration) * duration - 8 h``, so 1 h bars start on
  the local hour and 12 h bars at local midnight and noon (for any duration dividing 8 h this equals the
  plain ``floor(ts / duration) * duration``);
* whole days (``86400 s × N``, the only long durations TqSdk accepts): a trade belongs to its *trading
  day* exactly as TqSdk computes it (``tqsdk.datetime._get_trading_day_from_timestamp``: from 18:00 on,
  the next day; Saturday and Sunday roll to Monday), and the bar's ``datetime`` is that trading day's
  local midnight, which is what Shinnytech's servers send and what TqSdk's backtest expects. N-day bars
  group trading days in blocks of N counted from Monday 1990-01-01, so 7-day bars are Monday weeks.
  Holidays are not known; there is simply no trade and, with the timer, a flat bar.

A bar opens at its first trade; :meth:`KlineSeries.on_time` also opens bars when the clock passes a bar
boundary with no trade, carrying the previous close flat with zero volume ("gap bars"), so charts move in
real time. A zero-volume bar that then gets a trade takes that trade as its open, high, low and close.

History (:meth:`KlineSeries.attach_history`, docs/market-data.md "History"): a series may start with past
bars held as ``array`` columns (:class:`qaex.core.history.BarColumns`, never mutated) before its live
dicts; ids run through both. The first live bar after history opens at the clock, with no flat bars for
the time between (:attr:`KlineSeries.resuming`).
"""

from __future__ import annotations

import bisect
import itertools
from array import array
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from qaex.core.calendar import CST_OFFSET_NS, MONDAY_1990_NS
from qaex.core.calendar import NS_PER_DAY as NS_PER_DAY
from qaex.core.calendar import NS_PER_SECOND as NS_PER_SECOND
from qaex.core.calendar import trading_day_start_ns as trading_day_start_ns
from qaex.core.history import BAR_FIELDS, BarColumns
from qaex.core.quote import Patch

DEFAULT_MAX_LEN = 10_000
"""TqSdk asks for at most 10,000 items per series (``data_length`` is capped there)."""


class Columns(Protocol):
    """Past items held as columns: :class:`qaex.core.history.BarColumns` (bars) or
    :class:`qaex.core.tick_file.TickColumns` (ticks); never mutated."""

    @property
    def datetime(self) -> array[int]: ...

    def __len__(self) -> int: ...

    def bar(self, index: int) -> dict[str, Any]: ...


class _Series:
    """Bounded, contiguously numbered history of wire dicts, each with an int ``datetime``."""

    def __init__(self, symbol: str, max_len: int) -> None:
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        self.symbol = symbol
        self.max_len = max_len
        self._items: deque[dict[str, Any]] = deque()
        # History older than the live items, as columns (KlineSeries.attach_history): ids
        # first_id .. first_id + archived - 1, then the deque. ``_archive_start`` skips the dropped.
        self._archive: Columns | None = None  # never mutated: it may be shared
        self._archive_start = 0
        self._archive_stop = 0
        self._next_id = 0
        self._changed: set[int] = set()
        self._last_id_sent = -1
        self._resume = False

    # -- ids ---------------------------------------------------------------------------------------
    @property
    def last_id(self) -> int:
        """Id of the newest item, -1 while the series is empty."""
        return self._next_id - 1

    @property
    def _archived(self) -> int:
        """History items kept in the columns."""
        return self._archive_stop - self._archive_start

    @property
    def first_id(self) -> int:
        """Id of the oldest item still kept (equals ``last_id + 1`` while empty)."""
        return self._next_id - len(self._items) - self._archived

    def __len__(self) -> int:
        return len(self._items) + self._archived

    def _at(self, index: int) -> dict[str, Any]:
        """The kept item at ``index`` (0 = the oldest kept); a fresh dict for archived ones."""
        archived = self._archived
        if index < archived:
            assert self._archive is not None
            return self._archive.bar(self._archive_start + index)
        return self._items[index - archived]

    def _datetime_at(self, index: int) -> int:
        archived = self._archived
        if index < archived:
            assert self._archive is not None
            return self._archive.datetime[self._archive_start + index]
        return self._items[index - archived]["datetime"]  # type: ignore[no-any-return]

    def get(self, item_id: int) -> dict[str, Any] | None:
        """A copy of the item, or None if it was dropped or does not exist yet."""
        if not self.first_id <= item_id <= self.last_id:
            return None
        return dict(self._at(item_id - self.first_id))

    def window(self, left_id: int, right_id: int) -> dict[str, dict[str, Any]]:
        """Copies of the kept items with ids in ``[left_id, right_id]``, keyed by ``str(id)``."""
        first = max(left_id, self.first_id)
        last = min(right_id, self.last_id)
        if first > last:
            return {}
        offset = first - self.first_id
        archived = self._archived
        out: dict[str, dict[str, Any]] = {}
        item_id = first
        if offset < archived:
            assert self._archive is not None
            archive = self._archive
            stop = self._archive_start + min(archived, offset + last - first + 1)
            for index in range(self._archive_start + offset, stop):
                out[str(item_id)] = archive.bar(index)
                item_id += 1
        if item_id <= last:
            start = item_id - self.first_id - archived
            for item in itertools.islice(self._items, start, start + last - item_id + 1):
                out[str(item_id)] = dict(item)
                item_id += 1
        return out

    # -- time lookups (items are in datetime order) --------------------------------------------------
    def lower_bound(self, datetime_ns: int) -> int:
        """Id of the first kept item with ``datetime >= datetime_ns``; ``last_id + 1`` if there is none."""
        archived = self._archived
        if archived and self._archive is not None:
            column = self._archive.datetime
            index = bisect.bisect_left(column, datetime_ns, self._archive_start, self._archive_stop)
            if index < self._archive_stop:
                return self.first_id + index - self._archive_start
        index = bisect.bisect_left(self._items, datetime_ns, key=_datetime_of)
        return self.first_id + archived + index

    def find(self, datetime_ns: int) -> int | None:
        """Id of the kept item whose ``datetime`` is exactly ``datetime_ns``, if any."""
        item_id = self.lower_bound(datetime_ns)
        if item_id <= self.last_id and self._datetime_at(item_id - self.first_id) == datetime_ns:
            return item_id
        return None

    def last_datetime(self) -> int | None:
        """``datetime`` of the newest item, None while empty."""
        if not len(self):
            return None
        return self._datetime_at(len(self) - 1)

    # -- mutation and patches ----------------------------------------------------------------------
    def _push(self, item: dict[str, Any]) -> None:
        self._resume = False
        self._items.append(item)
        self._changed.add(self._next_id)
        self._next_id += 1
        if len(self) > self.max_len:
            if self._archived:
                self._archive_start += 1
            else:
                self._items.popleft()

    def _skip(self, count: int) -> None:
        """Number ``count`` items that are never kept: everything before them is dropped too."""
        self._items.clear()
        self._archive = None
        self._archive_start = self._archive_stop = 0
        self._next_id += count

    def _attach(self, columns: Columns) -> int:
        """Put past items before the live ones (see KlineSeries.attach_history); how many were kept."""
        if self.first_id != 0 or self._archive is not None or not len(columns):
            return 0
        end = len(columns)
        if self._items:
            end = bisect.bisect_left(columns.datetime, self._items[0]["datetime"])
        room = self.max_len - len(self._items)
        start = max(0, end - room)
        if end <= start:
            return 0
        count = end - start
        self._archive = columns
        self._archive_start, self._archive_stop = start, end
        self._next_id += count
        self._changed = {item_id + count for item_id in self._changed}
        if self._last_id_sent >= 0:
            self._last_id_sent += count
        return count

    def _newest(self) -> dict[str, Any]:
        """The newest item, live (moved out of the archive if it is there: only a late trade does)."""
        if not self._items and self._archived:
            assert self._archive is not None
            self._archive_stop -= 1
            self._items.append(self._archive.bar(self._archive_stop))
        return self._items[-1]

    def _mark_last_changed(self) -> None:
        self._changed.add(self.last_id)

    def _body_since_last_take(self) -> Patch | None:
        first_id = self.first_id
        ids = sorted(item_id for item_id in self._changed if item_id >= first_id)
        self._changed.clear()
        if not ids and self.last_id == self._last_id_sent:
            return None
        self._last_id_sent = self.last_id
        data = {str(item_id): dict(self._at(item_id - first_id)) for item_id in ids}
        return {"last_id": self.last_id, "data": data}


def _datetime_of(item: dict[str, Any]) -> int:
    return item["datetime"]  # type: ignore[no-any-return]


class TickSeries(_Series):
    """One instrument's ticks (one per trade), as ``ticks/{symbol}`` in the DIFF tree."""

    duration_ns = 0

    def __init__(self, symbol: str, max_len: int = DEFAULT_MAX_LEN) -> None:
        super().__init__(symbol, max_len)

    def attach_history(self, ticks: Columns) -> int:
        """Put recorded ticks (:class:`qaex.core.tick_file.TickColumns`, oldest first) before the live
        ones and return how many were kept (as :meth:`KlineSeries.attach_history`: before anyone has
        seen this series' ids)."""
        return self._attach(ticks)

    def append(self, tick: Mapping[str, Any]) -> int:
        """Add a DIFF Tick (e.g. :meth:`QuoteBook.to_tick`) and return its id."""
        self._push(dict(tick))
        return self.last_id

    def take_patch(self) -> Patch | None:
        """``{"ticks": {symbol: {"last_id": N, "data": {id: tick}}}}`` for new ticks, or None."""
        body = self._body_since_last_take()
        return None if body is None else {"ticks": {self.symbol: body}}


def check_duration(duration_ns: int) -> None:
    """ValueError for a K-line duration no series can have (TqSdk refuses those over a day that are
    not whole days)."""
    if duration_ns <= 0 or duration_ns % NS_PER_SECOND:
        raise ValueError(f"a K-line duration is a positive whole number of seconds, got {duration_ns} ns")
    if duration_ns > NS_PER_DAY and duration_ns % NS_PER_DAY:
        raise ValueError(f"a K-line duration over a day must be whole days, got {duration_ns} ns")


class KlineSeries(_Series):
    """One instrument's bars of one duration, as ``klines/{symbol}/{duration_ns}`` in the DIFF tree."""

    def __init__(self, symbol: str, duration_ns: int, max_len: int = DEFAULT_MAX_LEN) -> None:
        check_duration(duration_ns)
        super().__init__(symbol, max_len)
        self.duration_ns = duration_ns
        self._days = duration_ns // NS_PER_DAY if duration_ns % NS_PER_DAY == 0 else 0

    @property
    def resuming(self) -> bool:
        """Whether the newest bar is history's last (no live bar yet)."""
        return self._resume

    # -- history -----------------------------------------------------------------------------------
    def attach_history(self, bars: BarColumns) -> int:
        """Put ``bars`` (this duration's, oldest first) before the live bars, and return how many were
        kept: those older than the first live bar, at most ``max_len`` in all. A bar of ``bars`` at the
        first live bar's time is joined into it (:func:`join_bar`: kept live bars of a run before a
        restart, and the new run's first trades in the same bar).

        The live bars are renumbered after them, so call this before anyone has seen this series' ids
        (the market state does it before a chart or a reader gets the series). The live bars that follow
        open at the clock: there are no flat bars between history's last bar and the first live one.
        """
        if self.first_id == 0 and self._archive is None and len(bars) and self._items:
            first = self._items[0]
            end = bisect.bisect_left(bars.datetime, first["datetime"])
            if end < len(bars) and bars.datetime[end] == first["datetime"]:
                self._items[0] = join_bar(bars.bar(end), first)
        count = self._attach(bars)
        if count and not self._items:
            self._resume = True
        return count

    def fill_from(self, bars: Iterable[Mapping[str, Any]], *, resuming: bool = False) -> None:
        """Build this series from finer bars (oldest first, e.g. the 1-minute series' for 5 minutes),
        bar by bar with no flat bars where the source has none (session breaks, history to live).
        ``resuming``: the source's newest bar is history's (see :attr:`resuming`)."""
        current: dict[str, Any] | None = None
        for bar in bars:
            start = self.bar_start(bar["datetime"])
            if current is not None and current["datetime"] == start:
                fold_bar(current, bar)
                continue
            if current is not None and start < current["datetime"]:
                continue  # out of order: never rewrite
            current = {key: bar[key] for key in BAR_FIELDS}
            current["datetime"] = start
            self._push(current)
        self._resume = resuming and current is not None

    # -- alignment ---------------------------------------------------------------------------------
    def bar_start(self, ts_ns: int) -> int:
        """Epoch ns at which the bar containing ``ts_ns`` starts (see the module docstring)."""
        if not self._days:
            return (ts_ns + CST_OFFSET_NS) // self.duration_ns * self.duration_ns - CST_OFFSET_NS
        days = (trading_day_start_ns(ts_ns) - MONDAY_1990_NS) // NS_PER_DAY
        return MONDAY_1990_NS + days // self._days * self._days * NS_PER_DAY

    def _next_start(self, start_ns: int) -> int:
        if not self._days:
            return start_ns + self.duration_ns
        # Local midnight after this block; a weekend rolls on to Monday's block.
        return self.bar_start(start_ns + self.duration_ns)

    # -- events ------------------------------------------------------------------------------------
    def on_trade(self, price: float, volume: int, ts_ns: int, open_interest: int) -> None:
        """Fold one fill into the bar of ``ts_ns``, opening bars (gap bars first) as needed.

        A trade stamped before the newest bar's start (a late clock) goes into the newest bar: closed
        bars are never rewritten. ``open_interest`` is the figure after the fill.
        """
        if not len(self):
            start = self.bar_start(ts_ns)
            self._push(_bar(start, price, open_interest))
        else:
            self.on_time(ts_ns)
        bar = self._newest()
        self._resume = False  # a trade in the attached bars' last bar (a restart within it): live from here
        if bar["volume"] == 0:  # a gap bar, or the bar just opened: the first trade sets the prices
            bar["open"] = bar["high"] = bar["low"] = price
        else:
            bar["high"] = max(bar["high"], price)
            bar["low"] = min(bar["low"], price)
        bar["close"] = price
        bar["volume"] += volume
        bar["close_oi"] = open_interest
        self._mark_last_changed()

    def on_time(self, ts_ns: int) -> None:
        """Advance the clock: if ``ts_ns`` is past the newest bar, open flat bars up to its bar.

        Gap bars copy the previous close into open, high, low and close, with zero volume and
        ``open_oi == close_oi ==`` the previous ``close_oi``. Nothing happens before the first trade
        (there is no price to carry). A gap longer than ``max_len`` bars numbers the bars it would drop
        at once without building them, so the cost stays O(max_len).
        """
        if not len(self):
            return
        target = self.bar_start(ts_ns)
        previous = self._newest()
        start = previous["datetime"]
        if target <= start:
            return
        if self._resume:  # history ends here: the live bars start at the clock, with no flat bars between
            self._resume = False
            self._push(_bar(target, previous["close"], previous["close_oi"], volume=0))
            return
        if self._days:
            starts = []
            while start < target:
                start = self._next_start(start)
                starts.append(start)
            skipped = max(0, len(starts) - self.max_len)
            starts = starts[skipped:]
        else:
            count = (target - start) // self.duration_ns
            skipped = max(0, count - self.max_len)
            starts = [start + step * self.duration_ns for step in range(skipped + 1, count + 1)]
        if skipped:
            self._skip(skipped)
        for bar_start in starts:
            self._push(_bar(bar_start, previous["close"], previous["close_oi"], volume=0))

    # -- patches -----------------------------------------------------------------------------------
    def take_patch(self) -> Patch | None:
        """``{"klines": {symbol: {str(duration_ns): {"last_id": N, "data": {id: bar}}}}}`` for the bars
        opened or changed since the previous take, or None."""
        body = self._body_since_last_take()
        if body is None:
            return None
        return {"klines": {self.symbol: {str(self.duration_ns): body}}}


def _bar(start_ns: int, price: float, open_interest: int, volume: int = 0) -> dict[str, Any]:
    return {
        "datetime": start_ns,
        "open": price,
        "high": price,
        "low": price,
        "close": price,
        "volume": volume,
        "open_oi": open_interest,
        "close_oi": open_interest,
    }


class MirrorSeries:
    """A copy of another process's series (a DIFF gateway's, of the core's; qaex.exchange.remote_charts),
    built from a snapshot of its items and kept current by its patches' bodies
    (``{"last_id": N, "data": {id: item}}``, as :meth:`KlineSeries.take_patch` makes them).

    It answers what a chart asks of a series (:class:`qaex.core.chart.SeriesView`) exactly as the
    original does for the same items. Items are kept as received and never changed (a patch replaces an
    item whole), so they may be shared with the patches handed to sessions. At most ``max_len`` items
    are kept: the oldest go first, as in the original.
    """

    def __init__(self, symbol: str, duration_ns: int, max_len: int = DEFAULT_MAX_LEN) -> None:
        if max_len < 1:
            raise ValueError(f"max_len must be >= 1, got {max_len}")
        self.symbol = symbol
        self.duration_ns = duration_ns
        self.max_len = max_len
        self._items: dict[int, dict[str, Any]] = {}
        self._ids: list[int] = []  # the kept ids, ascending (contiguous unless a snapshot had holes)
        self._last_id = -1

    def load(self, last_id: int, items: Mapping[int, dict[str, Any]]) -> None:
        """Replace everything by a snapshot: the series' ``last_id`` and its items by id."""
        self._items = {}
        self._ids = []
        self._last_id = -1
        self.apply({"last_id": last_id, "data": {str(item_id): item for item_id, item in items.items()}})

    def apply(self, body: Mapping[str, Any]) -> None:
        """Merge one patch body: new and changed items (each whole), and the new ``last_id``."""
        data = body.get("data")
        if isinstance(data, Mapping):
            for key, item in data.items():
                item_id = int(key)
                if not isinstance(item, dict):
                    continue
                if item_id not in self._items:
                    if self._ids and item_id < self._ids[-1]:
                        bisect.insort(self._ids, item_id)
                    else:
                        self._ids.append(item_id)
                self._items[item_id] = item
        last_id = body.get("last_id")
        if isinstance(last_id, int):
            self._last_id = max(self._last_id, last_id)
        floor = self._last_id - self.max_len + 1
        if self._ids and self._ids[0] < floor:
            cut = bisect.bisect_left(self._ids, floor)
            for item_id in self._ids[:cut]:
                del self._items[item_id]
            del self._ids[:cut]

    @property
    def last_id(self) -> int:
        return self._last_id

    @property
    def first_id(self) -> int:
        return self._ids[0] if self._ids else self._last_id + 1

    def __len__(self) -> int:
        return len(self._ids)

    def get(self, item_id: int) -> dict[str, Any] | None:
        item = self._items.get(item_id)
        return None if item is None else dict(item)

    def window(self, left_id: int, right_id: int) -> dict[str, dict[str, Any]]:
        start = bisect.bisect_left(self._ids, left_id)
        stop = bisect.bisect_right(self._ids, right_id)
        return {str(item_id): dict(self._items[item_id]) for item_id in self._ids[start:stop]}

    def lower_bound(self, datetime_ns: int) -> int:
        items = self._items
        index = bisect.bisect_left(self._ids, datetime_ns, key=lambda item_id: items[item_id]["datetime"])
        return self._ids[index] if index < len(self._ids) else self._last_id + 1

    def find(self, datetime_ns: int) -> int | None:
        item_id = self.lower_bound(datetime_ns)
        item = self._items.get(item_id)
        return item_id if item is not None and item["datetime"] == datetime_ns else None

    def last_datetime(self) -> int | None:
        if not self._ids:
            return None
        return self._items[self._ids[-1]]["datetime"]  # type: ignore[no-any-return]


def fold_bar(into: dict[str, Any], bar: Mapping[str, Any]) -> None:
    """Fold ``bar`` (later, same bar start) into ``into``: high, low, close, volume, closing open interest."""
    into["high"] = max(into["high"], bar["high"])
    into["low"] = min(into["low"], bar["low"])
    into["close"] = bar["close"]
    into["volume"] += bar["volume"]
    into["close_oi"] = bar["close_oi"]


def join_bar(earlier: Mapping[str, Any], later: dict[str, Any]) -> dict[str, Any]:
    """One bar of two parts of the same bar (``earlier`` kept before a restart, ``later`` live): the
    earlier's open and opening open interest, then :func:`fold_bar`. A flat earlier part (no volume)
    carries nothing: the later part is the bar, as a gap bar's first trade sets its prices."""
    if not earlier["volume"]:
        return later
    joined = dict(earlier)
    fold_bar(joined, later)
    return joined
