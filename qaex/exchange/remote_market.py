"""A DIFF gateway's market data: quotes kept locally, fed from the core over the broker.

The part of MarketData's interface the DIFF server uses (``add_session``, ``remove_session``,
``subscription_changed``, ``full_view``), answered from:

- ``static``: the contract fields of every instrument (the first thing every session gets), fetched
  with ``rpc.market`` at start and kept current from the ``static`` subject;
- ``q.<symbol>``: subscribed while at least one session on this gateway wants the symbol. The
  subscription comes first, then ``rpc.market`` answers the full quote and the number of the last
  patch it includes; buffered patches at or below it are dropped (qaex.protocol.broker.UserFeed,
  one per symbol), and a gap or a new epoch fetches the full quote again and pushes it to the
  symbol's sessions (a full quote merged over the old one: nothing to delete in a quote).

One full quote per symbol per gateway, shared by its sessions, as in MarketData. Charts (K-lines,
ticks: ``set_chart``) are qaex.exchange.remote_charts'.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterable
from typing import Any

import msgspec
import trio

from qaex.core.notify_codes import NOTIFY_BAD_INSTRUMENT
from qaex.core.patch import copy_tree, merge_patch
from qaex.exchange.market import WAKE_STEP
from qaex.exchange.nats_client import NatsClient, NatsError, Subscription
from qaex.exchange.pacing import WakePacer
from qaex.exchange.remote_charts import RemoteCharts
from qaex.exchange.snapshot import SessionLink
from qaex.protocol import broker as wire
from qaex.protocol.diff import SharedPatch
from qaex.protocol.nats import Msg

log = logging.getLogger("qaex.remote.market")

Patch = dict[str, Any]
RPC_TIMEOUT = 10.0


class RemoteMarket:
    def __init__(self, client: NatsClient, exchange_id: str) -> None:
        self.client = client
        self.exchange_id = exchange_id
        self.static: Patch = {"quotes": {}}  # kept current by merges: never pushed itself (see _shared)
        self._shared: dict[str, Patch] = {}  # "" / symbol -> a copy handed to sessions, until it changes
        self._static_feed = wire.UserFeed("static")
        self.quotes: dict[str, Patch] = {}  # symbol -> {"quotes": {symbol: every field}} (DIFF form)
        self._feeds: dict[str, wire.UserFeed] = {}
        self._subscriptions: dict[str, Subscription] = {}
        self._links: set[SessionLink] = set()
        self._quote_links: dict[str, set[SessionLink]] = {}
        self._subscribed: dict[SessionLink, set[str]] = {}
        self._wanted: set[str] = set()  # symbols to fetch (and the static patch: "")
        self._fetch = trio.Event()
        # Writers to wake after broker messages, woken WAKE_STEP per scheduler pass (qaex.exchange.pacing,
        # as MarketData does after a publish): one quote change may concern every session here.
        self._woken: dict[SessionLink, None] = {}
        self._wake = trio.Event()
        self._pacer = WakePacer[SessionLink](WAKE_STEP)
        self._decode = msgspec.msgpack.Decoder(wire.UserPatch).decode
        self._encode = msgspec.msgpack.Encoder().encode
        self.charts = RemoteCharts(
            client, exchange_id, view_size=self._view_size, woken=self._mark_woken, wake=self._woke
        )

    def _subject(self, suffix: str) -> str:
        return wire.subject(self.exchange_id, suffix)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Fetch the static patch, then keep fetching what the feeds ask for; started once the
        static patch is here."""
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._waker)
            await nursery.start(self.charts.run)
            await nursery.start(self._fetcher)
            task_status.started()

    async def _waker(self) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            links, self._woken = list(self._woken), {}
            await self._pacer.wake_all(links)

    def _mark_woken(self, link: SessionLink) -> None:
        self._woken[link] = None

    def _woke(self) -> None:
        if self._woken:
            self._wake.set()

    async def _fetcher(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        self.client.subscribe(self._subject("static"), callback=self._on_static)
        self._want("")
        started = False
        while True:
            await self._fetch.wait()
            self._fetch = trio.Event()
            await self.client.wait_connected()
            wanted, self._wanted = self._wanted, set()
            try:
                await self._fetch_now(wanted)
            except (NatsError, msgspec.DecodeError) as exc:
                log.warning("market snapshot failed (%s); retrying", exc)
                self._wanted |= wanted
                await trio.sleep(0.5)
                self._fetch.set()
                continue
            if not started and self._static_feed.live:
                started = True
                task_status.started()

    def _want(self, symbol: str) -> None:
        self._wanted.add(symbol)
        self._fetch.set()

    async def _fetch_now(self, wanted: set[str]) -> None:
        symbols = sorted(s for s in wanted if s and s in self._feeds)
        request = wire.MarketRequest(symbols=symbols, static="" in wanted)
        answer = await self.client.request(
            self._subject("rpc.market"), self._encode(request), within=RPC_TIMEOUT
        )
        reply = msgspec.msgpack.decode(answer.payload, type=wire.MarketReply)
        if reply.static is not None and not self._static_feed.live:
            result = self._static_feed.snapshot(reply.epoch, reply.static_seq)
            self.static = reply.static
            if isinstance(result, wire.Resync):
                self._want("")
            else:
                for patch in result:
                    merge_patch(self.static, patch)
            self._shared.pop("", None)
            for link in self._links:
                link.session.push(self.static_patch())
                self._woken[link] = None
        for symbol in symbols:
            feed = self._feeds.get(symbol)
            snapshot = reply.quotes.get(symbol)
            if feed is None or feed.live:
                continue
            if snapshot is None:  # no such contract (any more)
                self._drop(symbol)
                continue
            result = feed.snapshot(reply.epoch, snapshot.seq)
            self.quotes[symbol] = snapshot.patch
            self._shared.pop(symbol, None)
            if isinstance(result, wire.Resync):
                self._want(symbol)
                continue
            for patch in result:
                merge_patch(snapshot.patch, patch)
            for link in self._quote_links.get(symbol, ()):
                link.session.push(self.full_quote(symbol))
                self._woken[link] = None
        self._woke()

    # -- broker events ----------------------------------------------------------------------------
    def _on_static(self, message: Msg) -> None:
        try:
            patch = self._decode(message.payload)
        except msgspec.DecodeError:
            return
        result = self._static_feed.receive(patch)
        if isinstance(result, wire.Resync):
            self._want("")
            return
        for change in result:
            merge_patch(self.static, change)
            self._shared.pop("", None)
            shared = SharedPatch(change)  # encoded once for every session here
            for link in self._links:
                link.session.push_shared(shared)
                self._woken[link] = None
        self._woke()

    def _on_quote(self, symbol: str, message: Msg) -> None:
        feed = self._feeds.get(symbol)
        if feed is None:
            return
        try:
            patch = self._decode(message.payload)
        except msgspec.DecodeError:
            return
        result = feed.receive(patch)
        if isinstance(result, wire.Resync):
            self._want(symbol)
            return
        quote = self.quotes.get(symbol)
        for change in result:
            if quote is not None:
                merge_patch(quote, change)
                self._shared.pop(symbol, None)
            shared = SharedPatch(change)  # encoded once for every subscriber here
            for link in self._quote_links.get(symbol, ()):
                link.session.push_shared(shared)
                self._woken[link] = None
        self._woke()

    def static_patch(self) -> Patch:
        """Every contract's fields as sessions get them: a copy shared until the next change (a pushed
        patch must never change afterwards, qaex.protocol.session.DiffSession.push)."""
        shared = self._shared.get("")
        if shared is None:
            shared = self._shared[""] = copy_tree(self.static)
        return shared

    def full_quote(self, symbol: str) -> Patch:
        shared = self._shared.get(symbol)
        if shared is None:
            shared = self._shared[symbol] = copy_tree(self.quotes[symbol])
        return shared

    def heartbeat(self, epoch: str) -> None:
        if self._static_feed.heartbeat(epoch) is not None:
            self._want("")
        for symbol, feed in self._feeds.items():
            if feed.heartbeat(epoch) is not None:
                self._want(symbol)
        self.charts.heartbeat(epoch)

    def disconnected(self) -> None:
        self._static_feed.disconnected()
        for feed in self._feeds.values():
            feed.disconnected()
        self.charts.disconnected()

    def reconnected(self) -> None:
        self._want("")
        for symbol in self._feeds:
            self._want(symbol)
        self.charts.reconnected()

    # -- sessions (called by the DIFF server) -----------------------------------------------------
    def add_session(self, link: SessionLink) -> None:
        self._links.add(link)
        link.session.push(self.static_patch())
        link.wake()

    def remove_session(self, link: SessionLink) -> None:
        self._links.discard(link)
        self._woken.pop(link, None)
        self._pacer.discard(link)
        self.charts.feeds.remove(link)
        for symbol in self._subscribed.pop(link, set()):
            self._unlink(link, symbol)

    def _unlink(self, link: SessionLink, symbol: str) -> None:
        links = self._quote_links.get(symbol)
        if links is not None:
            links.discard(link)
            if not links:
                self._drop(symbol)

    def _drop(self, symbol: str) -> None:
        self._quote_links.pop(symbol, None)
        self._feeds.pop(symbol, None)
        self.quotes.pop(symbol, None)
        self._shared.pop(symbol, None)
        subscription = self._subscriptions.pop(symbol, None)
        if subscription is not None:
            subscription.unsubscribe()

    async def ensure_history(self, symbols: Iterable[str]) -> None:
        """Nothing: a gateway serves no charts (the module docstring), so it needs no history."""

    def subscription_changed(self, link: SessionLink) -> None:
        session = link.session
        known = self.static["quotes"]
        before = self._subscribed.get(link, set())
        wanted = set(session.ins_list)
        unknown = sorted(symbol for symbol in wanted - before if symbol not in known)
        if unknown:
            session.notify(NOTIFY_BAD_INSTRUMENT, "ERROR", f"不支持的合约代码: {', '.join(unknown)}")
        now = {symbol for symbol in wanted if symbol in known}
        for symbol in before - now:
            self._unlink(link, symbol)
        for symbol in session.ins_list:
            if symbol not in now or symbol in before:
                continue
            self._quote_links.setdefault(symbol, set()).add(link)
            if symbol not in self._feeds:  # subscribe first, then ask for the full quote
                self._feeds[symbol] = wire.UserFeed(symbol)
                self._subscriptions[symbol] = self.client.subscribe(
                    self._subject(f"q.{symbol}"), callback=functools.partial(self._on_quote, symbol)
                )
                self._want(symbol)
            elif symbol in self.quotes and self._feeds[symbol].live:
                session.push(self.full_quote(symbol))
        if now:
            self._subscribed[link] = now
        else:
            self._subscribed.pop(link, None)
        self.charts.feeds.update(link, session.charts)
        link.wake()

    def full_view(self, link: SessionLink) -> list[Patch]:
        view = [self.static_patch()]
        view.extend(
            self.full_quote(symbol)
            for symbol in sorted(self._subscribed.get(link, ()))
            if symbol in self.quotes
        )
        view.extend(self.charts.feeds.view(link))
        return view

    def _view_size(self, link: SessionLink) -> int:
        """Rough size in keys of :meth:`full_view` (as MarketData's), so a chart answer fits."""
        quotes = 25 * len(self.static["quotes"]) + 70 * len(self._subscribed.get(link, ()))
        return quotes + self.charts.feeds.view_size(link)
