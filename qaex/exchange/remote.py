"""A DIFF gateway's exchange: what the DIFF server asks of an Exchange, answered over the broker.

``qaex gateway --broker nats://... --diff-port N`` runs today's DIFF server (qaex.api.diff_server)
against a :class:`RemoteExchange` instead of an in-process Exchange. It keeps trade trees only for
the users logged in on this gateway, in a SnapshotManager of its own (:class:`RemoteSnapshots`: the
same sessions per user, the same pending-patch coalescing and resync as the core's), fed from the
core's per-user subjects:

- **Login**: subscribe to ``u.<user_id>`` first, then ``rpc.login`` (the core checks the password
  under its throttle, with the client's address); the answer's tree becomes the user's tree, the
  patches buffered meanwhile at or below its sequence number are dropped, the rest applied
  (qaex.protocol.broker.UserFeed); a tree larger than the broker's max_payload comes in parts,
  assembled before it is used. A second session of a user already live here uses the local tree.
- **Patches**: each arriving patch is merged into the user's tree and pushed to the user's sessions.
  A gap or a new epoch (patches lost, the core restarted; also the heartbeat's epoch) makes the
  feed ask ``rpc.snapshot``; when it comes, every session of the user is marked for resync, so its
  next rtn_data is its full view (DiffSession's resync path).
- **Orders**: inserts and cancels go to ``cmd`` without waiting (request_callback), in order;
  a refusal comes back as the router's error, exactly as in one process. While the broker is down,
  orders are refused at once with an ERROR notify (``broker_unavailable``); a command whose answer
  was lost (the connection dropped, no answer in time) gets an "outcome unknown" notify (resending
  is safe: a duplicate order id is refused).
- **Broker lost**: sessions stay open; on reconnection every user is resynced.

Quotes and charts come from qaex.exchange.remote_market (and remote_charts); ``ins_query`` is
answered from the core's listing (``rpc.instruments``, kept in ``engine``: an Engine with no users,
only read). ``/ws`` notifications (qaex.api.notify_ws, with ``req_login``) come from a
NotificationHub on this gateway's SnapshotManager, fed the same patches as its DIFF sessions.
"""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Callable
from typing import Any

import msgspec
import trio

from qaex.core import commands
from qaex.core.calendar.sessions import MarketHours
from qaex.core.engine import Engine
from qaex.core.errors import QaexError
from qaex.core.instruments import Instrument, InstrumentRegistry
from qaex.core.orders import InsertOrder
from qaex.core.patch import merge_patch
from qaex.core.throttle import AccessGuard, LoginThrottled
from qaex.exchange.market import MarketData
from qaex.exchange.nats_client import NatsClient, NatsError, NotConnected, Subscription
from qaex.exchange.notifications import NotificationHub
from qaex.exchange.remote_market import RemoteMarket
from qaex.exchange.router import Request
from qaex.exchange.snapshot import DEFAULT_MAX_SESSIONS_PER_USER, Patch, SessionLink, SnapshotManager
from qaex.protocol import broker as wire
from qaex.protocol.nats import Msg

log = logging.getLogger("qaex.remote")

COMMAND_TIMEOUT = 10.0
CORE_SILENT = 3.0
"""Seconds without the core's heartbeat (sent every second) after which requests are refused at once."""
FIRST_HEARTBEAT_WAIT = 5.0
INSTRUMENTS_REFRESH = 30.0
SNAPSHOTS_AT_ONCE = 32
"""rpc.snapshot requests one gateway has in flight at once (after a reconnection: one per user)."""
RPC_TIMEOUT = 10.0
NOTIFY_BROKER_UNAVAILABLE = 503


def broker_unavailable() -> QaexError:
    return QaexError(
        "交易暂不可用: the exchange core cannot be reached (broker down); nothing was sent, try again later",
        code="broker_unavailable",
        diff_code=NOTIFY_BROKER_UNAVAILABLE,
    )


def core_silent(seconds: float) -> QaexError:
    return QaexError(
        f"交易暂不可用: the exchange core has not been heard from for {seconds:.0f} s; nothing was sent, "
        "try again later",
        code="broker_unavailable",
        diff_code=NOTIFY_BROKER_UNAVAILABLE,
    )


