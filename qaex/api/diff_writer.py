"""The DIFF writer: one task sends every session's rtn_data, without a task switch per frame.

A session is *ready* when it has peeked and has data pending (``DiffSession.wants_data``); whoever
makes it so - its own peek, its user's trade patches, a market-data publish - calls
``SessionLink.wake``, which queues it here (:meth:`DiffWriter.ready`). :meth:`DiffWriter.run` takes
the ready sessions in order and, for each, builds its rtn_data (a full view first after a resync) and
writes the frame to its connection, which hands it to the kernel at once
(``WebSocketConnection.write``). Per frame that is a function call, not a woken task.

Order and pacing:

* a session with an answer for its own client (its user's trade patches, a notify for its request:
  ``SessionLink.urgent``) goes before every session that only has market data;
* at most ``per_pass`` frames go out per scheduler pass: between two such runs the writer yields, so
  the readers (a client's insert_order on its way to the router), the router and the pongs keep
  moving while a publish to thousands of sessions is being sent, and pending patches coalesce
  meanwhile (a saturated process sends fewer, larger frames);
* a connection whose output is still queued (the peer reads slowly) is skipped; when the kernel has
  taken its output the connection offers the session again (``on_drained``), so a slow reader gets
  one coalesced frame later and nobody waits for it.

A failure while building one session's frame closes that session (1011) and nothing else.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from qaex.api.heartbeat import Watch
from qaex.api.ws_server import ConnectionClosed, WebSocketConnection
from qaex.exchange.snapshot import SessionLink

log = logging.getLogger("qaex.diff")

SEND_BUDGET = 64
"""Frames the writer sends per scheduler pass before it lets the other tasks run."""
INLINE_BUDGET = 16
"""Answers sent at once by whoever made them ready, between two passes of the writer (see ready)."""


class DiffWriter:
    """Sends the rtn_data of every session of one DIFF listener (see the module docstring)."""

    __slots__ = (
        "_full_view",
        "_inline_left",
        "_kick",
        "_ready",
        "_sessions",
        "_urgent",
        "frames",
        "per_pass",
    )

    def __init__(
        self, full_view: Callable[[SessionLink], list[dict[str, Any]]], per_pass: int = SEND_BUDGET
    ) -> None:
        if per_pass < 1:
            raise ValueError("per_pass must be at least 1")
        self.per_pass = per_pass
        self._full_view = full_view
        self._sessions: dict[SessionLink, tuple[WebSocketConnection, Watch]] = {}
        self._urgent: dict[SessionLink, None] = {}  # ordered: oldest first
        self._ready: dict[SessionLink, None] = {}
        self._kick = trio.Event()
        self._inline_left = INLINE_BUDGET
        self.frames = 0
        """rtn_data frames written so far."""

    @property
    def waiting(self) -> int:
        """Sessions ready to be sent to."""
        return len(self._urgent) + len(self._ready)

    def add(self, link: SessionLink, connection: WebSocketConnection, watch: Watch) -> None:
        self._sessions[link] = (connection, watch)
        connection.on_drained = link.wake

    def remove(self, link: SessionLink) -> None:
        self._sessions.pop(link, None)
        self._urgent.pop(link, None)
        self._ready.pop(link, None)

    def ready(self, link: SessionLink) -> None:
        """``link`` wants data (SessionLink.wake): queue it, urgent ones first.

        An urgent one (an answer for the client) is sent at once, in the caller's step, while the
        inline budget lasts: the writer's next pass is one scheduler pass later, and under load a
        pass takes milliseconds. At most INLINE_BUDGET go this way between two passes of the writer
        (which each renew it), so no caller's step grows by more than that many frames."""
        if link.urgent:
            self._ready.pop(link, None)
            if self._inline_left > 0 and link not in self._urgent and not link.session.resync_needed:
                self._inline_left -= 1
                self._send(link, trio.current_time())
                if self._inline_left == 0:
                    self._kick.set()  # the writer's pass renews the budget
                return
            self._urgent[link] = None
        elif link not in self._urgent:
            self._ready[link] = None
        self._kick.set()

    def hurry(self, link: SessionLink) -> None:
        """``link`` became urgent: if it is queued behind market data, it moves ahead."""
        if self._ready.pop(link, False) is None:
            self._urgent[link] = None

    async def run(self) -> None:
        urgent, ready = self._urgent, self._ready
        while True:
            await self._kick.wait()
            self._kick = trio.Event()
            self._inline_left = INLINE_BUDGET
            while urgent or ready:
                self._inline_left = INLINE_BUDGET
                now = trio.current_time()
                for _ in range(self.per_pass):
                    if urgent:
                        link = next(iter(urgent))
                        del urgent[link]
                    elif ready:
                        link = next(iter(ready))
                        del ready[link]
                    else:
                        break
                    self._send(link, now)
                if urgent or ready:
                    await trio.lowlevel.checkpoint()  # one pass's budget: the other tasks run

    def _send(self, link: SessionLink, now: float) -> None:
        entry = self._sessions.get(link)
        if entry is None:
            return
        connection, watch = entry
        if not connection.writable:
            return  # output still queued: on_drained offers the session again
        link.urgent = False
        session = link.session
        try:
            if session.resync_needed:
                session.reset(self._full_view(link))
            frame = session.data_to_send()
            if frame is None:
                return
            connection.text(frame)
        except ConnectionClosed:
            return  # the session's reader sees the end and cleans up
        except Exception:
            log.exception("session %s: building its rtn_data failed; closing it", session.session_id)
            connection.close_now(1011, "internal error")
            return
        self.frames += 1
        watch.sent(now)  # the client owes a peek: not silent till then
