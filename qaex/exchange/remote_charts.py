"""A DIFF gateway's charts (``set_chart``): the core's series mirrored over the broker.

The same :class:`~qaex.exchange.chart_feeds.ChartFeeds` as the core's MarketData serves the
sessions; this module is its :class:`~qaex.exchange.chart_feeds.ChartSource`:

- a chart's fields are checked here (:func:`qaex.core.market.chart_of`, the core's own check); whether
  its symbols have series is the core's answer (``rpc.chart`` refused: the same ERROR notify);
- each series some chart here uses is a :class:`~qaex.core.kline.MirrorSeries`, one per gateway,
  shared by its sessions: ``k.<symbol>.<duration ns>`` is subscribed first, then ``rpc.chart``
  answers the series' items in pages (the newest first, with the number of the last patch it
  includes; older pages hold only closed bars, which never change), and buffered patches at or
  below that number are dropped (qaex.protocol.broker.UserFeed). A chart gets its initial patch once
  all its series are here;
- a gap, a new epoch or a reconnection fetches the series again and sends every chart on it its
  whole window again (merged over what the client holds: ids never change within an epoch);
- the core keeps each series while a gateway holds it: ``rpc.chart`` holds it, ``chart.hold`` (every
  :data:`~qaex.protocol.broker.HOLD_RENEW` seconds, every series mirrored here) renews the hold; a
  series no chart here uses any more is dropped and its hold left to lapse.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Mapping
from typing import Any

import msgspec
import trio

from qaex.core.chart import Chart
from qaex.core.kline import MirrorSeries
from qaex.core.market import NOTIFY_BAD_CHART, ChartRefused, SeriesKey, chart_of
from qaex.exchange.chart_feeds import ChartFeeds
from qaex.exchange.nats_client import NatsClient, NatsError, Subscription
from qaex.exchange.snapshot import SessionLink
from qaex.protocol import broker as wire
from qaex.protocol.nats import Msg

log = logging.getLogger("qaex.remote.charts")

Patch = dict[str, Any]
RPC_TIMEOUT = 10.0
FETCHES_AT_ONCE = 8
"""Series fetched at once (after a reconnection: every series mirrored here)."""
HOLDS_PER_MESSAGE = 500


class RemoteCharts:
    def __init__(
        self,
        client: NatsClient,
        exchange_id: str,
        *,
        view_size: Callable[[SessionLink], int],
        woken: Callable[[SessionLink], None],
        wake: Callable[[], None],
        max_series: int = wire.MAX_HELD,
        hold_renew: float = wire.HOLD_RENEW,
    ) -> None:
        """``woken`` records a session to wake, ``wake`` wakes those recorded (the gateway's market
        paces its writers); ``view_size``: a session's whole view in keys."""
        self.client = client
        self.exchange_id = exchange_id
        self.feeds = ChartFeeds(self, view_size)
        self.max_series = max_series
        self.hold_renew = hold_renew
        self.mirrors: dict[SeriesKey, MirrorSeries] = {}  # the series fetched at least once
        self._numbering: dict[SeriesKey, wire.UserFeed] = {}
        self._subscriptions: dict[SeriesKey, Subscription] = {}
        self._users: dict[SeriesKey, int] = {}  # open charts per series mirrored here
        self._fetching: set[SeriesKey] = set()
        self._woken = woken
        self._wake = wake
        self._nursery: trio.Nursery | None = None
        self._slots = trio.CapacityLimiter(FETCHES_AT_ONCE)
        self._decode = msgspec.msgpack.Decoder(wire.UserPatch).decode
        self._encode = msgspec.msgpack.Encoder().encode
        self.fetched = 0  # series snapshots installed, ever

    def _subject(self, suffix: str) -> str:
        return wire.subject(self.exchange_id, suffix)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self._renew_holds)
            for key in self._users:  # charts opened before the start
                self._want(key)
            task_status.started()

    # -- the ChartSource -------------------------------------------------------------------------------
    def open_chart(self, message: Mapping[str, Any]) -> Chart:
        chart = chart_of(message)
        keys = chart.series_keys()
        new = [key for key in dict.fromkeys(keys) if key not in self._users]
        if len(self._users) + len(new) > self.max_series:
            refusal = f"set_chart refused: this gateway mirrors {len(self._users)} series"
            raise ChartRefused(NOTIFY_BAD_CHART, refusal)
        for key in keys:
            self._users[key] = self._users.get(key, 0) + 1
        for key in new:  # subscribe first, then fetch
            self._numbering[key] = wire.UserFeed(wire.series_name(key))
            self._subscriptions[key] = self.client.subscribe(
                self._subject("k." + wire.series_name(key)), callback=functools.partial(self._on_series, key)
            )
            self._want(key)
        return chart

    def close_chart(self, chart: Chart) -> None:
        for key in chart.series_keys():
            count = self._users.get(key, 0) - 1
            if count > 0:
                self._users[key] = count
            else:
                self._drop(key)

    def chart_ready(self, chart: Chart) -> bool:
        return all(key in self.mirrors for key in chart.series_keys())

    def chart_patch(self, chart: Chart) -> Patch:
        return chart.initial_patch(self.lookup)  # the mirrors hold DIFF's form already

    def chart_moves(self, chart: Chart) -> Patch | None:
        return chart.update_patch(self.lookup)

    def lookup(self, symbol: str, duration_ns: int) -> MirrorSeries:
        return self.mirrors[(symbol, duration_ns)]

    def _drop(self, key: SeriesKey) -> None:
        self._users.pop(key, None)
        self._numbering.pop(key, None)
        self.mirrors.pop(key, None)
        subscription = self._subscriptions.pop(key, None)
        if subscription is not None:
            subscription.unsubscribe()

    # -- the broker ------------------------------------------------------------------------------------
    def _want(self, key: SeriesKey) -> None:
        if self._nursery is None or key in self._fetching:
            return
        self._fetching.add(key)
        self._nursery.start_soon(self._fetch, key)

    async def _fetch(self, key: SeriesKey) -> None:
        try:
            for _ in range(1000):  # bounded: one retry every half second for ~8 minutes, then give up
                if key not in self._users:
                    return
                await self.client.wait_connected()
                try:
                    async with self._slots:
                        done = await self._fetch_once(key)
                except (NatsError, msgspec.DecodeError, msgspec.ValidationError) as exc:
                    log.warning("series %s %d: fetch failed (%s); retrying", *key, exc)
                    done = False
                if done:
                    return
                await trio.sleep(0.5)
            log.error("series %s %d: not fetched; its charts wait for the next reconnection", *key)
        finally:
            self._fetching.discard(key)

    async def _page(self, key: SeriesKey, before_id: int | None) -> wire.SeriesReply:
        request = wire.SeriesRequest(symbol=key[0], duration=key[1], before_id=before_id)
        subject = self._subject("rpc.chart")
        answer = await self.client.request(subject, self._encode(request), within=RPC_TIMEOUT)
        return msgspec.msgpack.decode(answer.payload, type=wire.SeriesReply)

    async def _fetch_once(self, key: SeriesKey) -> bool:
        """Fetch the series whole and install it; False: try again."""
        reply = await self._page(key, None)
        if reply.error is not None:
            log.info("series %s %d refused by the core: %s", *key, reply.error.message)
            refused = ChartRefused(reply.error.diff_code, reply.error.message)
            woken: dict[SessionLink, None] = {}
            self.feeds.refuse(key, refused, woken)  # closes the charts, and so drops the series
            self._woke(woken)
            return True
        items = {reply.start + offset: item for offset, item in enumerate(reply.items)}
        lowest = reply.start
        for _ in range(reply.max_len):  # bounded: each page holds at least one item or ends the loop
            if lowest <= reply.first_id or len(items) >= reply.max_len:
                break
            page = await self._page(key, lowest)
            if page.epoch != reply.epoch:
                return False  # the core restarted meanwhile
            if page.error is not None or not page.items:
                break  # dropped meanwhile (the series moved on): what is here is all there is
            items.update((page.start + offset, item) for offset, item in enumerate(page.items))
            lowest = page.start
        numbering = self._numbering.get(key)
        if numbering is None or numbering.live:
            return True  # dropped meanwhile, or live already
        mirror = MirrorSeries(key[0], key[1], max(1, reply.max_len))
        mirror.load(reply.last_id, items)
        result = numbering.snapshot(reply.epoch, reply.seq)
        if isinstance(result, wire.Resync):
            return False
        self.mirrors[key] = mirror
        for change in result:
            body = wire.series_body(change, key)
            if body is not None:
                mirror.apply(body)
        self.fetched += 1
        woken = {}
        self.feeds.series_ready(key, woken)
        self._woke(woken)
        return True

    def _woke(self, woken: dict[SessionLink, None]) -> None:
        for link in woken:
            self._woken(link)
        if woken:
            self._wake()

    def _on_series(self, key: SeriesKey, message: Msg) -> None:
        numbering = self._numbering.get(key)
        if numbering is None:
            return
        try:
            patch = self._decode(message.payload)
        except msgspec.DecodeError:
            return
        result = numbering.receive(patch)
        if isinstance(result, wire.Resync):
            log.info("series %s %d: %s: fetching it again", *key, result.reason)
            self._want(key)
            return
        mirror = self.mirrors.get(key)
        if mirror is None or not result:
            return
        for change in result:
            body = wire.series_body(change, key)
            if body is not None:
                mirror.apply(body)
        woken: dict[SessionLink, None] = {}
        self.feeds.push_series([(key, change) for change in result], woken)
        self._woke(woken)

    async def _renew_holds(self) -> None:
        while True:
            await trio.sleep(self.hold_renew)
            self.renew_holds()

    def renew_holds(self) -> None:
        """``chart.hold`` for every series mirrored here (while the broker is away: nothing)."""
        keys = list(self._users)
        for start in range(0, len(keys), HOLDS_PER_MESSAGE):
            hold = wire.SeriesHold(series=keys[start : start + HOLDS_PER_MESSAGE])
            self.client.publish(self._subject("chart.hold"), self._encode(hold))

    def heartbeat(self, epoch: str) -> None:
        for key, numbering in list(self._numbering.items()):
            if numbering.heartbeat(epoch) is not None:
                self._want(key)

    def disconnected(self) -> None:
        for numbering in self._numbering.values():
            numbering.disconnected()

    def reconnected(self) -> None:
        for key in list(self._numbering):
            self._want(key)
