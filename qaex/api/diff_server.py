"""The DIFF WebSocket server: frames in, DiffSession state, the exchange out, one writer for all frames.

Each connection is read by one task (qaex.api.ws_server: wsproto over a trio socket, no reader task
of its own): frames -> DiffSession -> exchange calls. Every session's rtn_data is sent by the one
DiffWriter of the listener (qaex.api.diff_writer), woken through ``SessionLink.wake``; one heartbeat
timer for the whole listener (qaex.api.heartbeat) pings the connections that went silent. The
protocol decisions all live in the sans-IO `DiffSession` (the message rate limit, what a transfer asks
for, every notify's code and text); this module is a pump: it reads frames, calls the exchange for the
events the session returns (logins and password checks under the exchange's throttle included), tells
the session each outcome and closes the connection when the session says so. A request that waits on
something slow (a login's password check - on a gateway a round trip to the core -, a transfer, a
password change, a chart's history) is run beside the reader, which goes on reading meanwhile (pongs
are seen; the frames behind it wait, in order, at most READ_AHEAD of them). A failure inside one
session closes that session (1011) and nothing else; shutdown closes every session with 1001.
"""

from __future__ import annotations

import functools
import itertools
import logging
from collections import deque
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio

from qaex.api.auth import TokenSigner
from qaex.api.diff_writer import DiffWriter
from qaex.api.heartbeat import Heartbeat, Watch
from qaex.api.notify_ws import NOTIFY_PATH, NotificationSockets
from qaex.api.ws_lifetime import websocket_lifetime
from qaex.api.ws_server import (
    SEND_TIMEOUT,
    ConnectionClosed,
    Listening,
    WebSocketConnection,
    WebSocketRequest,
    serve_websockets,
)
from qaex.core.errors import QaexError
from qaex.core.throttle import LoginThrottled
from qaex.exchange.router import Request
from qaex.exchange.snapshot import SessionLink
from qaex.protocol import diff as messages
from qaex.protocol.diff import ClientEvent
from qaex.protocol.session import CloseConnection, Deposit, DiffSession, Withdraw

if TYPE_CHECKING:
    from qaex.config import Config
    from qaex.exchange.exchange import Exchange
    from qaex.exchange.remote import RemoteExchange  # a DIFF gateway's (qaex.gateway)

log = logging.getLogger("qaex.diff")

DIFF_PATH = "/ws/diff"
HEARTBEAT_INTERVAL = 20.0
HEARTBEAT_TIMEOUT = 15.0
CLOSE_TIMEOUT = 1.0
"""Seconds a close after a heartbeat timeout waits for the peer's close frame (it is silent anyway)."""
READ_AHEAD = 16
"""Frames read while a slow request of the session is being answered, before the reader stops
reading (TCP backpressure): meanwhile a pong behind the client's next frames is still seen
(qaex.protocol.liveness)."""
SLOW = (messages.ReqLogin, messages.ReqTransfer, messages.ChangePassword, messages.SetChart)
"""Requests whose answer may take long (a password hash, a round trip to the core, a history load)."""

Event = ClientEvent | CloseConnection


class _Inbox:
    """A session's requests while a slow one is answered: the frames behind it, in order."""

    __slots__ = ("frames", "idle")

    def __init__(self) -> None:
        self.frames: deque[tuple[str | bytes, float]] = deque()
        self.idle = trio.Event()
        self.idle.set()


