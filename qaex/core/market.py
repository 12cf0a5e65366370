"""The market-data core: quotes, ticks and K-lines of every instrument, folded from engine batches.

Sans-IO, like the engine: no trio, no IO, no clock. Every call that stamps something takes the time
(``now_ns``, epoch nanoseconds) from its caller, and the caller routes what
:meth:`MarketState.take_changes` hands out; :class:`qaex.exchange.market.MarketData` is that caller.

:class:`MarketState` owns, per instrument, one :class:`~qaex.core.quote.QuoteBook`, one
:class:`~qaex.core.kline.TickSeries`, and a 1-minute and a 1-day :class:`~qaex.core.kline.KlineSeries`
(kept from the start, so that a chart finds history at once). A K-line series of any other duration
exists while a chart uses it (:meth:`MarketState.open_chart`, :meth:`MarketState.close_chart`) and is
filled from the kept history when it starts.

* :meth:`MarketState.apply` folds one engine batch in: instrument changes (a listing, a settlement),
  then the depth the batch carries, then its trades (the quote, one tick, every K-line series of the
  symbol). Nothing here reads the engine: a batch carries everything it changed.
* :meth:`MarketState.set_main` points a main-contract series (``KQ.m@SHFE.rb``, a
  :class:`~qaex.core.quote.ContQuote`) at its product's main contract; a batch carries the changes
  (``Batch.main_contracts``). The series' quote changes whenever its main's does, and when the main
  changes; it is subscribed to and listed (static fields) like any quote, and has no K-lines.
* :meth:`MarketState.advance_time` opens gap bars, so that charts advance with no trades.
* :meth:`MarketState.take_changes` takes one patch from each object changed since the previous take.
  A quote that changed 1,000 times between two takes costs one patch build; the caller shares that
  dict among every subscriber, so patches are never mutated once handed out.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from qaex.core.calendar import MarketHours
from qaex.core.chart import Chart, ChartRequest, SeriesView
from qaex.core.engine import Batch, Depth
from qaex.core.history import BarColumns, ContractHistory
from qaex.core.instruments import Instrument
from qaex.core.kline import (
    DEFAULT_MAX_LEN,
    NS_PER_DAY,
    NS_PER_SECOND,
    KlineSeries,
    TickSeries,
    check_duration,
)
from qaex.core.main_contracts import cont_symbol
from qaex.core.notify_codes import NOTIFY_BAD_CHART as NOTIFY_BAD_CHART  # a bad set_chart
from qaex.core.notify_codes import NOTIFY_BAD_INSTRUMENT as NOTIFY_BAD_INSTRUMENT  # a symbol not listed
from qaex.core.quote import ContQuote, QuoteBook
from qaex.core.tick_file import traded

Patch = dict[str, Any]
AnyQuote = QuoteBook | ContQuote
SeriesKey = tuple[str, int]
"""``(symbol, duration_ns)``; duration 0 is the tick series."""

MINUTE_NS = 60 * NS_PER_SECOND
KEPT_DURATIONS_NS = (MINUTE_NS, NS_PER_DAY)
"""Series kept for every instrument from the start, so that a chart finds history at once."""

_NO_DEPTH: Depth = ([], [])


class ChartRefused(ValueError):
    """A set_chart the market cannot serve: answer with a notify of ``code`` saying ``message``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def chart_of(message: Mapping[str, Any]) -> Chart:
    """The chart a set_chart message asks for, its fields checked (the one place: the core's
    MarketState and a DIFF gateway's charts both call it): ChartRefused (:data:`NOTIFY_BAD_CHART`) for
    bad fields or a K-line duration no series can have. Whether its symbols are listed is
    :meth:`MarketState.check_listed`'s (a gateway asks the core)."""
    try:
        chart = Chart(ChartRequest.from_message(message))
        if chart.duration:
            check_duration(chart.duration)
    except (ValueError, TypeError) as exc:
        raise ChartRefused(NOTIFY_BAD_CHART, f"set_chart refused: {exc}") from exc
    return chart


