"""ASGI middleware that refuses WebSocket upgrades on the HTTP port without crashing hypercorn.

qaex serves DIFF on its own trio-websocket listener, so the hypercorn port has no WebSocket routes.
Hypercorn 0.18 has a race there (hypercorn issue #225): when an upgrade request is followed by stray
bytes, its connection reader answers 400 by itself while the application may be sending its own
rejection; the two writes collide (h11 ``LocalProtocolError`` or trio ``BusyResourceError``) outside
any handler and the whole worker dies. Quart's default rejection of an unknown WebSocket route sends
at once, so one malformed request kills the server.

The guard therefore sends nothing while the client may still be sending: it waits a short grace
period for the connection to finish (a disconnect ends the task at once). Stray bytes arrive right
behind the request, so by the end of the grace period hypercorn has answered them and marked the
stream closed, and the ``websocket.close`` we then send is a no-op. A well-formed upgrade gets a
plain 403 after the grace period — ASGI's supported way to refuse a handshake.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

log = logging.getLogger("qaex.http")

GRACE_SECONDS = 1.0

Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]


class RejectWebSockets:
    def __init__(self, app: ASGIApp, *, grace: float = GRACE_SECONDS) -> None:
        self.app = app
        self.grace = grace

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        if scope["type"] != "websocket":
            await self.app(scope, receive, send)
            return
        with trio.move_on_after(self.grace):
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
        try:
            await send({"type": "websocket.close", "code": 1008})
        except Exception as exc:  # the connection broke meanwhile: nothing left to tell the peer
            log.info("refused a broken WebSocket upgrade on the HTTP port: %r", exc)