class DiffServer:
    """Accepts DIFF connections for one exchange and runs each in its own nursery."""

    def __init__(
        self,
        exchange: Exchange | RemoteExchange,
        *,
        max_sessions: int = 20_000,
        max_message_size: int = 1 << 20,
        max_messages_per_second: int = 200,
        heartbeat_interval: float = HEARTBEAT_INTERVAL,
        heartbeat_timeout: float = HEARTBEAT_TIMEOUT,
        allowed_origins: Sequence[str] = (),
        tokens: TokenSigner | None = None,
        reuse_port: bool = False,
        send_timeout: float = SEND_TIMEOUT,
    ) -> None:
        self.exchange = exchange
        self.send_timeout = send_timeout  # a client that stops reading is cut off (qaex.api.ws_server)
        self.reuse_port = reuse_port  # SO_REUSEPORT: several gateways share the port (QAEX_DIFF_REUSE_PORT)
        self.notify = NotificationSockets(self, tokens)  # /ws: the per-event stream (qaex.api.notify_ws)
        self.max_sessions = max_sessions
        self.max_message_size = max_message_size
        self.max_messages_per_second = max_messages_per_second
        self.heartbeat_interval = heartbeat_interval
        self.heartbeat_timeout = heartbeat_timeout
        self.heartbeat = Heartbeat(heartbeat_interval, heartbeat_timeout)  # /ws/diff and /ws, run by serve
        self.allowed_origins = frozenset(allowed_origins)  # empty: any Origin (QAEX_ALLOWED_ORIGINS)
        self._ids = itertools.count(1)
        self.active = 0
        self._sources: dict[int, str] = {}  # session id -> client address, for the login throttle
        self.writer = DiffWriter(self._full_view)  # every session's rtn_data (qaex.api.diff_writer)

    async def serve(
        self, host: str, port: int, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED
    ) -> None:
        async with trio.open_nursery() as handler_nursery:
            await handler_nursery.start(self.heartbeat.run)
            handler_nursery.start_soon(self.writer.run)
            listening: Listening = await handler_nursery.start(
                functools.partial(
                    serve_websockets,
                    self.handle,
                    host,
                    port,
                    max_message_size=self.max_message_size,
                    reuse_port=self.reuse_port,
                    send_timeout=self.send_timeout,
                )
            )
            shared = " (SO_REUSEPORT)" if self.reuse_port else ""
            log.info("DIFF listening on ws://%s:%d%s%s", host, listening.port, DIFF_PATH, shared)
            task_status.started(listening)

    async def handle(self, request: WebSocketRequest) -> None:
        path = request.path.split("?", 1)[0]
        if path == NOTIFY_PATH:
            await self.notify.handle(request)
            return
        if path != DIFF_PATH:
            body = f"no endpoint at {path}; use {DIFF_PATH} or {NOTIFY_PATH}".encode()
            await request.reject(404, body=body)
            return
        if not self.origin_allowed(request):
            await request.reject(403, body=b"this Origin may not open DIFF (QAEX_ALLOWED_ORIGINS)")
            return
        if self.active >= self.max_sessions:
            await request.reject(503, body=b"too many sessions")
            return
        ws = await request.accept()
        self.active += 1
        link = SessionLink(
            DiffSession(next(self._ids), max_messages_per_second=self.max_messages_per_second), self.writer
        )
        self._sources[link.session.session_id] = self._source_of(request)
        snapshots = self.exchange.snapshots
        snapshots.add(link)
        if self.exchange.market is not None:
            self.exchange.market.add_session(link)
        log.debug("session %s connected from %s", link.session.session_id, ws.remote)
        watch: Watch | None = None
        try:
            async with websocket_lifetime(ws, log, f"session {link.session.session_id}"):
                ws.text(messages.RTN_BROKERS)
                async with trio.open_nursery() as nursery:
                    # No pong in time: the heartbeat ends the reader (and a slow request), then we close.
                    watch = self.heartbeat.watch(ws, nursery.cancel_scope.cancel, link.session.wants_data)
                    self.writer.add(link, ws, watch)
                    try:
                        await self._reader(ws, link, watch, nursery)
                    except ConnectionClosed:
                        pass
                    nursery.cancel_scope.cancel()
                if watch.timed_out:
                    with trio.move_on_after(CLOSE_TIMEOUT):
                        await ws.aclose(1001, "heartbeat timeout")
        finally:
            self.writer.remove(link)
            if watch is not None:
                self.heartbeat.forget(watch)
            self.active -= 1
            self._sources.pop(link.session.session_id, None)
            snapshots.remove(link)
            if self.exchange.market is not None:
                self.exchange.market.remove_session(link)
            log.debug("session %s closed", link.session.session_id)

    def _receive(self, link: SessionLink, frame: str | bytes, now: float) -> list[Event]:
        events = link.session.receive(frame, now)
        link.wake()  # a peek: the writer may send now
        return events

    async def _reader(
        self, ws: WebSocketConnection, link: SessionLink, watch: Watch, nursery: trio.Nursery
    ) -> None:
        """Read frames and answer them in order; a slow request is answered beside the reader (see
        the module docstring). Returns when the session closes the connection."""
        inbox = _Inbox()
        while True:
            if len(inbox.frames) >= READ_AHEAD:
                await inbox.idle.wait()
                if ws.closed is not None:
                    return
            frames = await ws.receive_messages()
            now = trio.current_time()
            watch.heard(now)  # a client that talks is alive: it is not pinged
            for frame in frames:
                if not inbox.idle.is_set():
                    inbox.frames.append((frame, now))
                    continue
                events = self._receive(link, frame, now)
                for i, event in enumerate(events):
                    if isinstance(event, CloseConnection):
                        await ws.aclose(event.code, event.reason)
                        return
                    if isinstance(event, SLOW):
                        inbox.idle = trio.Event()
                        nursery.start_soon(self._answer_slowly, ws, link, deque(events[i:]), inbox, nursery)
                        break
                    await self._dispatch(link, event)

    async def _answer_slowly(
        self,
        ws: WebSocketConnection,
        link: SessionLink,
        events: deque[Event],
        inbox: _Inbox,
        nursery: trio.Nursery,
    ) -> None:
        """Answer ``events`` (a slow one first), then the frames that came meanwhile, in order."""
        while True:
            while events:
                event = events.popleft()
                if isinstance(event, CloseConnection):
                    await ws.aclose(event.code, event.reason)
                    nursery.cancel_scope.cancel()
                    return
                await self._dispatch(link, event)
            if not inbox.frames:
                break
            frame, now = inbox.frames.popleft()
            events.extend(self._receive(link, frame, now))
        inbox.idle.set()

    async def _dispatch(self, link: SessionLink, event: ClientEvent) -> None:
        session = link.session
        exchange = self.exchange
        try:
            if isinstance(event, messages.ReqLogin):
                await self._login(link, event)
            elif isinstance(event, messages.InsertOrderMessage):
                # Pipelined: the reader goes on reading (peeks, pongs, the next order) while the
                # router commits; the order's state arrives as patches, a refusal as a notify.
                await exchange.submit_insert_order(
                    event, functools.partial(_report_order_refusal, link, event)
                )
            elif isinstance(event, messages.CancelOrder):
                await exchange.submit_cancel_order(
                    event.user_id, event.order_id, functools.partial(_report_refusal, link)
                )
            elif isinstance(event, messages.ReqTransfer):
                transfer = session.transfer(event)
                if transfer is not None:
                    await self._transfer(link, transfer)
            elif isinstance(event, messages.ChangePassword):
                assert session.user_id is not None
                # The policy for the new password (weak_password), the old one checked like a login.
                await exchange.change_password(
                    session.user_id, event.old_password, event.new_password, source=self._source(link)
                )
                session.password_changed()
            elif isinstance(event, (messages.SubscribeQuote, messages.SetChart)):
                if exchange.market is not None:
                    if isinstance(event, messages.SetChart):  # its history first, loaded off the loop
                        await exchange.market.ensure_history(str(event.ins_list).split(","))
                    exchange.market.subscription_changed(link)
            elif isinstance(event, messages.InsQuery):
                engine = exchange.engine
                session.answer_query(
                    event, engine.instruments.values(), engine.main_contracts, engine.market_hours
                )
            # confirm_settlement needs nothing from the exchange.
        except QaexError as exc:
            session.refused(exc)
        link.mark_urgent()  # the answer to the client's own request
        link.wake()

    def origin_allowed(self, request: WebSocketRequest) -> bool:
        """No Origin header (TqSdk, scripts), no list, or an Origin in QAEX_ALLOWED_ORIGINS."""
        if not self.allowed_origins:
            return True
        origins = [value for name, value in request.headers if name.lower() == b"origin"]
        return not origins or all(o.decode("latin-1").rstrip("/") in self.allowed_origins for o in origins)

    def _source_of(self, request: WebSocketRequest) -> str:
        """The client's address as the throttles key it (a trusted proxy's X-Forwarded-For, or the peer)."""
        forwarded = ",".join(
            value.decode("latin-1") for name, value in request.headers if name.lower() == b"x-forwarded-for"
        )
        return self.exchange.guard.source(request.remote.address, forwarded or None)

    def _source(self, link: SessionLink) -> str:
        return self._sources.get(link.session.session_id, "unknown")

    async def _login(self, link: SessionLink, event: messages.ReqLogin) -> None:
        """Check the password under the login throttle shared with HTTP (qaex.core.throttle).

        Refusals are ERROR notifies (DiffSession.login_refused): wrong user name or password, or
        throttled (too many failures for this user from this address, or from this address; nothing is
        checked); too many sessions of the user: the Conflict from the SnapshotManager.
        """
        session = link.session
        try:
            ok = await self.exchange.check_password(
                event.user_name, event.password, source=self._source(link)
            )
        except LoginThrottled as exc:
            session.login_refused(retry_after_seconds=exc.retry_after_seconds)
            log.info("session %s: login throttled for %r", session.session_id, event.user_name[:64])
            return
        except QaexError:  # nothing checked (a gateway that cannot reach the core): the client may retry
            session.login_failed()
            raise
        if not ok:
            session.login_refused()
            log.info("session %s: login failed for %r", session.session_id, event.user_name[:64])
            return
        try:
            self.exchange.snapshots.login(link, event.user_name)  # too many sessions: Conflict
        except QaexError:
            session.login_failed()
            raise
        session.login_succeeded()

    async def _transfer(self, link: SessionLink, transfer: Deposit | Withdraw) -> None:
        user_id = link.session.user_id
        assert user_id is not None
        if transfer.future_password and not await self.exchange.check_password(  # throttled: notify 429
            user_id, transfer.future_password, source=self._source(link)
        ):
            link.session.transfer_password_wrong()
            return
        if isinstance(transfer, Deposit):
            await self.exchange.deposit(user_id, transfer.amount)
        else:
            await self.exchange.withdraw(user_id, transfer.amount)

    def _full_view(self, link: SessionLink) -> list[dict[str, Any]]:
        """Everything this session may see now (its trade tree, quotes and charts), for a resync."""
        view = []
        if link.session.user_id is not None:
            view.append(self.exchange.snapshots.full_view(link.session.user_id))
        if self.exchange.market is not None:
            view.extend(self.exchange.market.full_view(link))
        return view


