"""``/ws`` on the DIFF listener: the original design's per-event notifications, one JSON text frame each.

Authentication, whichever comes first:

* ``ws://host:port/ws?token=<bearer token>`` (from ``POST /api/auth/login``);
* a first message ``{"token": "<bearer token>"}``;
* a first message ``{"aid": "req_login", "user_name": ..., "password": ...}``, DIFF's login, checked
  under the same login throttle as DIFF and HTTP (``Exchange.check_password``).

Then the server sends ``{"type": "ready", ...}`` and one frame per event of that user
(qaex.protocol.notifications; docs/notifications.md). ``?last_event_id=`` resumes like SSE's
``Last-Event-ID`` (ids are not in the frames; SSE carries them). A refused login gets
``{"type": "error", ...}`` and close code 1008. Messages after the login are read and ignored. A
connection too far behind is cut off by the hub (close 1008 "slow consumer: ..."); shutdown closes
with 1001.
"""

from __future__ import annotations

import json
import logging
import time
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

import trio

from qaex.api.auth import TokenError, TokenSigner
from qaex.api.ws_lifetime import websocket_lifetime
from qaex.api.ws_server import ConnectionClosed, WebSocketConnection, WebSocketRequest
from qaex.core.errors import QaexError
from qaex.core.throttle import LoginThrottled
from qaex.exchange.notifications import NotificationHub, Subscriber, SubscriberClosed
from qaex.protocol import notifications as events

if TYPE_CHECKING:
    from qaex.api.diff_server import DiffServer

log = logging.getLogger("qaex.notify")

NOTIFY_PATH = "/ws"
LOGIN_TIMEOUT = 10.0
CLOSE_TIMEOUT = 2.0
POLICY_VIOLATION = 1008
HEARTBEAT_TIMEOUT = "heartbeat timeout"


class LoginRefused(Exception):
    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.extra = extra


class NotificationSockets:
    """The ``/ws`` connections of one DiffServer (its listener, its session limit, its heartbeat)."""

    def __init__(self, server: DiffServer, tokens: TokenSigner | None) -> None:
        self.server = server
        self.tokens = tokens

    async def handle(self, request: WebSocketRequest) -> None:
        server = self.server
        hub = server.exchange.snapshots.notifications
        if hub is None:
            await request.reject(404, body=b"this server has no notification stream")
            return
        if server.active >= server.max_sessions:
            await request.reject(503, body=b"too many sessions")
            return
        query = parse_qs(urlsplit(request.path).query)
        token = query["token"][0] if "token" in query else None
        last_event_id = query["last_event_id"][0] if "last_event_id" in query else None
        ws = await request.accept()
        server.active += 1
        source = server._source_of(request)
        try:
            async with websocket_lifetime(ws, log, f"notification connection from {ws.remote}"):
                await self._serve(ws, hub, source, token, last_event_id)
        finally:
            server.active -= 1

    async def _serve(
        self, ws: WebSocketConnection, hub: NotificationHub, source: str, token: str | None, last: str | None
    ) -> None:
        user_id: str | None = None
        try:
            with trio.move_on_after(LOGIN_TIMEOUT):
                user_id = await self._authenticate(ws, source, token)
            if user_id is None:
                raise LoginRefused("login_timeout", f"no login within {LOGIN_TIMEOUT:.0f} s")
            subscriber, gap = hub.subscribe(user_id, last)
        except (LoginRefused, QaexError) as exc:
            code = exc.code
            extra = exc.extra if isinstance(exc, LoginRefused) else {}
            error = {"type": "error", "code": code, "message": str(exc), **extra}
            await ws.send_message(json.dumps(error, ensure_ascii=False))
            await ws.aclose(POLICY_VIOLATION, code)
            return
        # Pinged every heartbeat interval (what the client sends is ignored, not heard).
        watch = self.server.heartbeat.watch(ws, lambda: subscriber.cut(HEARTBEAT_TIMEOUT, grace=0))
        try:
            await ws.send_message(events.encode(events.ready_event(user_id, time.time_ns())).decode())
            if gap is not None:
                await ws.send_message(events.encode(events.gap_event(gap, last)).decode())
            async with trio.open_nursery() as nursery:
                subscriber.scope = nursery.cancel_scope
                nursery.start_soon(self._ignore_messages, ws, nursery.cancel_scope)
                await self._write(ws, subscriber)
                nursery.cancel_scope.cancel()
        finally:
            self.server.heartbeat.forget(watch)
            subscriber.close()
        reason = subscriber.reason
        if reason is not None and ws.closed is None:
            with trio.move_on_after(CLOSE_TIMEOUT):
                slow = reason.startswith("slow consumer")
                close_code = POLICY_VIOLATION if slow else 1001  # else shutdown or no pong
                await ws.aclose(close_code, reason[:120])

    async def _authenticate(self, ws: WebSocketConnection, source: str, token: str | None) -> str:
        if token is not None:
            return self._verify(token)
        frame = await ws.get_message()
        try:
            message = json.loads(frame)
        except ValueError:
            message = None
        if not isinstance(message, dict):
            raise LoginRefused("bad_request", "the first message must be a JSON object: a token or req_login")
        if isinstance(message.get("token"), str):
            return self._verify(message["token"])
        if message.get("aid") == "req_login":
            user_name, password = message.get("user_name"), message.get("password")
            if not isinstance(user_name, str) or not isinstance(password, str):
                raise LoginRefused("bad_request", "req_login needs user_name and password (strings)")
            try:
                ok = await self.server.exchange.check_password(user_name, password, source=source)
            except LoginThrottled as exc:
                raise LoginRefused(
                    "login_throttled", str(exc), retry_after_seconds=exc.retry_after_seconds
                ) from None
            if not ok:
                raise LoginRefused("bad_credentials", "wrong user_name or password")
            return user_name
        raise LoginRefused("bad_request", 'the first message must be {"token": ...} or a req_login')

    def _verify(self, token: str) -> str:
        if self.tokens is None:
            raise LoginRefused("unauthorized", "tokens are not available on this listener: use req_login")
        try:
            user_id = self.tokens.verify(token)
        except TokenError as exc:
            raise LoginRefused("unauthorized", str(exc)) from None
        if user_id not in self.server.exchange.engine.users:
            raise LoginRefused("unauthorized", "invalid token")
        return user_id

    @staticmethod
    async def _write(ws: WebSocketConnection, subscriber: Subscriber) -> None:
        try:
            while True:
                for _, data in await subscriber.next_events():
                    await ws.send_message(data.decode())
        except SubscriberClosed:
            return

    @staticmethod
    async def _ignore_messages(ws: WebSocketConnection, scope: trio.CancelScope) -> None:
        try:
            while True:
                await ws.get_message()
        except ConnectionClosed:
            scope.cancel()