@dataclass(slots=True)
class MarketChanges:
    """What changed since the previous :meth:`MarketState.take_changes`, one patch per object.

    The patches are shared by every session they go to: never mutate them.
    """

    static: Patch | None = None
    """``{"quotes": {symbol: contract fields}}`` of the instruments listed or changed, for every session."""
    quotes: list[tuple[str, Patch]] = field(default_factory=list)
    """``(symbol, quote patch)``, for the quote's subscribers."""
    series: list[tuple[SeriesKey, Patch]] = field(default_factory=list)
    """``(series key, ticks or K-lines patch)``, for the sessions charting the series."""

    def __bool__(self) -> bool:
        return self.static is not None or bool(self.quotes or self.series)


class MarketState:
    """Quotes and series of every instrument, and the changes not taken yet (see the module docstring)."""

    def __init__(
        self,
        instruments: Mapping[str, Instrument],
        *,
        history: int = DEFAULT_MAX_LEN,
        market_hours: MarketHours = "always",
        with_history: bool = False,
    ) -> None:
        """``instruments``: the registry, shared with the engine (a quote shows its instrument's current
        spec); a symbol is listed by :meth:`list_instrument` or by the first batch that names it.
        ``history``: bars (and ticks) kept per series; TqSdk never asks for more than 10,000.
        ``market_hours``: the policy, which decides the ``trading_time`` the quotes show.
        ``with_history``: contracts have a past (:meth:`attach_history`): a quote listed with no trade
        shows ``pre_close`` (history's last close) as its ``last_price``, so it is complete at once.
        """
        self.with_history = with_history
        self._history_pending: dict[str, None] = {}  # listed, history not attached yet (listing order)
        self._imported: dict[SeriesKey, BarColumns] = {}  # imported bars of a duration not kept live
        self.instruments = instruments
        self.market_hours = market_hours
        self.history = history
        self.quotes: dict[str, QuoteBook] = {}
        self.conts: dict[str, ContQuote] = {}  # main-contract series, by KQ.m@ symbol
        self.views: dict[str, AnyQuote] = {}  # every quote a session can subscribe to: both of the above
        self._cont_of: dict[str, str] = {}  # a main contract's symbol -> its series' symbol
        self.ticks: dict[str, TickSeries] = {}
        self.klines: dict[SeriesKey, KlineSeries] = {}
        self.quote_patches_built = 0
        self._durations: dict[str, list[int]] = {}  # the K-line durations kept per symbol
        self._charted: dict[SeriesKey, int] = {}  # open charts using each series
        self._dirty_quotes: set[str] = set()
        self._dirty_series: set[SeriesKey] = set()
        self._full_quotes: dict[str, Patch] = {}  # shared {"quotes": {symbol: full}} until it changes
        self._static_patch: Patch | None = None
        # Instruments listed or changed since the last take: every session gets their contract fields
        # again (subscribers get them in the quote patch as well; merging twice is harmless).
        self._static_changed: set[str] = set()
        self._last_ts = 0

    def _now(self, now_ns: int) -> int:
        """The time to stamp with: never before an earlier stamp or trade, so quote times stay ordered
        even if the caller's wall clock steps back."""
        if now_ns > self._last_ts:
            self._last_ts = now_ns
        return self._last_ts

    # -- inputs ------------------------------------------------------------------------------------
    def list_instrument(
        self,
        symbol: str,
        now_ns: int,
        *,
        last_price: float | None = None,
        open_interest: int | None = None,
        depth: Depth = _NO_DEPTH,
    ) -> QuoteBook:
        """Start the quote and the kept series of ``symbol``, at the given market state (e.g. the
        engine's after a journal replay; by default: no trade yet, the instrument's
        ``pre_open_interest``, an empty book).

        Sessions connecting later get its contract fields with :meth:`static_patch`; a listing that
        arrives in a batch also queues them for the sessions connected before.
        """
        now = self._now(now_ns)
        quote = QuoteBook(self.instruments[symbol], now_ns=now, market_hours=self.market_hours)
        if last_price is not None:
            quote.last_price = last_price
        elif self.with_history and quote.instrument.pre_close == quote.instrument.pre_close:
            quote.last_price = quote.instrument.pre_close
        if self.with_history and symbol not in self.quotes:
            self._history_pending[symbol] = None
        if open_interest is not None:
            quote.open_interest = open_interest
        self.quotes[symbol] = self.views[symbol] = quote
        cont = self._cont_of.get(symbol)
        if cont is not None:
            self.conts[cont].underlying = quote
        self.ticks[symbol] = TickSeries(symbol, self.history)
        for duration in KEPT_DURATIONS_NS:
            self.klines[(symbol, duration)] = KlineSeries(symbol, duration, self.history)
        self._durations[symbol] = list(KEPT_DURATIONS_NS)
        self._set_depth(quote, depth, now)
        quote.take_patch()  # the baseline: subscribers start from full(), then get changes only
        self._dirty_quotes.discard(symbol)
        self._static_patch = None
        return quote

    # -- history ---------------------------------------------------------------------------------
    def needs_history(self, symbol: str) -> bool:
        """Whether ``symbol`` is listed and its history is not attached yet."""
        return symbol in self._history_pending

    def is_main(self, symbol: str) -> bool:
        """Whether ``symbol`` is its product's main contract now."""
        return symbol in self._cont_of

    def pending_history(self) -> list[str]:
        """The listed symbols whose history is not attached yet, in listing order."""
        return list(self._history_pending)

    def attach_history(self, symbol: str, history: ContractHistory | None) -> None:
        """Put a contract's past bars before its live 1-minute and 1-day bars (or, with None, record that
        it has none). Call it before the series are handed out (a chart, a reader): the live bars are
        renumbered after the history (see KlineSeries.attach_history)."""
        if symbol not in self._history_pending:
            return
        del self._history_pending[symbol]
        if history is None:
            return
        for duration, bars in ((MINUTE_NS, history.minutes), (NS_PER_DAY, history.days)):
            series = self.klines.get((symbol, duration))
            if series is not None and series.attach_history(bars):
                self._dirty_series.add((symbol, duration))
        ticks, recorded = self.ticks.get(symbol), history.ticks
        if recorded is not None and ticks is not None:
            if len(recorded) > ticks.max_len:  # hold only what the series can show, not a month of ticks
                recorded = recorded.slice(len(recorded) - ticks.max_len, len(recorded))
            if ticks.attach_history(recorded):
                self._dirty_series.add((symbol, 0))
        for seconds, bars in history.others.items():
            self._imported[(symbol, seconds * NS_PER_SECOND)] = bars

    def apply(self, batch: Batch, now_ns: int) -> None:
        """Fold one engine batch into the quotes and series (changes wait for :meth:`take_changes`)."""
        now = self._now(now_ns)
        quotes = self.quotes
        for symbol in batch.instruments_changed:
            self._instrument_changed(symbol, batch.settled, now)
        for product, symbol in batch.main_contracts.items():
            self.set_main(product, symbol, now)
            self._static_changed.add(cont_symbol(product))  # sessions connected before learn of it
        for symbol, depth in batch.depth.items():
            quote = quotes.get(symbol) or self.list_instrument(symbol, now)
            self._set_depth(quote, depth, now)
        klines = self.klines
        dirty_series = self._dirty_series
        for trade in batch.market_trades:
            symbol = trade.symbol
            quote = quotes.get(symbol) or self.list_instrument(symbol, self._now(now_ns))
            self._last_ts = max(self._last_ts, trade.ts)
            quote.on_trade(trade.price, trade.volume, trade.ts, trade.open_interest)
            self.ticks[symbol].append(quote.to_tick())
            self._touch_quote(symbol)
            dirty_series.add((symbol, 0))
            for duration in self._durations[symbol]:
                klines[(symbol, duration)].on_trade(trade.price, trade.volume, trade.ts, trade.open_interest)
                dirty_series.add((symbol, duration))

    def set_main(self, product: str, symbol: str, now_ns: int) -> ContQuote:
        """Make ``symbol`` the main contract of ``product`` (``SHFE.rb``): the series ``KQ.m@SHFE.rb``
        starts, or its quote turns to the new main (its subscribers get the change). Sessions connecting
        later get its contract fields with :meth:`static_patch`; a change that arrives in a batch also
        queues them for the sessions connected before."""
        now = self._now(now_ns)
        underlying = self.quotes.get(symbol) or self.list_instrument(symbol, now)
        series = cont_symbol(product)
        cont = self.conts.get(series)
        if cont is None:
            cont = self.conts[series] = ContQuote(series, underlying)
            self.views[series] = cont
        elif cont.underlying is not underlying:
            self._cont_of.pop(cont.underlying.symbol, None)
            cont.underlying = underlying
            self._dirty_quotes.add(series)
            self._full_quotes.pop(series, None)
        else:
            return cont
        self._cont_of[symbol] = series
        self._static_patch = None
        return cont

    def advance_time(self, ts_ns: int) -> None:
        """Open gap bars up to ``ts_ns`` in every K-line series."""
        for key, series in self.klines.items():
            last_id = series.last_id
            series.on_time(ts_ns)
            if series.last_id != last_id:
                self._dirty_series.add(key)

    def next_bar_boundary(self, now_ns: int) -> int:
        """When the next bar of the shortest sub-day series opens (at most a minute after ``now_ns``:
        every instrument keeps a 1-minute series). Day series open within a minute of the day's roll."""
        return min(
            (
                series.bar_start(now_ns) + series.duration_ns
                for series in self.klines.values()
                if series.duration_ns < NS_PER_DAY
            ),
            default=now_ns + MINUTE_NS,
        )

    def _instrument_changed(self, symbol: str, settled: bool, now: int) -> None:
        quote = self.quotes.get(symbol)
        if quote is None:
            self.list_instrument(symbol, now)  # listed while running: sessions connected before learn of it
            self._static_changed.add(symbol)
            return
        if settled:
            # The engine already rolled the instrument (pre_settlement is the settlement price); the
            # book publishes it and resets its daily figures, writing back the same pre_* values (its
            # open interest is the engine's: every fill's figure reached it with the trade).
            quote.on_settle(quote.instrument.pre_settlement)
            quote.new_trading_day(now)
        # Restamp the quote (same depth), so that its next patch carries the changed spec (limits...).
        quote.on_depth(quote.bids, quote.asks, now)
        self._touch_quote(symbol)
        self._static_patch = None
        self._static_changed.add(symbol)
        cont = self._cont_of.get(symbol)
        if cont is not None:  # the series shows its main's contract fields
            self._static_changed.add(cont)

    def _set_depth(self, quote: QuoteBook, depth: Depth, now: int) -> None:
        """Show a book's depth (prices in ticks, as the batch carries it) on its quote."""
        from_ticks = quote.instrument.from_ticks
        bids, asks = depth
        quote.on_depth(
            [(from_ticks(price), volume) for price, volume in bids],
            [(from_ticks(price), volume) for price, volume in asks],
            now,
        )
        self._touch_quote(quote.symbol)

    def restamp(self, symbols: list[str], now_ns: int) -> None:
        """Stamp these quotes with the time (same depth), so that their next patch carries a new
        ``datetime``: at a session's open, for clients that re-check the hours on a quote change only
        (TqSdk's TargetPosTask)."""
        now = self._now(now_ns)
        for symbol in symbols:
            quote = self.quotes.get(symbol)
            if quote is not None:
                quote.on_depth(quote.bids, quote.asks, now)
                self._touch_quote(symbol)

    def _touch_quote(self, symbol: str) -> None:
        self._dirty_quotes.add(symbol)
        self._full_quotes.pop(symbol, None)
        cont = self._cont_of.get(symbol)
        if cont is not None:  # a main contract: its series mirrors it
            self._dirty_quotes.add(cont)
            self._full_quotes.pop(cont, None)

    # -- output ------------------------------------------------------------------------------------
    def take_changes(self) -> MarketChanges:
        """One patch per quote and series changed since the previous take, and the contract fields of
        the instruments listed or changed; objects whose fields ended where they were give none."""
        changes = MarketChanges()
        if self._static_changed:
            views = self.views
            changes.static = {"quotes": {s: views[s].static_fields() for s in sorted(self._static_changed)}}
            self._static_changed.clear()
        quotes = self.quotes
        conts: list[str] = []
        for symbol in self._dirty_quotes:
            quote = quotes.get(symbol)
            if quote is None:
                conts.append(symbol)
                continue
            patch = quote.take_patch()
            if patch is not None:
                self.quote_patches_built += 1
                changes.quotes.append((symbol, patch))
        for symbol in sorted(conts):  # after their mains: a series reuses its main's fields
            patch = self.conts[symbol].take_patch()
            if patch is not None:
                changes.quotes.append((symbol, patch))
        self._dirty_quotes.clear()
        for key in self._dirty_series:
            series = self.series(*key)
            if series is None:
                continue
            patch = series.take_patch()
            if patch is not None:
                changes.series.append((key, patch))
        self._dirty_series.clear()
        return changes

    def static_patch(self) -> Patch:
        """The contract fields of every instrument, one shared patch rebuilt only when a spec changes."""
        if self._static_patch is None:
            self._static_patch = {
                "quotes": {symbol: quote.static_fields() for symbol, quote in self.views.items()}
            }
        return self._static_patch

    def full_quote(self, symbol: str) -> Patch:
        """``{"quotes": {symbol: every field}}``, one shared dict until the quote changes."""
        patch = self._full_quotes.get(symbol)
        if patch is None:
            patch = self._full_quotes[symbol] = {"quotes": {symbol: self.views[symbol].full()}}
        return patch

    def series(self, symbol: str, duration_ns: int) -> KlineSeries | TickSeries | None:
        """A series that exists (``duration_ns`` 0: the ticks), or None."""
        return self.ticks.get(symbol) if duration_ns == 0 else self.klines.get((symbol, duration_ns))

    def lookup(self, symbol: str, duration_ns: int) -> SeriesView:
        """:meth:`series` as a chart looks series up (``SeriesLookup``): KeyError if it does not exist."""
        series = self.series(symbol, duration_ns)
        if series is None:
            raise KeyError(f"no series {symbol} {duration_ns}")
        return series

    # -- charts ------------------------------------------------------------------------------------
    def open_chart(self, message: Mapping[str, Any], now_ns: int) -> Chart:
        """The chart a set_chart message asks for, with every series it needs started.

        A K-line series not kept yet is created, filled from history (see :meth:`kline_history`),
        and kept until the last chart using it is closed. Raises :class:`ChartRefused`: bad fields or a
        duration TqSdk refuses (over a day but not whole days) with :data:`NOTIFY_BAD_CHART`
        (:func:`chart_of`), a symbol not listed with :data:`NOTIFY_BAD_INSTRUMENT`.
        """
        chart = chart_of(message)
        self.check_listed(chart.symbols)
        for key in chart.series_keys():  # cannot fail now: fields and symbols are checked
            self.hold(key, now_ns)
        return chart

    def check_listed(self, symbols: list[str]) -> None:
        """ChartRefused (:data:`NOTIFY_BAD_INSTRUMENT`) unless every symbol has series (main-contract
        series ``KQ.m@`` have none)."""
        unknown = [symbol for symbol in symbols if symbol not in self.quotes]
        if unknown:
            raise ChartRefused(NOTIFY_BAD_INSTRUMENT, f"set_chart: 不支持的合约代码: {', '.join(unknown)}")

    def hold(self, key: SeriesKey, now_ns: int) -> None:
        """Keep a series (a chart's, or one a DIFF gateway mirrors): start it if it is not kept yet
        (filled from history), until as many :meth:`release` calls. ChartRefused as :meth:`open_chart`."""
        symbol, duration = key
        self.check_listed([symbol])
        if duration and key not in self.klines:
            try:
                check_duration(duration)
            except ValueError as exc:
                raise ChartRefused(NOTIFY_BAD_CHART, f"set_chart refused: {exc}") from exc
            self.klines[key] = self._backfilled(symbol, duration, self._now(now_ns))
            self._durations[symbol].append(duration)
        self._charted[key] = self._charted.get(key, 0) + 1

    def release(self, key: SeriesKey) -> None:
        """One :meth:`hold` ends: a series no longer held by anyone, and not kept, is dropped."""
        self._release(key)

    def close_chart(self, chart: Chart) -> None:
        """A chart from :meth:`open_chart` is gone: drop the series no open chart uses and none keeps."""
        for key in chart.series_keys():
            self._release(key)

    def chart_patch(self, chart: Chart) -> Patch:
        """The chart's complete answer: ``ready``, its window and the window's bars (Chart.initial_patch)."""
        return chart.initial_patch(self.lookup)

    def chart_moves(self, chart: Chart) -> Patch | None:
        """The chart's window moves and new bindings since its last patch (Chart.update_patch), or None.
        Send it after the series' patches, so that a window never points past the bars."""
        return chart.update_patch(self.lookup)

    def _release(self, key: SeriesKey) -> None:
        count = self._charted.get(key, 0) - 1
        if count > 0:
            self._charted[key] = count
            return
        self._charted.pop(key, None)
        symbol, duration = key
        if duration and duration not in KEPT_DURATIONS_NS and key in self.klines:
            del self.klines[key]
            self._durations[symbol].remove(duration)
            self._dirty_series.discard(key)

    # -- history -----------------------------------------------------------------------------------
    def kline_history(self, symbol: str, duration_ns: int, now_ns: int) -> KlineSeries:
        """The K-lines of any duration: the series if it exists, else one built from history and not
        kept. ValueError for a duration TqSdk would refuse (over a day but not whole days)."""
        series = self.klines.get((symbol, duration_ns))
        return series if series is not None else self._backfilled(symbol, duration_ns, self._now(now_ns))

    def _backfilled(self, symbol: str, duration: int, now: int) -> KlineSeries:
        """A new series of ``duration``, filled from the kept history so that a chart has bars at once:
        from the 1-day bars for whole days, the 1-minute bars for whole minutes, else from the ticks;
        gap bars up to ``now``. Bars imported for this duration (``history.others``) come first, and
        only what starts after them is built. Its next patch carries only what changes after this."""
        series = KlineSeries(symbol, duration, self.history)
        imported = self._imported.get((symbol, duration))
        after = -1  # bars starting at or before this come from an import of this duration
        if imported is not None and series.attach_history(imported):
            after = imported.datetime[len(imported) - 1]
        if duration % NS_PER_DAY == 0:
            kept: KlineSeries | None = self.klines[(symbol, NS_PER_DAY)]
        elif duration % MINUTE_NS == 0:
            kept = self.klines[(symbol, MINUTE_NS)]
        else:
            kept = None
        if kept is not None:
            # Bar by bar: no flat bars where the source has none (session breaks in history).
            bars = [bar for bar in _bars(kept) if series.bar_start(bar["datetime"]) > after]
            if bars:
                series.fill_from(bars, resuming=kept.resuming)
        else:
            ticks = self.ticks[symbol]
            previous_volume = 0
            for tick_id in range(ticks.first_id, ticks.last_id + 1):
                tick = ticks.get(tick_id)
                assert tick is not None
                volume = tick["volume"]
                lots = traded(previous_volume, volume)
                previous_volume = volume
                if tick["last_price"] != tick["last_price"] or series.bar_start(tick["datetime"]) <= after:
                    continue  # no price (an imported tick), or within the imported bars
                series.on_trade(tick["last_price"], lots, tick["datetime"], tick["open_interest"])
        series.on_time(now)
        series.take_patch()  # a chart's initial patch carries these bars; later patches only news
        return series


def _bars(series: KlineSeries) -> list[dict[str, Any]]:
    return list(series.window(series.first_id, series.last_id).values())