def _report_order_refusal(link: SessionLink, message: messages.InsertOrderMessage, request: Request) -> None:
    """Completion of a pipelined insert_order: one refused as a whole also finishes the client's order."""
    if request.error is not None and not link.closed:
        link.session.order_refused(message, request.error)
        link.mark_urgent()
        link.wake()


def _report_refusal(link: SessionLink, request: Request) -> None:
    """Completion of a pipelined command: a refused one (duplicate id, unknown order) becomes a notify."""
    if request.error is not None and not link.closed:
        link.session.refused(request.error)
        link.mark_urgent()
        link.wake()


async def serve_diff(
    exchange: Exchange | RemoteExchange,
    config: Config,
    tokens: TokenSigner | None = None,
    *,
    task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Run the DIFF listener of `config` for `exchange` (started by the app with nursery.start);
    `tokens` lets ``/ws`` accept the HTTP API's bearer tokens."""
    server = DiffServer(
        exchange,
        max_sessions=config.max_sessions,
        max_message_size=config.max_message_size,
        max_messages_per_second=config.max_messages_per_second,
        allowed_origins=config.allowed_origin_list,
        tokens=tokens,
        reuse_port=config.diff_reuse_port,
    )
    await server.serve(config.diff_host, config.diff_port, task_status=task_status)