def core_incompatible(protocol: int) -> QaexError:
    return QaexError(
        f"交易暂不可用: the exchange core speaks broker protocol {protocol} and this gateway "
        f"{wire.PROTOCOL}; nothing was sent — the operator must run the same qaex version on both",
        code="broker_incompatible",
        diff_code=NOTIFY_BROKER_UNAVAILABLE,
    )


def outcome_unknown(what: str) -> QaexError:
    return QaexError(
        f"结果未知: the answer to {what} was lost (broker connection); it may or may not have been "
        "applied — the account view is being resynchronized; resending is safe (duplicate order ids are "
        "refused)",
        code="outcome_unknown",
        diff_code=NOTIFY_BROKER_UNAVAILABLE,
    )


def error_from(info: wire.ErrorInfo) -> QaexError:
    if info.kind == "LoginThrottled":
        return LoginThrottled(info.retry_after or 1.0)
    return QaexError(info.message, code=info.code, diff_code=info.diff_code)


class RemoteSnapshots(SnapshotManager):
    """The gateway's trees, channels and sessions: the core's SnapshotManager, fed from the broker.

    A patch from the broker is merged into the user's tree and sent into the user's channel, as the
    core's TradeGateway does, so the consumer task delivers it with the same wake budget, and a
    login or resync drains the channel before it copies the tree. A user no session holds any more
    is forgotten.
    """

    def __init__(self, owner: RemoteExchange, max_sessions_per_user: int) -> None:
        super().__init__(lambda user_id: {"user_id": user_id}, max_sessions_per_user=max_sessions_per_user)
        self._owner = owner

    def deliver(self, user_id: str, patch: Patch) -> None:
        trade = patch.get("trade")
        if type(trade) is dict and user_id in trade:
            merge_patch(self.tree(user_id), trade[user_id])
        channel = self.channel_for(user_id)
        try:
            channel.send_nowait(patch)
        except trio.WouldBlock:  # the consumer is behind: deliver what waits now, synchronously
            self.flush(user_id)
            channel.send_nowait(patch)
        self.announce((user_id,))

    def forget(self, user_id: str) -> None:
        if self.notifications is not None:
            self.notifications.drop(user_id)
        self.trees.pop(user_id, None)
        channel = self._channels.pop(user_id, None)
        if channel is not None:
            channel.close()
        receive = self._receivers.pop(user_id, None)
        if receive is not None:
            receive.close()
        self._ready.pop(user_id, None)

    def remove(self, link: SessionLink) -> None:
        super().remove(link)
        if link.session.user_id is not None:
            self._owner.forget_if_unused(link.session.user_id)


