"""How a server-side WebSocket connection ends, the same for every endpoint on the DIFF listener
(``/ws/diff`` in qaex.api.diff_server, ``/ws`` in qaex.api.notify_ws)."""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator

import trio

from qaex.api.ws_server import ConnectionClosed, WebSocketConnection


@contextlib.asynccontextmanager
async def websocket_lifetime(ws: WebSocketConnection, log: logging.Logger, what: str) -> AsyncIterator[None]:
    """Serve ``ws`` inside: a client that went away is no error; any other failure is logged and closes
    this connection (1011) and nothing else; a connection still open when the server stops (the task is
    cancelled) is closed with 1001 first."""
    try:
        yield
    except ConnectionClosed:
        pass
    except Exception:
        log.exception("%s failed; closing it", what)
        with trio.move_on_after(1):
            await ws.aclose(1011, "internal error")
    finally:
        if ws.closed is None:  # still open: the server is shutting down (we are cancelled)
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await ws.aclose(1001, "server shutting down")
