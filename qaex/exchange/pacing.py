"""Waking many session writers without one long scheduler pass: the one pacing scheme.

Both services that fan out to sessions - the SnapshotManager after a round of trade patches, MarketData
after a publish - may have to wake thousands of writers at once, and each woken writer then encodes
and sends a frame. Woken together they form one long scheduler pass, and an order's acknowledgement
that becomes ready meanwhile waits behind the whole burst. A :class:`WakePacer` wakes at most
``per_pass`` writers per scheduler pass instead:

* a round that fits in the budget is woken at once, ahead of anything still waiting (the sessions of a
  small round - one user's order - never queue behind a large one);
* a larger round joins the end of a backlog (each session once, oldest first), which the rest of every
  pass's budget drains.

The SnapshotManager spends one budget per pass of its consumer loop (:meth:`WakePacer.wake`);
MarketData drains a publish completely, spreading the passes over part of its publish interval
(:meth:`WakePacer.wake_all`). What a woken session costs is one entry in the DIFF writer's queue
(qaex.api.diff_writer), which in turn sends at most a budget of frames per pass.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Generic, Protocol, TypeVar

import trio

MIN_PAUSE = 0.0002
"""Shorter pauses between two passes are not worth a timer: a checkpoint instead."""


class Wakeable(Protocol):
    """A session writer's wake-up (qaex.exchange.snapshot.SessionLink)."""

    def wake(self) -> None: ...


L = TypeVar("L", bound=Wakeable)


class WakePacer(Generic[L]):
    """Wakes writers at most ``per_pass`` per scheduler pass (see the module docstring)."""

    __slots__ = ("_backlog", "per_pass")

    def __init__(self, per_pass: int) -> None:
        if per_pass < 1:
            raise ValueError("per_pass must be at least 1")
        self.per_pass = per_pass
        self._backlog: dict[L, None] = {}  # ordered, each writer once

    @property
    def pending(self) -> bool:
        """Writers are waiting in the backlog."""
        return bool(self._backlog)

    def __len__(self) -> int:
        return len(self._backlog)

    def discard(self, link: L) -> None:
        """Forget a closed session's writer."""
        self._backlog.pop(link, None)

    def wake(self, links: Collection[L] = ()) -> None:
        """Spend one pass's budget: ``links`` (a new round) first if it fits, then the backlog."""
        backlog = self._backlog
        budget = self.per_pass
        if len(links) <= budget:
            for link in links:
                backlog.pop(link, None)
                link.wake()
            budget -= len(links)
        else:
            backlog.update(dict.fromkeys(links))
        while backlog and budget > 0:
            link = next(iter(backlog))
            del backlog[link]
            link.wake()
            budget -= 1

    async def wake_all(self, links: Collection[L], *, spread: float = 0.0) -> None:
        """Wake ``links`` and the backlog, one budget per pass, the passes spread over ``spread`` seconds.

        Between two passes it sleeps ``spread / passes`` (a checkpoint when that is under
        :data:`MIN_PAUSE`); after the last pass, a checkpoint.
        """
        if not links and not self._backlog:
            return
        passes = -(-(len(links) + len(self._backlog)) // self.per_pass)
        pause = spread / passes
        self.wake(links)
        while self._backlog:
            if pause >= MIN_PAUSE:
                await trio.sleep(pause)
            else:
                await trio.lowlevel.checkpoint()
            self.wake()
        await trio.lowlevel.checkpoint()
