"""WebSocket heartbeats for every connection of a listener: one timer, not a task per connection.

Every ``interval`` seconds the one :meth:`Heartbeat.run` task looks at every watched connection; one
that has been silent for a whole interval by its own doing (:class:`qaex.protocol.liveness.Liveness`:
nothing heard since the later of its last frame and the server's last rtn_data, and no data owed to
it) is pinged, in a task that lives only until the pong (or any frame) comes, and whose connection's
``on_timeout`` is called if none comes within ``timeout`` of the server's running time
(:class:`qaex.protocol.liveness.PongWait`: a server that fell behind does not close the sessions
whose pongs it has not read yet). A connection that keeps talking (every DIFF client peeks after
each rtn_data) is never pinged; a connection that never reports what it heard (``/ws``) is pinged
every interval. A silent connection is pinged between one and two intervals after it was last
heard, as when each connection slept on its own timer, but the server holds one sleeping task
instead of one per connection (and trio one timer instead of thousands).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from qaex.api.ws_server import ConnectionClosed, WebSocketConnection
from qaex.protocol.liveness import Liveness, PongWait

log = logging.getLogger("qaex.heartbeat")


class Watch:
    """One watched connection: when it was last heard, whether a ping is out, what a timeout does."""

    __slots__ = ("liveness", "on_timeout", "owed", "pinging", "timed_out", "ws")

    def __init__(
        self, ws: WebSocketConnection, on_timeout: Callable[[], None], now: float, owed: Callable[[], bool]
    ) -> None:
        self.ws = ws
        self.on_timeout = on_timeout
        self.liveness = Liveness(now)
        self.owed = owed
        """True while the server owes the peer data (it has nothing to say meanwhile: not silence)."""
        self.pinging = False
        self.timed_out = False
        """Set before ``on_timeout`` is called: no pong came within the timeout."""

    def heard(self, now: float) -> None:
        """Something came from the peer at ``now`` (trio's clock): it is alive."""
        self.liveness.heard = now

    def sent(self, now: float) -> None:
        """An rtn_data went to the peer at ``now``: it owes a peek for it."""
        self.liveness.sent = now


def _never() -> bool:
    return False


class Heartbeat:
    """The heartbeat timer of one listener (see the module docstring)."""

    def __init__(self, interval: float, timeout: float) -> None:
        self.interval = interval
        self.timeout = timeout
        self._watched: dict[Watch, None] = {}

    def __len__(self) -> int:
        return len(self._watched)

    def watch(
        self, ws: WebSocketConnection, on_timeout: Callable[[], None], owed: Callable[[], bool] = _never
    ) -> Watch:
        """Start watching ``ws``; :meth:`forget` it when the connection ends. ``owed``: see Watch.owed."""
        watch = Watch(ws, on_timeout, trio.current_time(), owed)
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
                    if not watch.pinging and watch.liveness.silent_for(now, watch.owed()) >= self.interval:
                        watch.pinging = True
                        nursery.start_soon(self._ping, watch)

    async def _ping(self, watch: Watch) -> None:
        try:
            answered = await self._pong_within(watch)
        finally:
            watch.pinging = False
        if not answered and watch in self._watched:
            log.info("no pong within %.0f s: closing %s", self.timeout, watch.ws.remote)
            watch.timed_out = True
            watch.on_timeout()

    async def _pong_within(self, watch: Watch) -> bool:
        """Ping; True once the pong or any frame comes (or the connection closed: nothing to time out),
        False when the PongWait expired first."""
        answered = trio.Event()

        async def ping() -> None:
            try:
                await watch.ws.ping()
            except ConnectionClosed:
                pass
            answered.set()

        pinged_at = trio.current_time()
        wait = PongWait(self.timeout)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(ping)
            while not answered.is_set() and watch.liveness.heard <= pinged_at and not wait.expired:
                began = trio.current_time()
                with trio.move_on_after(wait.step):
                    await answered.wait()
                wait.waited(trio.current_time() - began)
            nursery.cancel_scope.cancel()
        return answered.is_set() or watch.liveness.heard > pinged_at
