"""MarketData: the trio service that feeds the market core and routes its patches to DIFF sessions.

The market itself - quotes, ticks, K-lines, the fold of each engine batch, the patches, chart windows -
is :class:`qaex.core.market.MarketState`, sans-IO (the same split as Engine and OrderRouter). This
service holds what needs trio or knows sessions:

* inputs: the TradeGateway sends every engine batch with market effects over :attr:`MarketData.batches`
  (trades, changed books with their depth, instrument changes, settlement); a bar timer wakes at every
  bar boundary of the shortest series, so charts advance with no trades;
* subscriptions: which session wants which quote; the charts of each session, and which sessions'
  charts each series feeds, are :class:`qaex.exchange.chart_feeds.ChartFeeds`' (shared with a DIFF
  gateway's charts), with this service as its chart source;
* pacing: after a run of batches (as many as are waiting, at most one publish per
  ``publish_interval``) or a timer tick, :meth:`MarketData.publish` takes the state's changes and pushes
  **each patch** to every session subscribed to its object as one
  :class:`~qaex.protocol.diff.SharedPatch` - one patch build and at most one JSON encoding per change
  batch, whatever the number of subscribers (``DiffSession.push_shared``: a session with nothing
  else pending sends the encoded bytes; one with data of its own merges the patch in). The writers
  are woken a few per scheduler pass (:meth:`MarketData.wake_in_steps`, qaex.exchange.pacing).

Who sees what:

* every session gets the static contract fields of every instrument when it connects (TqSdk waits for
  ``price_tick > 0`` before it subscribes; see docs/market-data.md) - one shared patch;
* ``subscribe_quote``: the full quote of each newly subscribed symbol, then the shared quote patches;
* ``set_chart``: the chart's initial patch (bars with ``ready: true`` in the same rtn_data), then the
  shared patches of its series and the chart's own window moves.

Clock: bars and quote times need epoch nanoseconds, so the service takes a ``clock`` (default
``time.time_ns``) and passes its readings to the state; the timer sleeps with ``trio.sleep`` until the
next boundary of that clock, so tests drive it with trio's MockClock and a clock derived from
``trio.current_time()``.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import trio

from qaex.core.calendar import default_holiday_calendar, next_opening, trading_day_of
from qaex.core.chart import Chart
from qaex.core.engine import Batch, Engine
from qaex.core.history import ContractHistory, HistorySpec
from qaex.core.kline import DEFAULT_MAX_LEN, NS_PER_SECOND, KlineSeries, TickSeries
from qaex.core.market import MarketState, SeriesKey
from qaex.core.notify_codes import NOTIFY_BAD_INSTRUMENT
from qaex.core.quote import DEPTH_LEVELS, QuoteBook
from qaex.exchange.chart_feeds import ChartFeeds
from qaex.exchange.history import HistoryStore, ImportRefused, check_import, store_imported
from qaex.exchange.live_bars import LiveBarKeeper, LiveBarStore
from qaex.exchange.pacing import WakePacer
from qaex.exchange.snapshot import SessionLink
from qaex.protocol.diff import SharedPatch, market_patch

log = logging.getLogger("qaex.market")

Patch = dict[str, Any]

WAKE_STEP = 4
"""Writers a publish wakes between two pauses (see MarketData.wake_in_steps)."""
PUSH_STEP = 1024
"""Quote patches a publish pushes into sessions in one step (about 0.5 ms; see MarketData._pushes)."""
HISTORY_START_DELAY = 1.0
"""Seconds after the start before the background history build begins (the listing comes first)."""
HISTORY_PAUSE = 0.1
"""Seconds between two contracts of the background history build."""
HISTORY_POLL = 5.0
"""Seconds between two looks for contracts listed since (each gets its history)."""
SPREAD = 0.4
"""A publish wakes its subscribers over at most this fraction of the publish interval."""


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
        history_store: HistoryStore | None = None,
        live_bars: LiveBarStore | None = None,
    ) -> None:
        """``engine``: the state the market starts from (e.g. rebuilt by a journal replay). Its last
        prices, open interest and books are read here, and only here: every later change arrives in
        a batch. Its instrument registry is shared with the state (a quote shows its instrument's
        current spec, and a symbol listed later is looked up there).

        ``history``: bars (and ticks) kept per series; TqSdk never asks for more than 10,000.

        ``publish_interval``: the shortest time between two publishes. Every publish costs one
        rtn_data per subscribed session, so under load a short pause that lets more batches
        coalesce into one publish bounds the fan-out cost (``QAEX_QUOTE_INTERVAL``); every change
        still reaches every subscriber, at most that much later.

        ``history_store``: the kept market history (:mod:`qaex.exchange.history`). With one, every
        listed contract gets its past bars: built (or loaded) in the background after the start, one
        contract at a time in a worker thread, and at once (in a worker thread too, the client waiting)
        for a contract a client asks for first (:meth:`ensure_history`).

        ``live_bars``: with a history store, the live 1-minute and 1-day bars kept across a restart
        (:mod:`qaex.exchange.live_bars`): joined onto each contract's history when it is attached, and
        written by a task of this service from then on.
        """
        self.history_store = history_store
        self._engine = engine  # for its trading day only, when a contract's history is built
        self.publish_interval = publish_interval
        self._rotation = 0
        self._loading: dict[str, trio.Event] = {}  # symbol -> set when its history load (a thread) ends
        self._importing = trio.Lock()  # one history import at a time (its files replaced all or nothing)
        self._pacer = WakePacer[SessionLink](WAKE_STEP)
        self._last_publish = -math.inf
        self._clock = clock
        self.batches, self._receive = trio.open_memory_channel[Batch](channel_size)
        self.state = MarketState(
            engine.instruments,
            history=history,
            market_hours=engine.market_hours,
            with_history=history_store is not None,
        )
        now = clock()
        for symbol in engine.instruments:
            self.state.list_instrument(
                symbol,
                now,
                last_price=engine.last_price.get(symbol),
                open_interest=engine.open_interest.get(symbol),
                depth=engine.books[symbol].depth(DEPTH_LEVELS),
            )
        for product, main in engine.main_contracts.items():
            self.state.set_main(product, main, now)
        self._links: set[SessionLink] = set()
        self._quote_links: dict[str, set[SessionLink]] = {}
        self._subscribed: dict[SessionLink, set[str]] = {}
        self.charts = ChartFeeds(self, self._view_size)  # the sessions' charts (qaex.exchange.chart_feeds)
        # (the state's static patch, as DIFF sends it), and likewise for each full quote
        self._wire_static: tuple[Patch, SharedPatch] | None = None
        self._wire_quotes: dict[str, tuple[Patch, SharedPatch]] = {}
        # A core with a broker (qaex.exchange.broker_core): every changed quote's patch, as DIFF sends it.
        self.on_quote: Callable[[str, Patch], None] | None = None
        self.on_static: Callable[[Patch], None] | None = None  # ... and every change of contract fields
        self.on_series: Callable[[SeriesKey, Patch], None] | None = None  # ... and of every series
        self.live_bars = live_bars if history_store is not None else None
        self.keeper = (
            LiveBarKeeper(self.live_bars, self.state, clock=clock) if self.live_bars is not None else None
        )

    @property
    def quotes(self) -> dict[str, QuoteBook]:
        """The quote of every instrument (the state's)."""
        return self.state.quotes

    @property
    def ticks(self) -> dict[str, TickSeries]:
        return self.state.ticks

    @property
    def klines(self) -> dict[SeriesKey, KlineSeries]:
        """Every K-line series that exists: the kept ones and those a chart uses."""
        return self.state.klines

    @property
    def quote_patches_built(self) -> int:
        return self.state.quote_patches_built

    # -- the service -------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._bar_timer, name="market:bar-timer")
            if self.state.market_hours == "exchange":
                nursery.start_soon(self._session_timer, name="market:session-timer")
            if self.history_store is not None:
                nursery.start_soon(self._history_builder, name="market:history")
            if self.keeper is not None:
                await nursery.start(self.keeper.run, name="market:live-bars")
            task_status.started()
            log.info("market data ready: %d instruments", len(self.state.quotes))
            async with self._receive:
                async for batch in self._receive:
                    self.apply(batch)
                    # Until the next publish is due, fold each batch in as it comes: one short step
                    # per batch, rather than half a second of them in one step before the publish
                    # (which would hold up everything else on the loop for several milliseconds).
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
        """Open bars on time: sleep to the next bar boundary (MarketState.next_bar_boundary), advance,
        publish. The 1-minute series always exists, so the timer wakes at least once a minute."""
        while True:
            now = self._clock()
            boundary = self.state.next_bar_boundary(now)
            await trio.sleep(max(boundary - now, 1) / NS_PER_SECOND)
            self.advance_time(self._clock())
            await self.publish_in_steps()

    async def _session_timer(self) -> None:
        """QAEX_MARKET_HOURS=exchange: at each session open, restamp and publish the quotes of the
        contracts opening, so clients that re-check the hours on a quote change only (TqSdk's
        TargetPosTask) see the market open. Looks again at least once a minute (contracts listed
        meanwhile)."""
        calendar = default_holiday_calendar()
        while True:
            now = self._clock()
            contracts = ((s, i.trading_time) for s, i in self.state.instruments.items())
            found = next_opening(contracts, now, calendar)
            if found is None:
                await trio.sleep(60)
                continue
            at, symbols = found
            await trio.sleep(min(at - now, 60 * NS_PER_SECOND) / NS_PER_SECOND)
            now = self._clock()
            if now >= at:
                self.state.restamp(symbols, now)
                await self.publish_in_steps()

    async def _history_builder(self) -> None:
        """Give every listed contract its history, one at a time (:meth:`_attach_history`). Looks for
        contracts listed later every few seconds."""
        store = self.history_store
        assert store is not None
        await trio.sleep(HISTORY_START_DELAY)  # the start's listing and main contracts first
        while True:
            pending = self.state.pending_history()
            for symbol in pending:
                if not self.state.needs_history(symbol):
                    continue  # a client asked for it meanwhile
                if symbol not in self.state.instruments:  # delisted meanwhile
                    self.state.attach_history(symbol, None)
                    continue
                await self._attach_history(symbol)
                await trio.sleep(HISTORY_PAUSE)  # a background job: leave the loop and the GIL alone
            if pending:
                log.info("market history ready: %d contracts (%d built, %d loaded)",
                         len(self.state.quotes), store.built, store.loaded)  # fmt: skip
            await trio.sleep(HISTORY_POLL)

    def _history_spec(self, symbol: str) -> tuple[HistorySpec, int]:
        assert self.history_store is not None
        instrument = self.state.instruments[symbol]
        day = self._engine.trading_day or trading_day_of(self._clock(), self.history_store.calendar)
        spec = self.history_store.spec(
            instrument, self.state.instruments, trading_day=day, main=self.state.is_main(symbol)
        )
        return spec, instrument.price_decs

    async def import_history(
        self, files: list[tuple[str, str]], *, symbol: str | None, duration: int | None
    ) -> tuple[list[tuple[str, int, int]], list[str]]:
        """``POST /api/admin/history/import``: check every (name, CSV text), then replace the kept
        files, all or nothing (HistoryFileError / ImportRefused), in a worker thread (a big tick file
        takes seconds to check), one import at a time. A contract whose history is not attached yet
        serves the import at once; one already attached keeps serving the bars its clients hold
        (their ids cannot change under them) until the next start. Returns the imports and the
        symbols that apply at the next start."""
        store = self.history_store
        if store is None:
            raise ImportRefused("market history is off (QAEX_MARKET_BACKFILL=0)")
        instruments = self.state.instruments
        ticks = {s: i.price_tick for s, i in instruments.items()}
        decs = {s: i.price_decs for s, i in instruments.items()}

        def check_and_store() -> list[tuple[str, int, int]]:
            read = [
                (name, check_import(text, name, symbol=symbol, duration=duration, ticks=ticks))
                for name, text in files
            ]
            return store_imported(store, read, decs)

        async with self._importing:
            done = await trio.to_thread.run_sync(check_and_store)
        later = sorted({s for s, _, _ in done if not self.state.needs_history(s)})
        return done, later

    async def ensure_history(self, symbols: Iterable[str]) -> None:
        """Attach the history of these symbols if it is not yet (a client is asking for it): a load
        (a kept tick file: only its last ticks, see HistoryStore.load), or at most a generation of ~50
        ms per main contract, in a worker thread; the loop serves everyone else meanwhile."""
        if self.history_store is None:
            return
        for symbol in symbols:
            await self._attach_history(symbol)

    async def _attach_history(self, symbol: str) -> None:
        """Load (or build) ``symbol``'s history in a worker thread, then attach it on the loop; a load
        already under way (the background builder's, another client's) is waited for, not repeated."""
        store = self.history_store
        assert store is not None
        while self.state.needs_history(symbol) and symbol in self.state.instruments:
            loading = self._loading.get(symbol)
            if loading is not None:
                await loading.wait()
                continue
            loading = self._loading[symbol] = trio.Event()
            try:
                spec, decs = self._history_spec(symbol)
                history = await trio.to_thread.run_sync(self._load_history, symbol, spec, decs)
            finally:
                del self._loading[symbol]
                loading.set()
            if self.state.needs_history(symbol):
                self._attach(symbol, history)

    def ensure_history_now(self, symbols: Iterable[str]) -> None:
        """:meth:`ensure_history` on the loop, for the synchronous paths (a chart opened by
        ChartFeeds, a series a gateway holds: BrokerCore); the DIFF server and the HTTP routes await
        :meth:`ensure_history` first, so these find the history attached. A load here is cheap too (a
        kept tick file: only its last ticks)."""
        if self.history_store is None:
            return
        for symbol in symbols:
            if self.state.needs_history(symbol) and symbol in self.state.instruments:
                spec, decs = self._history_spec(symbol)
                self._attach(symbol, self._load_history(symbol, spec, decs))

    def _load_history(self, symbol: str, spec: HistorySpec, decs: int) -> ContractHistory | None:
        """A contract's kept (or new) history with its kept live bars after it; None if it cannot be
        read (a damaged or hand-edited file: no history, not a crash). Safe in a worker thread."""
        assert self.history_store is not None
        try:
            history = self.history_store.load_or_build(spec, decs, self.state.history)
        except (OSError, ValueError) as exc:
            log.error("market history of %s not loaded: %s", symbol, exc)
            return None
        return history if self.live_bars is None else self.live_bars.join(history)

    def _attach(self, symbol: str, history: ContractHistory | None) -> None:
        self.state.attach_history(symbol, history)
        if self.keeper is not None:
            self.keeper.started(symbol, history)

    # -- inputs ------------------------------------------------------------------------------------
    def apply(self, batch: Batch) -> None:
        """Fold one engine batch into the state (nothing is pushed until :meth:`publish`)."""
        self.state.apply(batch, self._clock())
        if batch.settled and self.keeper is not None:
            self.keeper.settled()

    def advance_time(self, ts_ns: int) -> None:
        """Open gap bars up to ``ts_ns`` in every K-line series (the bar timer calls this)."""
        self.state.advance_time(ts_ns)

    # -- output ------------------------------------------------------------------------------------
    def publish(self) -> None:
        """Push one shared patch per changed quote and series to its subscribers, then chart moves."""
        for link in self._push_changes():
            link.wake()

    async def publish_in_steps(self) -> None:
        """:meth:`publish`, the pushes :data:`PUSH_STEP` at a time with other tasks in between, then
        the writers woken with :meth:`wake_in_steps`."""
        woken: dict[SessionLink, None] = {}
        for _ in self._pushes(woken):
            await trio.lowlevel.checkpoint()
        await self.wake_in_steps(list(woken))

    async def wake_in_steps(self, links: list[SessionLink]) -> None:
        """Wake these sessions' writers :data:`WAKE_STEP` per scheduler pass, the passes spread over
        at most :data:`SPREAD` of the publish interval (qaex.exchange.pacing, the scheme the
        SnapshotManager uses too).

        A publish may wake a thousand writers, and each then encodes and sends a frame. Woken all
        together they form one long scheduler batch, and an order's acknowledgement that becomes
        ready meanwhile waits behind the whole burst; woken a few at a time, with a pause between,
        the trading path runs in between. Each publish starts at another place in the list, so that
        no session is always the last to hear.
        """
        if links:
            self._rotation = (self._rotation + int(len(links) * 0.618) + 1) % len(links)
            links = links[self._rotation :] + links[: self._rotation]
        await self._pacer.wake_all(links, spread=SPREAD * self.publish_interval)

    def _push_changes(self) -> list[SessionLink]:
        """Push the state's changes since the last publish into the sessions; returns those to wake."""
        woken: dict[SessionLink, None] = {}
        for _ in self._pushes(woken):
            pass
        return list(woken)

    def _pushes(self, woken: dict[SessionLink, None]) -> Iterator[None]:
        """Push the state's changes since the last publish into the sessions, adding them to
        `woken`; pauses (yields) after every :data:`PUSH_STEP` quote pushes.

        While it is paused, sessions may come, go or change their subscriptions: a quote goes only to
        a session still subscribed to it when its turn comes (one that subscribed meanwhile got the
        whole quote then). Each session still gets the publish's patches in their order (contract
        fields, quotes, series); between two sessions only the moment differs.
        """
        changes = self.state.take_changes()
        if changes.static is not None:
            static = market_patch(changes.static)
            if self.on_static is not None:
                self.on_static(static)
            shared = SharedPatch(static)
            for link in self._links:
                link.session.push_shared(shared)
                woken[link] = None
        quote_links = self._quote_links
        on_quote = self.on_quote
        pushed = 0
        for symbol, patch in changes.quotes:
            links = quote_links.get(symbol)
            if on_quote is not None:
                patch = market_patch(patch)
                on_quote(symbol, patch)
                if not links:
                    continue
            elif not links:
                continue
            else:
                patch = market_patch(patch)
            shared = SharedPatch(patch)  # once per change, shared by every subscriber
            # A pause can come only among more subscribers than this step has left; the set may
            # change while paused, so then go over a copy.
            paused = False
            for link in links if pushed + len(links) <= PUSH_STEP else list(links):
                if pushed >= PUSH_STEP:
                    pushed = 0
                    paused = True
                    yield
                if paused and link not in quote_links.get(symbol, ()):
                    continue  # unsubscribed, or gone, while paused
                link.session.push_shared(shared)
                woken[link] = None
                pushed += 1
        on_series = self.on_series
        series: list[tuple[SeriesKey, Patch]] = []
        for key, patch in changes.series:
            if on_series is not None:
                patch = market_patch(patch)
                on_series(key, patch)
                series.append((key, patch))
            elif self.charts.charted(key):
                series.append((key, market_patch(patch)))  # once per change, shared by every chart
        self.charts.push_series(series, woken)

    # What leaves here for a session is DIFF's rendering (qaex.protocol.diff.market_patch: NaN as
    # "-"); the state's patches hold real values. Shared patches are converted once and kept.
    def static_patch(self) -> Patch:
        """The contract fields of every instrument, one shared patch rebuilt only when a spec changes."""
        return self._shared_static().patch

    def _shared_static(self) -> SharedPatch:
        core = self.state.static_patch()
        if self._wire_static is None or self._wire_static[0] is not core:
            self._wire_static = (core, SharedPatch(market_patch(core)))
        return self._wire_static[1]

    def full_quote(self, symbol: str) -> Patch:
        """``{"quotes": {symbol: every field}}``, shared by every session subscribing before it changes."""
        return self._shared_quote(symbol).patch

    def _shared_quote(self, symbol: str) -> SharedPatch:
        core = self.state.full_quote(symbol)
        kept = self._wire_quotes.get(symbol)
        if kept is None or kept[0] is not core:
            kept = self._wire_quotes[symbol] = (core, SharedPatch(market_patch(core)))
        return kept[1]

    # -- charts: the ChartSource of self.charts (qaex.exchange.chart_feeds) ------------------------------
    def open_chart(self, message: Mapping[str, Any]) -> Chart:
        self.ensure_history_now(str(message.get("ins_list", "")).split(","))
        return self.state.open_chart(message, self._clock())

    def close_chart(self, chart: Chart) -> None:
        self.state.close_chart(chart)

    def chart_ready(self, chart: Chart) -> bool:
        return True  # the series are here: open_chart started them

    def chart_patch(self, chart: Chart) -> Patch:
        """A chart's whole window (its initial patch, or its part of a resync)."""
        return market_patch(self.state.chart_patch(chart))

    def chart_moves(self, chart: Chart) -> Patch | None:
        update = self.state.chart_moves(chart)
        return None if update is None else market_patch(update)

    def hold_series(self, key: SeriesKey) -> None:
        """Keep a series for a DIFF gateway that mirrors it (MarketState.hold; ChartRefused)."""
        self.ensure_history_now([key[0]])
        self.state.hold(key, self._clock())

    def release_series(self, key: SeriesKey) -> None:
        self.state.release(key)

    # -- sessions (called by the DIFF server) --------------------------------------------------------
    def add_session(self, link: SessionLink) -> None:
        """A new connection: it gets the static fields of every instrument in its first rtn_data."""
        self._links.add(link)
        link.session.push_shared(self._shared_static())
        link.wake()

    def remove_session(self, link: SessionLink) -> None:
        self._links.discard(link)
        self._pacer.discard(link)
        for symbol in self._subscribed.pop(link, set()):
            self._quote_links[symbol].discard(link)
        self.charts.remove(link)

    def subscription_changed(self, link: SessionLink) -> None:
        """After a subscribe_quote or set_chart: start and stop feeds to match the session's state."""
        session = link.session
        self._update_quotes(link, session.ins_list)
        self.charts.update(link, session.charts)
        link.wake()

    def _update_quotes(self, link: SessionLink, ins_list: list[str]) -> None:
        quotes = self.state.views
        before = self._subscribed.get(link, set())
        wanted = set(ins_list)
        unknown = sorted(symbol for symbol in wanted - before if symbol not in quotes)
        if unknown:
            link.session.notify(NOTIFY_BAD_INSTRUMENT, "ERROR", f"不支持的合约代码: {', '.join(unknown)}")
        now = {symbol for symbol in wanted if symbol in quotes}
        for symbol in before - now:
            self._quote_links[symbol].discard(link)
        for symbol in ins_list:
            if symbol in now and symbol not in before:
                self._quote_links.setdefault(symbol, set()).add(link)
                link.session.push_shared(self._shared_quote(symbol))
        if now:
            self._subscribed[link] = now
        else:
            self._subscribed.pop(link, None)

    # -- views -------------------------------------------------------------------------------------
    def full_view(self, link: SessionLink) -> list[Patch]:
        """Everything market data this session should hold, for a resync (DiffSession.reset)."""
        view = [self.static_patch()]
        view.extend(self.full_quote(symbol) for symbol in sorted(self._subscribed.get(link, ())))
        view.extend(self.charts.view(link))
        return view

    def _view_size(self, link: SessionLink) -> int:
        """Rough size in keys of :meth:`full_view`, so the session's pending bound fits a chart answer."""
        quotes = 25 * len(self.state.quotes) + 70 * len(self._subscribed.get(link, ()))
        return quotes + self.charts.view_size(link)

    async def series(self, symbol: str, duration_ns: int) -> KlineSeries | TickSeries | None:
        """A series that exists (``duration_ns`` 0: ticks), or None; for the HTTP API."""
        await self.ensure_history([symbol])
        return self.state.series(symbol, duration_ns)

    async def kline_history(self, symbol: str, duration_ns: int) -> KlineSeries:
        """The K-lines of any duration: the series if it exists, else one built from history (not
        kept). ValueError for a duration TqSdk would refuse (over a day but not whole days)."""
        await self.ensure_history([symbol])
        return self.state.kline_history(symbol, duration_ns, self._clock())