class RemoteExchange:
    def __init__(
        self,
        client: NatsClient,
        exchange_id: str,
        *,
        engine: Engine | None = None,
        guard: AccessGuard | None = None,
        max_sessions_per_user: int = DEFAULT_MAX_SESSIONS_PER_USER,
        market: bool = True,
    ) -> None:
        """`market`: serve quotes and charts too (qaex.exchange.remote_market); False: trade data only."""
        self.client = client
        self.exchange_id = exchange_id
        self.engine = engine if engine is not None else Engine()  # instruments for ins_query only
        self.guard = guard if guard is not None else AccessGuard()  # client addresses (the core throttles)
        self.snapshots = RemoteSnapshots(self, max_sessions_per_user)
        self.notify_with(NotificationHub(self.snapshots, max_per_user=max_sessions_per_user))
        self.market: MarketData | RemoteMarket | None = RemoteMarket(client, exchange_id) if market else None
        self.feeds: dict[str, wire.UserFeed] = {}
        self._subscriptions: dict[str, Subscription] = {}
        self._logins: dict[str, int] = {}  # logins in flight per user
        self._resyncing: set[str] = set()
        self._snapshot_slots = trio.CapacityLimiter(SNAPSHOTS_AT_ONCE)  # a reconnection resyncs everyone
        self._nursery: trio.Nursery | None = None
        self._encode = msgspec.msgpack.Encoder().encode
        self._patch_decoder = msgspec.msgpack.Decoder(wire.UserPatch)
        self._reply_decoder = msgspec.msgpack.Decoder(wire.LoginReply)
        self._core_epoch: str | None = None
        self._core_protocol = wire.PROTOCOL  # the latest heartbeat's; another one refuses every request
        self._last_beat: float | None = None  # trio time of the core's latest heartbeat
        self._first_beat = trio.Event()
        self.resyncs = 0

    def _subject(self, suffix: str) -> str:
        return wire.subject(self.exchange_id, suffix)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.snapshots.run)
            if self.snapshots.notifications is not None:
                await nursery.start(self.snapshots.notifications.run)
            self.client.subscribe(wire.heartbeat_subject(self.exchange_id), callback=self._heartbeat)
            self.client.on_connect.append(self._reconnected)
            self.client.on_disconnect.append(self._disconnected)
            await nursery.start(self.client.run)
            if isinstance(self.market, RemoteMarket):
                await nursery.start(self.market.run)  # the static patch is here: sessions may come
            with trio.move_on_after(FIRST_HEARTBEAT_WAIT):
                await self._first_beat.wait()
            with trio.move_on_after(RPC_TIMEOUT):
                await self.refresh_instruments()
            nursery.start_soon(self._refresh_instruments_periodically)
            log.info("gateway connected to the broker for exchange %s", self.exchange_id)
            task_status.started()

    async def refresh_instruments(self) -> None:
        """The core's listing, main contracts and market-hours policy, for ``ins_query`` here."""
        try:
            answer = await self.client.request(self._subject("rpc.instruments"), b"\x80", within=RPC_TIMEOUT)
            reply = msgspec.msgpack.decode(answer.payload, type=wire.InstrumentsReply)
            registry = InstrumentRegistry([msgspec.convert(spec, Instrument) for spec in reply.instruments])
            hours = msgspec.convert(reply.market_hours, MarketHours)
        except (NatsError, msgspec.DecodeError) as exc:
            log.warning("instruments from the core: %s", exc)
            return
        engine = Engine(registry, market_hours=hours)
        engine.main_contracts = reply.main_contracts
        self.engine = engine

    async def _refresh_instruments_periodically(self) -> None:
        """Listings change at settlements (and by the admin): follow them within INSTRUMENTS_REFRESH."""
        while True:
            await trio.sleep(INSTRUMENTS_REFRESH)
            if self.client.is_connected:
                await self.refresh_instruments()

    # -- broker events ----------------------------------------------------------------------------
    def _heartbeat(self, message: Msg) -> None:
        try:
            beat = msgspec.msgpack.decode(message.payload, type=wire.Heartbeat)
        except msgspec.DecodeError:
            return
        if beat.protocol != self._core_protocol:
            if beat.protocol != wire.PROTOCOL:
                log.error(
                    "the core (epoch %s) speaks broker protocol %d and this gateway %d: every request is "
                    "refused until they match (run the same qaex version on both)",
                    beat.epoch,
                    beat.protocol,
                    wire.PROTOCOL,
                )
            else:
                log.warning("the core speaks broker protocol %d again: requests are served", beat.protocol)
            self._core_protocol = beat.protocol
        if beat.protocol != wire.PROTOCOL:
            return  # a core this gateway cannot hear (its subjects are another version's)
        if self._core_epoch is not None and beat.epoch != self._core_epoch:
            log.warning("the core restarted (epoch %s): resyncing every user", beat.epoch)
        self._core_epoch = beat.epoch
        self._last_beat = trio.current_time()
        self._first_beat.set()
        if isinstance(self.market, RemoteMarket):
            self.market.heartbeat(beat.epoch)
        for user_id, feed in self.feeds.items():
            if feed.heartbeat(beat.epoch) is not None:
                self._resync(user_id)

    def _disconnected(self) -> None:
        for feed in self.feeds.values():
            feed.disconnected()
        if isinstance(self.market, RemoteMarket):
            self.market.disconnected()

    def _reconnected(self) -> None:
        if self.client.generation > 1:
            if isinstance(self.market, RemoteMarket):
                self.market.reconnected()
            for user_id in list(self.feeds):
                self._resync(user_id)

    def _on_patch(self, user_id: str, message: Msg) -> None:
        feed = self.feeds.get(user_id)
        if feed is None:
            return
        try:
            patch = self._patch_decoder.decode(message.payload)
        except msgspec.DecodeError:
            log.error("undecodable patch for %s", user_id)
            return
        result = feed.receive(patch)
        if isinstance(result, wire.Resync):
            log.info("user %s: %s: resync", user_id, result.reason)
            self._resync(user_id)
            return
        for change in result:
            self._apply(user_id, change)

    def _apply(self, user_id: str, patch: dict[str, Any]) -> None:
        self.snapshots.deliver(user_id, patch)

    def _resync(self, user_id: str) -> None:
        if user_id in self._resyncing or self._nursery is None:
            return
        self._resyncing.add(user_id)
        self._nursery.start_soon(self._fetch_snapshot, user_id)

    async def _fetch_snapshot(self, user_id: str) -> None:
        try:
            while user_id in self.feeds:
                await self.client.wait_connected()
                try:
                    async with self._snapshot_slots:
                        reply = await self._snapshot("rpc.snapshot", wire.SnapshotRequest(user_id))
                except (NatsError, msgspec.DecodeError) as exc:
                    log.warning("user %s: snapshot failed (%s); retrying", user_id, exc)
                    await trio.sleep(0.5)
                    continue
                if reply.ok and reply.tree is not None and self._install(user_id, reply):
                    self.resyncs += 1
                    for link in self.snapshots.sessions.get(user_id, ()):
                        link.session.resync_needed = True  # the next rtn_data is its full view
                        link.wake()
                    return
                if not reply.ok:
                    self._resync_refused(user_id, reply.error)
                    return
        finally:
            self._resyncing.discard(user_id)

    def _resync_refused(self, user_id: str, error: wire.ErrorInfo | None) -> None:
        """The core would not send the user's snapshot (e.g. larger than the broker's max_payload):
        the user's view here is stale from now on, so say so to the log and to its sessions."""
        if error is None:
            return  # no such user any more
        log.error("user %s: resync refused by the core: %s", user_id, error.message)
        for link in self.snapshots.sessions.get(user_id, ()):
            link.session.notify(
                error.diff_code,
                "ERROR",
                f"账户数据未能同步 / account view not resynchronized: {error.message}",
            )
            link.wake()

    async def _snapshot(self, rpc: str, request: msgspec.Struct) -> wire.LoginReply:
        """A user's tree from the core (``rpc.login`` or ``rpc.snapshot``), in one or several parts."""
        assembly = wire.SnapshotAssembly()
        await self.client.request_many(
            self._subject(rpc),
            self._encode(request),
            lambda answer: assembly.add(self._reply_decoder.decode(answer.payload)),
            within=RPC_TIMEOUT,
        )
        return assembly.reply()

    def _install(self, user_id: str, reply: wire.LoginReply) -> bool:
        """Make a snapshot the user's tree (unless the feed is live already); False: ask again."""
        feed = self.feeds.get(user_id)
        if feed is None or feed.live:
            return feed is not None
        assert reply.tree is not None
        result = feed.snapshot(reply.epoch, reply.seq)
        self.snapshots.trees[user_id] = reply.tree
        if isinstance(result, wire.Resync):
            return False
        for change in result:
            self._apply(user_id, change)
        return True

    def notify_with(self, hub: NotificationHub) -> None:
        """Serve ``/ws`` here from `hub` (built on :attr:`snapshots`; qaex.api.notify_ws, req_login
        only: no tokens here). A user a notification connection follows stays subscribed here as for
        a DIFF session."""
        hub.on_idle = self.forget_if_unused
        self.snapshots.notifications = hub

    def forget_if_unused(self, user_id: str) -> None:
        hub = self.snapshots.notifications
        if self._logins.get(user_id) or self.snapshots.sessions.get(user_id):
            return
        if hub is not None and hub.subscribers.get(user_id):
            return
        subscription = self._subscriptions.pop(user_id, None)
        if subscription is not None:
            subscription.unsubscribe()
        self.feeds.pop(user_id, None)
        self.snapshots.forget(user_id)

    # -- what the DIFF server calls ---------------------------------------------------------------
    def _refusal(self) -> QaexError | None:
        """Why a request cannot go now (no broker connection, a silent core), or None."""
        if not self.client.is_connected:
            return broker_unavailable()
        if self._core_protocol != wire.PROTOCOL:
            return core_incompatible(self._core_protocol)
        silent = trio.current_time() - (self._last_beat if self._last_beat is not None else -math.inf)
        if silent > CORE_SILENT:
            return core_silent(silent if math.isfinite(silent) else CORE_SILENT)
        return None

    async def check_password(self, user_id: str, password: str, *, source: str | None = None) -> bool:
        """rpc.login: the core checks (and throttles); on success the user's tree is here."""
        refusal = self._refusal()
        if refusal is not None:
            raise refusal
        if user_id not in self.feeds:
            self.feeds[user_id] = wire.UserFeed(user_id)
            self._subscriptions[user_id] = self.client.subscribe(
                self._subject(f"u.{user_id}"), callback=functools.partial(self._on_patch, user_id)
            )
        self._logins[user_id] = self._logins.get(user_id, 0) + 1
        ok = False
        try:
            try:
                reply = await self._snapshot("rpc.login", wire.LoginRequest(user_id, password, source))
            except (NatsError, msgspec.DecodeError) as exc:
                raise broker_unavailable() from exc
            if reply.error is not None:
                raise error_from(reply.error)
            ok = reply.ok
            if ok and not self._install(user_id, reply):
                self._resync(user_id)
            return ok
        finally:
            self._logins[user_id] -= 1
            if not self._logins[user_id]:
                del self._logins[user_id]
            if not ok:
                self.forget_if_unused(user_id)

    def _command(
        self,
        request: wire.CommandRequest,
        on_done: Callable[[Request], None],
        command: commands.AnyCommand,
        what: str,
    ) -> None:
        outcome = Request(command)
        refusal = self._refusal()
        if refusal is not None:
            outcome.error = refusal
            on_done(outcome)
            return

        def answered(answer: Msg | BaseException) -> None:
            if isinstance(answer, BaseException):
                outcome.error = outcome_unknown(what)
                self._resync(request.user_id)
            else:
                try:
                    reply = msgspec.msgpack.decode(answer.payload, type=wire.CommandReply)
                except msgspec.DecodeError:
                    outcome.error = outcome_unknown(what)
                else:
                    outcome.error = None if reply.error is None else error_from(reply.error)
            on_done(outcome)

        try:
            self.client.request_callback(
                self._subject("cmd"), self._encode(request), answered, COMMAND_TIMEOUT
            )
        except NotConnected:
            outcome.error = broker_unavailable()
            on_done(outcome)

    async def submit_insert_order(self, request: InsertOrder, on_done: Callable[[Request], None]) -> None:
        self._command(
            wire.CommandRequest("insert", request.user_id, order=msgspec.to_builtins(request)),
            on_done,
            commands.Insert(ts=0, order=request),
            f"order {request.order_id}",
        )
        await trio.lowlevel.checkpoint()

    async def submit_cancel_order(
        self, user_id: str, order_id: str, on_done: Callable[[Request], None]
    ) -> None:
        self._command(
            wire.CommandRequest("cancel", user_id, order_id=order_id),
            on_done,
            commands.Cancel(ts=0, user_id=user_id, order_id=order_id),
            f"the cancel of {order_id}",
        )
        await trio.lowlevel.checkpoint()

    async def _call(self, request: wire.CommandRequest, what: str) -> None:
        refusal = self._refusal()
        if refusal is not None:
            raise refusal
        try:
            answer = await self.client.request(
                self._subject("cmd"), self._encode(request), within=COMMAND_TIMEOUT
            )
        except NotConnected as exc:
            raise broker_unavailable() from exc
        except NatsError as exc:
            raise outcome_unknown(what) from exc
        try:
            reply = msgspec.msgpack.decode(answer.payload, type=wire.CommandReply)
        except msgspec.DecodeError as exc:
            raise outcome_unknown(what) from exc
        if reply.error is not None:
            raise error_from(reply.error)

    async def deposit(self, user_id: str, amount: float) -> None:
        await self._call(wire.CommandRequest("deposit", user_id, amount=amount), "the deposit")

    async def withdraw(self, user_id: str, amount: float) -> None:
        await self._call(wire.CommandRequest("withdraw", user_id, amount=amount), "the withdrawal")

    async def change_password(
        self, user_id: str, old_password: str, new_password: str, *, source: str | None = None
    ) -> None:
        await self._call(
            wire.CommandRequest(
                "password", user_id, old_password=old_password, new_password=new_password, source=source
            ),
            "the password change",
        )
