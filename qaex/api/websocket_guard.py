"""Keep WebSocket upgrades on the HTTP port out of hypercorn's WebSocket code (hypercorn issue #225).

qaex serves DIFF on its own WebSocket listener (qaex.api.ws_server), so the hypercorn port has no
WebSocket routes.
Hypercorn 0.17-0.18 hands every ``GET`` with ``Connection: Upgrade`` and ``Upgrade: websocket`` to
its ``WSStream``, which has two writers that do not see each other:

* the connection's reader task: bytes arriving before the application accepted the handshake make
  ``WSStream.handle`` (hypercorn/protocol/ws_stream.py, the ``not self.handshake.accepted`` branch)
  send a 400 response;
* the application's task: a refusal (``websocket.close`` before accepting, or returning) makes
  ``WSStream.app_send`` send a 403 (or 500) response. It sets ``self.state`` but not ``self.closed``,
  and ``handle`` only looks at ``self.closed``.

Each write is an h11 state change followed by an awaited socket write, so the other task can run in
between. When the stray bytes' 400 comes while the application's 403 is being written (or the other
way round), h11 raises ``LocalProtocolError: can't handle event type Response when role=SERVER and
state=SEND_BODY`` (or ``MUST_CLOSE``); ``H11Protocol._send_h11_event`` (protocol/h11.py) re-raises
it, nothing in ``TCPServer`` (trio/tcp_server.py) catches it, and trio's server nursery ends the
worker. Any answer the application gives races with the stray bytes' answer: a grace period before
answering only moves the window.

The fix removes the second writer: for the apps registered with :func:`refuse_websocket_upgrades`,
``H11Protocol._create_stream`` is replaced so that every HTTP/1.1 request goes to hypercorn's
``HTTPStream``, the path of all other requests, where h11 buffers stray bytes as the next request
and the only writer is the application. :class:`RejectWebSockets` then answers an upgrade request
with a JSON 400 and ``Connection: close``.

The replacement is applied only to the hypercorn versions it was checked against (their
``_create_stream`` is identical); with another version it is not applied, a warning is logged, and
WebSocket scopes are refused after a grace period as before (a narrower window, not none). HTTP/2
WebSocket streams (extended CONNECT) still reach the application as WebSocket scopes; hypercorn's
HTTP/2 sender catches the equivalent collision (``h2.exceptions.ProtocolError``), so they are refused
the same way.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from importlib import metadata
from typing import Any

import trio

log = logging.getLogger("qaex.http")

GRACE_SECONDS = 1.0
MAX_DRAINED_BODY = 64 * 1024
CHECKED_HYPERCORN = frozenset({(0, 17), (0, 18)})  # H11Protocol._create_stream identical in 0.17.0-0.18.0
MARKER = "_qaex_refuses_websocket_upgrades"
ERROR_CODE = "websocket_not_served"
ERROR_MESSAGE = (
    "this port serves the HTTP API only; DIFF WebSockets are served on their own port "
    "(QAEX_DIFF_PORT, default 8001) at /ws/diff"
)

Receive = Callable[[], Awaitable[Any]]
Send = Callable[[Any], Awaitable[None]]
ASGIApp = Callable[[Any, Any, Any], Awaitable[None]]

_patched = False


def refuse_websocket_upgrades(app: object) -> bool:
    """Have hypercorn serve `app`'s HTTP/1.1 WebSocket upgrade requests as plain HTTP requests.

    `app` is the object hypercorn is given (``qaex.app:app``); its ASGI callable should be wrapped in
    :class:`RejectWebSockets`, which answers them. Returns False when this hypercorn version is not
    one the patch was checked against (the patch is then not applied).
    """
    setattr(app, MARKER, True)
    return _patch_hypercorn()


def _hypercorn_version() -> tuple[int, int] | None:
    try:
        major, minor = metadata.version("hypercorn").split(".")[:2]
        return int(major), int(minor)
    except (metadata.PackageNotFoundError, ValueError):
        return None


def _patch_hypercorn() -> bool:
    global _patched
    if _patched:
        return True
    version = _hypercorn_version()
    if version not in CHECKED_HYPERCORN:
        log.warning(
            "hypercorn %s: not a version qaex's WebSocket guard was checked against; WebSocket "
            "upgrades on the HTTP port reach hypercorn's WebSocket code (hypercorn issue #225)",
            ".".join(map(str, version)) if version else "(version unknown)",
        )
        return False

    import h11
    from hypercorn.protocol import h11 as hypercorn_h11
    from hypercorn.protocol.events import Request
    from hypercorn.protocol.http_stream import HTTPStream

    original = hypercorn_h11.H11Protocol._create_stream

    async def _create_stream(self: hypercorn_h11.H11Protocol, request: h11.Request) -> None:
        if getattr(getattr(self.app, "app", None), MARKER, False) is not True:
            await original(self, request)
            return
        # hypercorn's own non-WebSocket branch of _create_stream, for every request.
        self.stream = HTTPStream(
            self.app,
            self.config,
            self.context,
            self.task_group,
            self.ssl,
            self.client,
            self.server,
            self.stream_send,
            hypercorn_h11.STREAM_ID,
        )
        headers = request.headers.raw_items() if self.config.h11_pass_raw_headers else list(request.headers)
        await self.stream.handle(
            Request(
                stream_id=hypercorn_h11.STREAM_ID,
                headers=headers,
                http_version=request.http_version.decode(),
                method=request.method.decode("ascii").upper(),
                raw_path=request.target,
                state=self.connection_state,
            )
        )
        self.keep_alive_requests += 1
        await self.context.mark_request()

    hypercorn_h11.H11Protocol._create_stream = _create_stream  # type: ignore[method-assign]
    _patched = True
    return True


def asks_for_websocket(headers: list[tuple[bytes, bytes]]) -> bool:
    """Whether a request's headers ask to upgrade to WebSocket (``Upgrade: websocket``)."""
    return any(
        name.lower() == b"upgrade" and b"websocket" in (t.strip().lower() for t in value.split(b","))
        for name, value in headers
    )


