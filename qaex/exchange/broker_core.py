"""The core's side of the broker (``QAEX_BROKER=nats://...``): publish, and answer the gateways.

The exchange stays as it is (router, journal, TradeGateway, SnapshotManager, MarketData); this
service hangs off it:

- every per-user patch the SnapshotManager applies (``SnapshotManager.broker``, called in the
  order the patches were made) is numbered by a :class:`~qaex.protocol.broker.Sequencer` and
  published on ``qaex.<exchange id>.u.<user_id>`` as one msgpack :class:`UserPatch`, encoded once;
  the NATS client sends everything published in a scheduler pass (a router batch's patches) in one
  write, and never makes the core wait: when the broker is slow or away, messages are dropped,
  counted, and the gateways notice the gap and resynchronize;
- quote patches (``MarketData.on_quote``) on ``q.<symbol>``, numbered per symbol;
- the patches of every series a gateway holds (``MarketData.on_series``) on
  ``k.<symbol>.<duration ns>``, numbered per series; ``rpc.chart`` answers a series' items in pages
  and holds it (started if it is not kept, as a chart would), ``chart.hold`` renews the holds; a
  series not named for ``hold_lapse`` seconds is released, and its numbering skips one (a gateway
  still listening sees a gap and fetches it again, holding it anew);
- ``core.hb`` every ``heartbeat_interval`` with the epoch (new at every core start): a gateway
  seeing another epoch resynchronizes everyone;
- request/reply, each answered on the requester's inbox: ``rpc.login`` (the password checked by
  ``Exchange.check_password`` under its throttle, with the client's address the gateway passes; the
  answer holds the user's trade tree — in parts when larger than max_payload, ``wire.snapshot_parts`` —
  and the number of the last patch it includes), ``rpc.snapshot``
  (the same without a password: a gateway's resync of a user already logged in there) and ``cmd``
  (insert, cancel, deposit, withdraw, password). Inserts and cancels are submitted to the router in
  the order they arrive, like a DIFF session's (pipelined); the answer goes out when the router is
  done with the command.
"""

from __future__ import annotations

import functools
import logging
import secrets
import time
from typing import TYPE_CHECKING, Any, TypeVar

import msgspec
import trio

from qaex.core.errors import QaexError
from qaex.core.market import NOTIFY_BAD_CHART, ChartRefused, SeriesKey
from qaex.core.patch import copy_tree
from qaex.core.throttle import LoginThrottled
from qaex.exchange.nats_client import NatsClient, redacted
from qaex.exchange.router import Request
from qaex.protocol import broker as wire
from qaex.protocol.diff import InsertOrderMessage, wire_fields
from qaex.protocol.nats import Msg

if TYPE_CHECKING:
    from qaex.exchange.exchange import Exchange

log = logging.getLogger("qaex.broker")

R = TypeVar("R")


def _request(message: Msg, kind: type[R], subject: str) -> R | None:
    """A request's payload decoded as ``kind``; None (and a WARNING) when it is not one."""
    try:
        return msgspec.msgpack.decode(message.payload, type=kind)
    except msgspec.DecodeError as exc:
        log.warning("bad %s: %s", subject, exc)
        return None


HEARTBEAT_INTERVAL = 1.0
TOO_LARGE = wire.ErrorInfo(
    message="the snapshot cannot be split below the broker's max_payload: raise max_payload in nats-server's "
    "configuration",
    code="snapshot_too_large",
    diff_code=500,
)
MAX_SYMBOLS_PER_REQUEST = 2000
SERIES_PAGE = 2000
"""Items per rpc.chart page at most (fewer when they would exceed the broker's max_payload)."""
CONNECT_WAIT = 5.0
"""Seconds the core waits at start for the broker before it serves without it (and connects later)."""
MAX_CONCURRENT_RPC = 64
"""Password checks and transfers answered at once (each may wait for scrypt or the router)."""


