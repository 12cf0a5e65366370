"""WebSocket heartbeats for every connection of a listener: one timer, not a task per connection.

Every ``interval`` seconds the one :meth:`Heartbeat.run` task looks at every watched connection; one
that has been silent for a whole interval (nothing heard, :meth:`Watch.heard`) is pinged, in a task
that lives only until the pong comes, and whose connection's ``on_timeout`` is called if none comes
within ``timeout``. A connection that keeps talking (every DIFF client peeks after each rtn_data) is
never pinged; a connection that never reports what it heard (``/ws``) is pinged every interval. A
silent connection is pinged between one and two intervals after it was last heard, as when each
connection slept on its own timer, but the server holds one sleeping task instead of one per
connection (and trio one timer instead of thousands).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

log = logging.getLogger("qaex.heartbeat")


class Watch:
    """One watched connection: when it was last heard, whether a ping is out, what a timeout does."""

    __slots__ = ("last_heard", "on_timeout", "pinging", "timed_out", "ws")

    def __init__(self, ws: WebSocketConnection, on_timeout: Callable[[], None], now: float) -> None:
        self.ws = ws
        self.on_timeout = on_timeout
        self.last_heard = now
        self.pinging = False
        self.timed_out = False
        """Set before ``on_timeout`` is called: no pong came within the timeout."""

    def heard(self, now: float) -> None:
        """Something came from the peer at ``now`` (trio's clock): it is alive."""
        self.last_heard = now


class Heartbeat:
    """The heartbeat timer of one listener (see the module docstring)."""

    def __init__(self, interval: float, timeout: float) -> None:
        self.interval = interval
        self.timeout = timeout
        self._watched: dict[Watch, None] = {}

    def __len__(self) -> int:
        return len(self._watched)

    def watch(self, ws: WebSocketConnection, on_timeout: Callable[[], None]) -> Watch:
        """Start watching ``ws``; :meth:`forget` it when the connection ends."""
        watch = Watch(ws, on_timeout, trio.current_time())
        self._watched[watch] = None
        return watch

    def forget(self, watch: Watch) -> None:
        self._watched.pop(watch, None)

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            task_status.started()
            while True:
                await trio.sleep(self.interval)
                now = trio.current_time()
                for watch in self._watched:  # nothing here awaits: the dict cannot change meanwhile
                    if not watch.pinging and now - watch.last_heard >= self.interval:
                        watch.pinging = True
                        nursery.start_soon(self._ping, watch)

    async def _ping(self, watch: Watch) -> None:
        try:
            with trio.move_on_after(self.timeout) as waited:
                await watch.ws.ping()
        except ConnectionClosed:
            return
        finally:
            watch.pinging = False
        if waited.cancelled_caught and watch in self._watched:
            log.info("no pong within %.0f s: closing %s", self.timeout, watch.ws.remote)
            watch.timed_out = True
            watch.on_timeout()
