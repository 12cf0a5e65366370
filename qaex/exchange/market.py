"""MarketData: quotes, ticks and K-lines of every instrument, routed to the DIFF sessions that asked.

The service owns one :class:`~qaex.core.quote.QuoteBook` and one :class:`~qaex.core.kline.TickSeries`
per instrument, a 1-minute and a 1-day :class:`~qaex.core.kline.KlineSeries` per instrument (always, so
that history exists when a chart asks), and further K-line series on demand while a chart uses them.
It is fed two ways:

* the TradeGateway sends every engine batch with market effects over :attr:`MarketData.batches`
  (trades, depth changes, instrument changes, settlement);
* a bar timer wakes at every bar boundary of the shortest series, so charts advance with no trades.

After a run of batches (as many as are waiting) or a timer tick, :meth:`MarketData.publish` takes one
patch from each changed object and pushes **that same dict** to every session that subscribed to it:
a quote that changed 1,000 times since the last publish costs one patch build, whatever the number of
subscribers, and each session's PendingPatches coalesces what it has not sent yet. Patches are never
mutated after they were pushed (sessions share them).

Who sees what:

* every session gets the static contract fields of every instrument when it connects (TqSdk waits for
  ``price_tick > 0`` before it subscribes; see docs/market-data.md) - one shared patch;
* ``subscribe_quote``: the full quote of each newly subscribed symbol, then the shared quote patches;
* ``set_chart``: the chart's initial patch (bars with ``ready: true`` in the same rtn_data), then the
  shared patches of its series and the chart's own window moves.

Clock: bars and quote times need epoch nanoseconds, so the service takes a ``clock`` (default
``time.time_ns``); the timer sleeps with ``trio.sleep`` until the next boundary of that clock, so tests
drive it with trio's MockClock and a clock derived from ``trio.current_time()``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import Any

import msgspec
import trio

from qaex.core.chart import Chart, ChartRequest, SeriesView
from qaex.core.engine import Batch, Engine
from qaex.core.kline import DEFAULT_MAX_LEN, NS_PER_DAY, NS_PER_SECOND, KlineSeries, TickSeries
from qaex.core.quote import QuoteBook
from qaex.exchange.snapshot import SessionLink

log = logging.getLogger("qaex.market")

Patch = dict[str, Any]
SeriesKey = tuple[str, int]
"""``(symbol, duration_ns)``; duration 0 is the tick series."""

DEPTH_LEVELS = 5
MINUTE_NS = 60 * NS_PER_SECOND
KEPT_DURATIONS_NS = (MINUTE_NS, NS_PER_DAY)
"""Series kept for every instrument from the start, so that a chart finds history at once."""

WAKE_STEP = 4
"""Writers a publish wakes between two pauses (see MarketData.wake_in_steps)."""
SPREAD = 0.4
"""A publish wakes its subscribers over at most this fraction of the publish interval."""
MIN_PAUSE = 0.0002
"""Shorter pauses are not worth a timer: a checkpoint instead."""

NOTIFY_BAD_INSTRUMENT = 409
NOTIFY_BAD_CHART = 490


class MarketData:
    """The market-data service (see the module docstring). Single task: nothing here needs locks."""

    def __init__(
        self,
        engine: Engine,
        *,
        clock: Callable[[], int] = time.time_ns,
        history: int = DEFAULT_MAX_LEN,
        channel_size: int = 4096,
        publish_interval: float = 0.0,
    ) -> None:
        """``history``: bars (and ticks) kept per series; TqSdk never asks for more than 10,000.

        ``publish_interval``: the shortest time between two publishes. Every publish costs one
        rtn_data per subscribed session, so under load a short pause that lets more batches
        coalesce into one publish bounds the fan-out cost (``QAEX_QUOTE_INTERVAL``); every change
        still reaches every subscriber, at most that much later.
        """
        self.engine = engine
        self.publish_interval = publish_interval
        self._rotation = 0
        self._last_publish = -math.inf
        self._clock = clock
        self.history = history
        self.batches, self._receive = trio.open_memory_channel[Batch](channel_size)
        self.quotes: dict[str, QuoteBook] = {}
        self.ticks: dict[str, TickSeries] = {}
        self.klines: dict[SeriesKey, KlineSeries] = {}
        self._durations: dict[str, list[int]] = {}  # K-line durations kept per symbol
        self._links: set[SessionLink] = set()
        self._quote_links: dict[str, set[SessionLink]] = {}
        self._subscribed: dict[SessionLink, set[str]] = {}
        self._charts: dict[SessionLink, dict[str, Chart]] = {}
        self._chart_messages: dict[SessionLink, dict[str, Any]] = {}  # the SetChart each chart was built from
        self._feeds: dict[SeriesKey, dict[SessionLink, list[Chart]]] = {}  # charts per series, per session
        self._dirty_quotes: set[str] = set()
        self._dirty_series: set[SeriesKey] = set()
        self._full_quotes: dict[str, Patch] = {}  # shared {"quotes": {symbol: full}} until it changes
        self._static_patch: Patch | None = None
        # Instruments listed or changed since the last publish: every session gets their contract
        # fields again (subscribers get them in the quote patch as well; merging twice is harmless).
        self._static_changed: set[str] = set()
        self._last_ts = 0
        self.quote_patches_built = 0
        self.series_patches_built = 0
        for symbol in engine.instruments:
            self._list(symbol)

    # -- the service -------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._bar_timer, name="market:bar-timer")
            task_status.started()
            log.info("market data ready: %d instruments", len(self.quotes))
            async with self._receive:
                async for batch in self._receive:
                    self.apply(batch)
                    # Until the next publish is due, fold each batch in as it comes: one short step
                    # per batch, rather than half a second of them in one step before the publish
                    # (which held up everything else on the loop for several milliseconds).
                    with trio.move_on_at(self._last_publish + self.publish_interval):
                        async for batch in self._receive:
                            self.apply(batch)
                    while True:  # and whatever is still waiting now
                        try:
                            self.apply(self._receive.receive_nowait())
                        except (trio.WouldBlock, trio.EndOfChannel):
                            break
                    started = trio.current_time()
                    await self.publish_in_steps()
                    # The interval runs from start to start while the wake-ups fit in SPREAD of it;
                    # when they take longer (thousands of subscribers) it keeps a gap of the rest
                    # after them, so that quote frames never crowd out the trading path.
                    ended = trio.current_time()
                    self._last_publish = max(started, ended - SPREAD * self.publish_interval)

    async def _bar_timer(self) -> None:
        """Open bars on time: sleep to the next boundary of the shortest sub-day series, then advance.

        The 1-minute series always exists, so the timer wakes at least once a minute; day series are
        advanced on those wake-ups too (they open within a minute of the trading-day roll).
        """
        while True:
            now = self._clock()
            boundary = min(
                (
                    series.bar_start(now) + series.duration_ns
                    for series in self.klines.values()
                    if series.duration_ns < NS_PER_DAY
                ),
                default=now + MINUTE_NS,
            )
            await trio.sleep(max(boundary - now, 1) / NS_PER_SECOND)
            self.advance_time(self._clock())
            await self.publish_in_steps()

    def now(self) -> int:
        """The clock, never going backwards (quote times stay ordered even if the wall clock steps back)."""
        self._last_ts = max(self._last_ts, self._clock())
        return self._last_ts

    # -- inputs ------------------------------------------------------------------------------------
    def apply(self, batch: Batch) -> None:
        """Fold one engine batch into the quotes and series (nothing is pushed until :meth:`publish`)."""
        for symbol in batch.instruments:
            self._instrument_changed(symbol, batch.settled)
        for symbol in batch.books:
            self._depth_changed(symbol)
        for trade in batch.market_trades:
            quote = self.quotes.get(trade.symbol) or self._list(trade.symbol)
            self._last_ts = max(self._last_ts, trade.ts)
            quote.on_trade(trade.price, trade.volume, trade.ts, trade.open_interest)
            self.ticks[trade.symbol].append(quote.to_tick())
            self._touch_quote(trade.symbol)
            self._dirty_series.add((trade.symbol, 0))
            for duration in self._durations_of(trade.symbol):
                self.klines[(trade.symbol, duration)].on_trade(
                    trade.price, trade.volume, trade.ts, trade.open_interest
                )
                self._dirty_series.add((trade.symbol, duration))

    def advance_time(self, ts_ns: int) -> None:
        """Open gap bars up to ``ts_ns`` in every K-line series (the bar timer calls this)."""
        for key, series in self.klines.items():
            last_id = series.last_id
            series.on_time(ts_ns)
            if series.last_id != last_id:
                self._dirty_series.add(key)

    def _list(self, symbol: str) -> QuoteBook:
        """Start the quote and the kept series of an instrument, from the engine's current state."""
        engine = self.engine
        quote = QuoteBook(engine.instruments[symbol], now_ns=self.now())
        last_price = engine.last_price.get(symbol)
        if last_price is not None:  # e.g. rebuilt by a journal replay before the service started
            quote.last_price = last_price
        quote.open_interest = engine.open_interest.get(symbol, quote.open_interest)
        self.quotes[symbol] = quote
        self.ticks[symbol] = TickSeries(symbol, self.history)
        for duration in KEPT_DURATIONS_NS:
            self.klines[(symbol, duration)] = KlineSeries(symbol, duration, self.history)
        self._durations[symbol] = list(KEPT_DURATIONS_NS)
        self._depth_changed(symbol)
        quote.take_patch()  # the baseline: subscribers start from full(), then get changes only
        self._dirty_quotes.discard(symbol)
        self._static_patch = None
        return quote

    def _instrument_changed(self, symbol: str, settled: bool) -> None:
        quote = self.quotes.get(symbol)
        if quote is None:
            self._list(symbol)  # listed while running: sessions connected before must learn of it
            self._static_changed.add(symbol)
            return
        if settled:
            # The engine already rolled the instrument (pre_settlement is the settlement price); the
            # book publishes it and resets its daily figures, writing back the same pre_* values.
            quote.open_interest = self.engine.open_interest.get(symbol, quote.open_interest)
            quote.on_settle(quote.instrument.pre_settlement)
            quote.new_trading_day(self.now())
        self._depth_changed(symbol)  # restamps the quote, so a spec change (limits...) is re-sent
        self._static_patch = None
        self._static_changed.add(symbol)

    def _depth_changed(self, symbol: str) -> None:
        instrument = self.engine.instruments[symbol]
        bids, asks = self.engine.books[symbol].depth(DEPTH_LEVELS)
        self.quotes[symbol].on_depth(
            [(instrument.from_ticks(price), volume) for price, volume in bids],
            [(instrument.from_ticks(price), volume) for price, volume in asks],
            self.now(),
        )
        self._touch_quote(symbol)

    def _touch_quote(self, symbol: str) -> None:
        self._dirty_quotes.add(symbol)
        self._full_quotes.pop(symbol, None)

    def _durations_of(self, symbol: str) -> Iterable[int]:
        return self._durations.get(symbol, ())

    # -- output ------------------------------------------------------------------------------------
    def publish(self) -> None:
        """Push one shared patch per changed quote and series to its subscribers, then chart moves."""
        for link in self._push_changes():
            link.wake()

    async def publish_in_steps(self) -> None:
        """:meth:`publish`, waking the writers with :meth:`wake_in_steps`."""
        await self.wake_in_steps(self._push_changes())

    async def wake_in_steps(self, links: list[SessionLink]) -> None:
        """Wake these sessions' writers :data:`WAKE_STEP` at a time, spread over part of the interval.

        A publish may wake a thousand writers, and each then encodes and sends a frame. Woken all
        together they form one long scheduler batch, and an order's acknowledgement that becomes
        ready meanwhile waits behind the whole burst (that was the P99 of order latency). Woken a few
        at a time, with a pause between, spread over at most :data:`SPREAD` of the publish interval,
        the trading path runs in between. Each publish starts at another place in the list, so that
        no session is always the last to hear.
        """
        if not links:
            return
        self._rotation = (self._rotation + int(len(links) * 0.618) + 1) % len(links)
        links = links[self._rotation :] + links[: self._rotation]
        steps = -(-len(links) // WAKE_STEP)
        pause = SPREAD * self.publish_interval / steps
        for start in range(0, len(links), WAKE_STEP):
            if start:  # a pause between two steps, none after the last
                if pause >= MIN_PAUSE:
                    await trio.sleep(pause)
                else:
                    await trio.lowlevel.checkpoint()
            for link in links[start : start + WAKE_STEP]:
                link.wake()
        await trio.lowlevel.checkpoint()

    def _push_changes(self) -> list[SessionLink]:
        """Push the changes since the last publish into the sessions; returns the sessions to wake."""
        woken: dict[SessionLink, None] = {}
        if self._static_changed:
            static = {"quotes": {s: self.quotes[s].static_fields() for s in sorted(self._static_changed)}}
            self._static_changed.clear()
            for link in self._links:
                link.session.push(static)
                woken[link] = None
        for symbol in self._dirty_quotes:
            patch = self.quotes[symbol].take_patch()
            if patch is None:
                continue
            self.quote_patches_built += 1
            for link in self._quote_links.get(symbol, ()):
                link.session.push(patch)
                woken[link] = None
        self._dirty_quotes.clear()
        moved: list[tuple[SessionLink, Chart]] = []
        seen: set[int] = set()
        for key in self._dirty_series:
            series = self._series(key)
            if series is None:
                continue
            patch = series.take_patch()
            if patch is None:
                continue
            self.series_patches_built += 1
            for link, charts in self._feeds.get(key, {}).items():
                link.session.push(patch)
                woken[link] = None
                for chart in charts:
                    if id(chart) not in seen:
                        seen.add(id(chart))
                        moved.append((link, chart))
        self._dirty_series.clear()
        for link, chart in moved:  # after the bars, so that a window never points past them
            update = chart.update_patch(self._lookup)
            if update is not None:
                link.session.push(update)
        return list(woken)

    def _series(self, key: SeriesKey) -> KlineSeries | TickSeries | None:
        symbol, duration = key
        return self.ticks.get(symbol) if duration == 0 else self.klines.get(key)

    def _lookup(self, symbol: str, duration: int) -> SeriesView:
        series = self._series((symbol, duration))
        if series is None:
            raise KeyError(f"no series {symbol} {duration}")
        return series

    def static_patch(self) -> Patch:
        """The contract fields of every instrument, one shared patch rebuilt only when a spec changes."""
        if self._static_patch is None:
            self._static_patch = {
                "quotes": {symbol: quote.static_fields() for symbol, quote in self.quotes.items()}
            }
        return self._static_patch

    def full_quote(self, symbol: str) -> Patch:
        """``{"quotes": {symbol: every field}}``, shared by every session subscribing before it changes."""
        patch = self._full_quotes.get(symbol)
        if patch is None:
            patch = self._full_quotes[symbol] = {"quotes": {symbol: self.quotes[symbol].full()}}
        return patch

    # -- sessions (called by the DIFF server) --------------------------------------------------------
    def add_session(self, link: SessionLink) -> None:
        """A new connection: it gets the static fields of every instrument in its first rtn_data."""
        self._links.add(link)
        link.session.push(self.static_patch())
        link.wake()

    def remove_session(self, link: SessionLink) -> None:
        self._links.discard(link)
        for symbol in self._subscribed.pop(link, set()):
            self._quote_links[symbol].discard(link)
        for chart in self._charts.pop(link, {}).values():
            self._unfeed(link, chart)
        self._chart_messages.pop(link, None)

    def subscription_changed(self, link: SessionLink) -> None:
        """After a subscribe_quote or set_chart: start and stop feeds to match the session's state."""
        session = link.session
        self._update_quotes(link, session.ins_list)
        self._update_charts(link, session.charts)
        link.wake()

    def _update_quotes(self, link: SessionLink, ins_list: list[str]) -> None:
        before = self._subscribed.get(link, set())
        wanted = set(ins_list)
        unknown = sorted(symbol for symbol in wanted - before if symbol not in self.quotes)
        if unknown:
            link.session.notify(NOTIFY_BAD_INSTRUMENT, "ERROR", f"不支持的合约代码: {', '.join(unknown)}")
        now = {symbol for symbol in wanted if symbol in self.quotes}
        for symbol in before - now:
            self._quote_links[symbol].discard(link)
        for symbol in ins_list:
            if symbol in now and symbol not in before:
                self._quote_links.setdefault(symbol, set()).add(link)
                link.session.push(self.full_quote(symbol))
        if now:
            self._subscribed[link] = now
        else:
            self._subscribed.pop(link, None)

    def _update_charts(self, link: SessionLink, messages: dict[str, Any]) -> None:
        charts = self._charts.setdefault(link, {})
        built = self._chart_messages.setdefault(link, {})
        for chart_id in [chart_id for chart_id in charts if chart_id not in messages]:
            self._unfeed(link, charts.pop(chart_id))  # deleted: the session already queued charts/{id}: null
            built.pop(chart_id, None)
        for chart_id, message in list(messages.items()):
            if built.get(chart_id) is message:
                continue
            old = charts.pop(chart_id, None)
            built.pop(chart_id, None)
            if old is not None:
                self._unfeed(link, old)
            chart = self._build_chart(link, message)
            if chart is None:
                del messages[chart_id]  # refused: not part of this session's view any more
                continue
            charts[chart_id] = chart
            built[chart_id] = message
            # Before the push: a 10,000-bar answer must fit the session's pending bound.
            link.session.view_size = max(link.session.view_size, self._view_size(link))
            link.session.push(chart.initial_patch(self._lookup))
        if not charts:
            self._charts.pop(link, None)
            self._chart_messages.pop(link, None)

    def _build_chart(self, link: SessionLink, message: Any) -> Chart | None:
        try:
            request = ChartRequest.from_message(msgspec.structs.asdict(message))
            chart = Chart(request)
        except (ValueError, TypeError) as exc:
            link.session.notify(NOTIFY_BAD_CHART, "ERROR", f"set_chart refused: {exc}")
            return None
        unknown = [symbol for symbol in chart.symbols if symbol not in self.quotes]
        if unknown:
            link.session.notify(
                NOTIFY_BAD_INSTRUMENT, "ERROR", f"set_chart: 不支持的合约代码: {', '.join(unknown)}"
            )
            return None
        try:
            for key in chart.series_keys():
                self._feeds.setdefault(key, {}).setdefault(link, []).append(chart)
                if key[1] and key not in self.klines:
                    self.klines[key] = self._backfilled(*key)
                    self._durations[key[0]].append(key[1])
        except ValueError as exc:  # a duration KlineSeries refuses (over a day but not whole days)
            self._unfeed(link, chart)
            link.session.notify(NOTIFY_BAD_CHART, "ERROR", f"set_chart refused: {exc}")
            return None
        return chart

    def _unfeed(self, link: SessionLink, chart: Chart) -> None:
        """Stop feeding ``chart``; drop an on-demand series nobody charts any more."""
        for key in chart.series_keys():
            feeds = self._feeds.get(key)
            if feeds is None:
                continue
            charts = feeds.get(link, [])
            if chart in charts:
                charts.remove(chart)
            if not charts:
                feeds.pop(link, None)
            if not feeds:
                del self._feeds[key]
                if key[1] and key[1] not in KEPT_DURATIONS_NS and key in self.klines:
                    del self.klines[key]
                    self._durations[key[0]].remove(key[1])
                    self._dirty_series.discard(key)

    def _backfilled(self, symbol: str, duration: int) -> KlineSeries:
        """A new series of ``duration``, filled from the kept history so that a chart has bars at once:
        from the 1-day bars for whole days, the 1-minute bars for whole minutes, else from the ticks."""
        series = KlineSeries(symbol, duration, self.history)
        if duration % NS_PER_DAY == 0:
            source: list[dict[str, Any]] | None = _bars(self.klines[(symbol, NS_PER_DAY)])
        elif duration % MINUTE_NS == 0:
            source = _bars(self.klines[(symbol, MINUTE_NS)])
        else:
            source = None
        if source is not None:
            for bar in source:
                ts = bar["datetime"]
                series.on_trade(bar["open"], bar["volume"], ts, bar["open_oi"])
                for price in (bar["high"], bar["low"], bar["close"]):
                    series.on_trade(price, 0, ts, bar["close_oi"])
        else:
            ticks = self.ticks[symbol]
            previous_volume = 0
            for tick_id in range(ticks.first_id, ticks.last_id + 1):
                tick = ticks.get(tick_id)
                assert tick is not None
                volume = tick["volume"]
                traded = volume - previous_volume if volume >= previous_volume else volume  # new day: reset
                previous_volume = volume
                series.on_trade(tick["last_price"], traded, tick["datetime"], tick["open_interest"])
        series.on_time(self.now())
        series.take_patch()  # the chart's initial patch carries these bars; later patches only news
        return series

    # -- views -------------------------------------------------------------------------------------
    def full_view(self, link: SessionLink) -> list[Patch]:
        """Everything market data this session should hold, for a resync (DiffSession.reset)."""
        view = [self.static_patch()]
        view.extend(self.full_quote(symbol) for symbol in sorted(self._subscribed.get(link, ())))
        view.extend(chart.initial_patch(self._lookup) for chart in self._charts.get(link, {}).values())
        return view

    def _view_size(self, link: SessionLink) -> int:
        """Rough size in keys of :meth:`full_view`, so the session's pending bound fits a chart answer."""
        size = 25 * len(self.quotes) + 70 * len(self._subscribed.get(link, ()))
        for chart in self._charts.get(link, {}).values():
            size += 20 + 12 * chart.view_width * len(chart.symbols)
        return size

    def quote_view(self, symbol: str) -> Patch:
        """The current full quote of ``symbol`` (KeyError if unknown), for the HTTP API."""
        return self.quotes[symbol].full()

    def series(self, symbol: str, duration_ns: int) -> KlineSeries | TickSeries | None:
        """A kept series (``duration_ns`` 0: ticks), or None; for the HTTP API."""
        return self._series((symbol, duration_ns))

    def kline_history(self, symbol: str, duration_ns: int) -> KlineSeries:
        """The K-lines of any duration: the kept series if there is one, else one built from history
        (not kept). ValueError for a duration TqSdk would refuse (over a day but not whole days)."""
        series = self.klines.get((symbol, duration_ns))
        return series if series is not None else self._backfilled(symbol, duration_ns)


def _bars(series: KlineSeries) -> list[dict[str, Any]]:
    return list(series.window(series.first_id, series.last_id).values())