class RejectWebSockets:
    """ASGI middleware: answers WebSocket upgrade requests on the HTTP port without a WebSocket.

    An HTTP request asking for ``Upgrade: websocket`` (what hypercorn delivers once
    :func:`refuse_websocket_upgrades` applies) gets a JSON 400 with ``Connection: close``. A WebSocket
    scope (HTTP/2, or a hypercorn version the patch was not applied to) is refused with a 403 after a
    grace period, as before.
    """

    def __init__(self, app: ASGIApp, *, grace: float = GRACE_SECONDS) -> None:
        self.app = app
        self.grace = grace

    async def __call__(self, scope: Any, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and asks_for_websocket(scope["headers"]):
            await self._answer_upgrade_request(receive, send)
        elif scope["type"] == "websocket":
            await self._refuse_websocket(receive, send)
        else:
            await self.app(scope, receive, send)

    async def _answer_upgrade_request(self, receive: Receive, send: Send) -> None:
        drained = 0
        while drained <= MAX_DRAINED_BODY:  # read the body first, as the HTTP blueprint does
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            drained += len(message.get("body", b""))
            if not message.get("more_body", False):
                break
        body = json.dumps({"error": {"code": ERROR_CODE, "message": ERROR_MESSAGE}}).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
            (b"connection", b"close"),
        ]
        await send({"type": "http.response.start", "status": 400, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _refuse_websocket(self, receive: Receive, send: Send) -> None:
        with trio.move_on_after(self.grace):
            while True:
                message = await receive()
                if message["type"] == "websocket.disconnect":
                    return
        try:
            await send({"type": "websocket.close", "code": 1008})
        except Exception as exc:  # the connection broke meanwhile: nothing left to tell the peer
            log.info("refused a broken WebSocket upgrade on the HTTP port: %r", exc)