def error_info(exc: QaexError) -> wire.ErrorInfo:
    retry = getattr(exc, "retry_after", None)
    return wire.ErrorInfo(
        message=exc.message,
        code=exc.code,
        diff_code=exc.diff_code,
        kind=type(exc).__name__,
        retry_after=float(retry) if isinstance(retry, (int, float)) else None,
    )


class BrokerCore:
    def __init__(
        self,
        exchange: Exchange,
        client: NatsClient,
        exchange_id: str,
        *,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        hold_lapse: float = wire.HOLD_LAPSE,
        max_held: int = wire.MAX_HELD,
    ) -> None:
        self.exchange = exchange
        self.client = client
        self.exchange_id = exchange_id
        self.heartbeat_interval = heartbeat_interval
        self.epoch = secrets.token_hex(8)
        self.sequencer = wire.Sequencer(self.epoch)
        self._quote_seq = wire.Sequencer(self.epoch)
        self._series_seq = wire.Sequencer(self.epoch)
        self.holds = wire.SeriesHolds(lapse=hold_lapse, limit=max_held)
        self._series_prefix = wire.subject(exchange_id, "k.")
        self._encode = msgspec.msgpack.Encoder().encode
        self._user_prefix = wire.subject(exchange_id, "u.")
        self._quote_prefix = wire.subject(exchange_id, "q.")
        self._static_subject = wire.subject(exchange_id, "static")
        self._heartbeat_subject = wire.heartbeat_subject(exchange_id)
        # Password checks and transfers in flight: a slot is taken before the task starts, so that a
        # flood of requests waits in the (bounded) subscription, not as thousands of tasks.
        self._slots = trio.Semaphore(MAX_CONCURRENT_RPC)
        self._nursery: trio.Nursery | None = None
        self.published = 0
        self.too_large = 0
        self._lost: set[str] = set()  # users with a patch not published since the last gap mark

    def attach(self) -> None:
        """Hook into the exchange: its patches and quotes come here from now on."""
        self.exchange.snapshots.broker = self.user_patch
        if self.exchange.market is not None:
            self.exchange.market.on_quote = self.quote_patch
            self.exchange.market.on_static = self.static_patch
            self.exchange.market.on_series = self.series_patch

    # -- publishing (synchronous: called in the SnapshotManager's and MarketData's tasks) ----------
    def user_patch(self, user_id: str, patch: dict[str, Any]) -> None:
        subject = self._user_prefix + user_id
        data = self._encode(wire.UserPatch(self.epoch, self.sequencer.last(user_id) + 1, patch))
        if len(data) > self.client.max_payload:  # a big batch (a settlement, hundreds of orders)
            limit = self.client.max_payload
            for part in wire.split_patch(patch, user_id, lambda p: len(self._encode(p)) + 64 <= limit):
                if not self._publish(subject, wire.UserPatch(self.epoch, self.sequencer.next(user_id), part)):
                    self._lost.add(user_id)
            return
        self.sequencer.next(user_id)  # numbered even when it cannot go: the gap is then seen
        if self.client.publish(subject, data):
            self.published += 1
        else:
            self._lost.add(user_id)

    def _mark_gaps(self) -> None:
        """Users one of whose patches could not be published (no connection, buffer full, too big):
        an empty patch with the next number, so that a gateway that got no later patch sees the gap
        and resyncs (otherwise a lost last patch would go unnoticed until the user's next one)."""
        if not self._lost or not self.client.is_connected:
            return
        lost, self._lost = self._lost, set()
        for user_id in lost:
            message = wire.UserPatch(self.epoch, self.sequencer.next(user_id), {})
            if not self.client.publish(self._user_prefix + user_id, self._encode(message)):
                self._lost.add(user_id)

    def _publish(self, subject: str, message: msgspec.Struct) -> bool:
        """Publish if the broker takes a message this big; else log it (a subscriber sees a gap)."""
        data = self._encode(message)
        if len(data) > self.client.max_payload:
            self.too_large += 1
            log.error(
                "%s: a message of %d bytes exceeds the broker's max_payload (%d); raise max_payload in "
                "nats-server's configuration",
                subject,
                len(data),
                self.client.max_payload,
            )
            return False
        self.published += 1
        return self.client.publish(subject, data)

    def quote_patch(self, symbol: str, patch: dict[str, Any]) -> None:
        seq = self._quote_seq.next(symbol)
        self._publish(self._quote_prefix + symbol, wire.QuotePatch(self.epoch, seq, patch))

    def static_patch(self, patch: dict[str, Any]) -> None:
        seq = self._quote_seq.next("")  # "" is no symbol: the static patch's own numbering
        self._publish(self._static_subject, wire.QuotePatch(self.epoch, seq, patch))

    def series_patch(self, key: SeriesKey, patch: dict[str, Any]) -> None:
        if key in self.holds:
            name = wire.series_name(key)
            message = wire.QuotePatch(self.epoch, self._series_seq.next(name), patch)
            self._publish(self._series_prefix + name, message)

    def hold(self, key: SeriesKey) -> None:
        """Hold a series for the gateways (started in the market if new); ChartRefused if it cannot
        be (no such contract, a duration no series can have, :data:`MAX_HELD` held)."""
        market = self.exchange.market
        if market is None:
            raise ChartRefused(NOTIFY_BAD_CHART, "set_chart refused: this exchange has no market data")
        started = self.holds.hold(key, trio.current_time())
        if started is None:
            raise ChartRefused(
                NOTIFY_BAD_CHART, f"set_chart refused: the core holds {len(self.holds)} series for gateways"
            )
        if started:
            try:
                market.hold_series(key)
            except ChartRefused:
                self.holds.drop(key)
                raise

    def release_lapsed(self) -> None:
        """Release the series no gateway named for ``hold_lapse`` seconds."""
        market = self.exchange.market
        for key in self.holds.expired(trio.current_time()):
            self._series_seq.next(wire.series_name(key))  # a gap for a gateway still listening
            if market is not None:
                market.release_series(key)
            log.info("series %s %d no longer held by a gateway", *key)

    def series_page(self, request: wire.SeriesRequest) -> wire.SeriesReply:
        """One page of a series' items (rpc.chart), the series held (:meth:`hold`)."""
        key = (request.symbol, request.duration)
        reply = wire.SeriesReply(epoch=self.epoch)
        try:
            self.hold(key)
        except ChartRefused as exc:
            reply.error = wire.ErrorInfo(message=exc.message, code="chart_refused", diff_code=exc.code)
            return reply
        market = self.exchange.market
        assert market is not None
        series = market.state.series(*key)
        assert series is not None
        stop = series.last_id if request.before_id is None else min(request.before_id - 1, series.last_id)
        reply.seq = self._series_seq.last(wire.series_name(key))
        reply.first_id, reply.last_id, reply.max_len = series.first_id, series.last_id, series.max_len
        size = SERIES_PAGE
        while True:  # bounded: the page halves each time
            reply.start = max(series.first_id, stop - size + 1)
            reply.items = [wire_fields(item) for item in series.window(reply.start, stop).values()]
            if size <= 1 or len(self._encode(reply)) <= self.client.max_payload:
                return reply
            size //= 2

    def market_snapshot(self, request: wire.MarketRequest) -> wire.MarketReply:
        """Full quotes (and the static patch) with the number of the last patch each includes.

        A full quote is the state's, which may already hold changes of the next publish; the next
        patch then sets those fields again to the same values, so the gateway ends equal."""
        reply = wire.MarketReply(epoch=self.epoch)
        market = self.exchange.market
        if market is None:
            return reply
        if request.static:
            reply.static, reply.static_seq = market.static_patch(), self._quote_seq.last("")
        views = market.state.views
        for symbol in request.symbols[:MAX_SYMBOLS_PER_REQUEST]:
            if symbol in views:
                reply.quotes[symbol] = wire.QuoteSnapshot(
                    self._quote_seq.last(symbol), market.full_quote(symbol)
                )
        return reply

    # -- service ----------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            nursery.start_soon(self.client.run)  # subscriptions are sent once connected (and again after)
            queue = "core"  # one core answers each request even if a second one were started by mistake
            login = self.client.subscribe(wire.subject(self.exchange_id, "rpc.login"), queue)
            snapshot = self.client.subscribe(wire.subject(self.exchange_id, "rpc.snapshot"), queue)
            command = self.client.subscribe(wire.subject(self.exchange_id, "cmd"), queue)
            market = self.client.subscribe(wire.subject(self.exchange_id, "rpc.market"), queue)
            nursery.start_soon(self._serve_market, market)
            charts = self.client.subscribe(wire.subject(self.exchange_id, "rpc.chart"), queue)
            nursery.start_soon(self._serve_charts, charts)
            holds = self.client.subscribe(wire.subject(self.exchange_id, "chart.hold"), queue)
            nursery.start_soon(self._serve_holds, holds)
            instruments = self.client.subscribe(wire.subject(self.exchange_id, "rpc.instruments"), queue)
            nursery.start_soon(self._serve_instruments, instruments)
            nursery.start_soon(self._serve_logins, login)
            nursery.start_soon(self._serve_snapshots, snapshot)
            nursery.start_soon(self._serve_commands, command)
            self.client.on_connect.append(self._beat)
            nursery.start_soon(self._heartbeat)
            self.attach()
            with trio.move_on_after(CONNECT_WAIT):
                await self.client.wait_connected()
                await self.client.flush()
            if not self.client.is_connected:
                log.warning(
                    "broker %s not reachable yet: serving without it until it is",
                    redacted(self.client.urls[0]),
                )
            log.info("broker core ready: exchange %s, epoch %s", self.exchange_id, self.epoch)
            task_status.started()

    async def _heartbeat(self) -> None:
        while True:
            self._mark_gaps()
            self.release_lapsed()
            self._beat()
            await trio.sleep(self.heartbeat_interval)

    def _beat(self) -> None:
        """One heartbeat; also at each (re)connection, so that gateways know at once that this core
        (and its epoch) is there, not up to a heartbeat interval later."""
        self.client.publish(
            self._heartbeat_subject, self._encode(wire.Heartbeat(self.epoch, time.time_ns(), wire.PROTOCOL))
        )

    def _reply(self, message: Msg, answer: msgspec.Struct) -> None:
        if message.reply is None:
            return
        if not isinstance(answer, wire.LoginReply):
            self._publish(message.reply, answer)
            return
        parts = wire.snapshot_parts(answer, self.client.max_payload)  # a big tree: several messages
        if parts is None:
            self.too_large += 1
            log.error(
                "%s: a snapshot cannot be split below max_payload (%d)",
                message.reply,
                self.client.max_payload,
            )
            self._publish(message.reply, wire.LoginReply(ok=False, error=TOO_LARGE))
            return
        for part in parts:
            self._publish(message.reply, part)

    def snapshot_of(self, user_id: str) -> wire.LoginReply:
        """The user's tree with every patch published so far in it, and the number of the last one."""
        snapshots = self.exchange.snapshots
        snapshots.flush(user_id)  # the tree is ahead of the channel: publish what it holds first
        tree = copy_tree(snapshots.tree(user_id))
        return wire.LoginReply(ok=True, epoch=self.epoch, seq=self.sequencer.last(user_id), tree=tree)

    async def _serve_logins(self, subscription: Any) -> None:
        assert self._nursery is not None
        async for message in subscription:
            await self._slots.acquire()
            self._nursery.start_soon(self._login, message)

    async def _login(self, message: Msg) -> None:
        try:
            request = _request(message, wire.LoginRequest, "rpc.login")
            if request is None:
                return
            try:
                ok = await self.exchange.check_password(
                    request.user_id, request.password, source=request.source or "broker"
                )
            except LoginThrottled as exc:
                self._reply(message, wire.LoginReply(ok=False, error=error_info(exc)))
                return
            if not ok or request.user_id not in self.exchange.engine.users:
                self._reply(message, wire.LoginReply(ok=False))
                return
            self._reply(message, self.snapshot_of(request.user_id))
        finally:
            self._slots.release()

    async def _serve_snapshots(self, subscription: Any) -> None:
        async for message in subscription:
            request = _request(message, wire.SnapshotRequest, "rpc.snapshot")
            if request is None:
                continue
            if request.user_id in self.exchange.engine.users:
                self._reply(message, self.snapshot_of(request.user_id))
            else:
                self._reply(message, wire.LoginReply(ok=False))

    async def _serve_market(self, subscription: Any) -> None:
        async for message in subscription:
            request = _request(message, wire.MarketRequest, "rpc.market")
            if request is None:
                continue
            self._reply(message, self.market_snapshot(request))

    async def _serve_charts(self, subscription: Any) -> None:
        async for message in subscription:
            request = _request(message, wire.SeriesRequest, "rpc.chart")
            if request is None:
                continue
            self._reply(message, self.series_page(request))

    async def _serve_holds(self, subscription: Any) -> None:
        async for message in subscription:
            request = _request(message, wire.SeriesHold, "chart.hold")
            if request is None:
                continue
            for key in request.series[: self.holds.limit]:
                try:
                    self.hold(key)
                except ChartRefused:
                    continue  # the gateway learns it from rpc.chart

    async def _serve_instruments(self, subscription: Any) -> None:
        engine = self.exchange.engine
        async for message in subscription:
            self._reply(
                message,
                wire.InstrumentsReply(
                    epoch=self.epoch,
                    instruments=[msgspec.to_builtins(i) for i in engine.instruments.values()],
                    main_contracts=dict(engine.main_contracts),
                    market_hours=engine.market_hours,
                ),
            )

    async def _serve_commands(self, subscription: Any) -> None:
        """Inserts and cancels in arrival order, submitted (pipelined); the rest in tasks of their own."""
        assert self._nursery is not None
        exchange = self.exchange
        async for message in subscription:
            try:
                request = msgspec.msgpack.decode(message.payload, type=wire.CommandRequest)
                if request.kind == "insert":
                    order = msgspec.convert(request.order, InsertOrderMessage)
                    if order.user_id != request.user_id:
                        raise msgspec.ValidationError("insert_order for another user")
            except msgspec.DecodeError as exc:
                self._reply(message, wire.CommandReply(ok=False, error=error_info(QaexError(str(exc)))))
                continue
            done = functools.partial(self._command_done, message)
            if request.kind == "insert":
                await exchange.submit_insert_order(order, done)
            elif request.kind == "cancel":
                await exchange.submit_cancel_order(request.user_id, request.order_id, done)
            else:
                await self._slots.acquire()
                self._nursery.start_soon(self._slow_command, message, request)

    def _command_done(self, message: Msg, request: Request) -> None:
        error = request.error
        self._reply(
            message, wire.CommandReply(ok=error is None, error=None if error is None else error_info(error))
        )

    async def _slow_command(self, message: Msg, request: wire.CommandRequest) -> None:
        exchange = self.exchange
        try:
            try:
                if request.kind == "deposit":
                    await exchange.deposit(request.user_id, request.amount)
                elif request.kind == "withdraw":
                    await exchange.withdraw(request.user_id, request.amount)
                else:
                    await exchange.change_password(
                        request.user_id, request.old_password, request.new_password, source=request.source
                    )
            except QaexError as exc:
                self._reply(message, wire.CommandReply(ok=False, error=error_info(exc)))
                return
            self._reply(message, wire.CommandReply(ok=True))
        finally:
            self._slots.release()
