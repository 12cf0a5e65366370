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
(:meth:`WakePacer.wake_all`). A :class:`SendGate` bounds the writers that *send* per pass, whoever woke
them (a DIFF server's writers take a turn there: see its docstring).
"""

from __future__ import annotations

from collections.abc import Collection, Hashable
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


SEND_BUDGET = 64
"""Session writers a DIFF server lets send per scheduler pass when its fan-out is saturated (SendGate)."""


class SendGate:
    """At most ``per_pass`` session writers send per scheduler pass; the others wait their turn, in order.

    The pacers above bound the writers *woken* by a publish or a round of patches, but a client's peek
    wakes its writer directly, and once a DIFF process's fan-out is saturated every peek finds data
    pending: every pass then runs a writer for each session that peeked during the last one. The pass
    grows with the number of sessions (seconds with thousands), and everything else on the process -
    a client's insert_order on its way to the router or the broker, an order's acknowledgement, a
    pong - moves one hop per pass. Writers take a turn here instead, so a pass holds at most
    ``per_pass`` sends and the command path keeps moving; pending patches coalesce meanwhile, so a
    saturated process sends fewer, larger frames. A writer with an answer for its own client (its
    user's trade patches, a notify) is *urgent*: it does not queue, and one already waiting when its
    answer arrives leaves the queue at once (:meth:`hurry`; the callers are paced already).

    :meth:`run` is the pump: one task per server, it starts a new pass's budget and lets the waiting
    writers through, oldest first.
    """

    __slots__ = ("_kick", "_spent", "_waiting", "per_pass")

    def __init__(self, per_pass: int = SEND_BUDGET) -> None:
        if per_pass < 1:
            raise ValueError("per_pass must be at least 1")
        self.per_pass = per_pass
        self._spent = 0  # turns given in the current pass
        self._waiting: dict[Hashable, trio.lowlevel.Task] = {}  # ordered: oldest first
        self._kick = trio.Event()

    @property
    def waiting(self) -> int:
        """Writers waiting for a turn."""
        return len(self._waiting)

    async def turn(self, key: Hashable) -> None:
        """Return when the writer `key` (its session) may send: at once while the pass's budget lasts
        and nobody waits."""
        if self._spent < self.per_pass and not self._waiting:
            self._spent += 1
            self._kick.set()  # the pump starts the next pass's budget
            return
        self._waiting[key] = trio.lowlevel.current_task()
        self._kick.set()

        def abort(_: object) -> trio.lowlevel.Abort:
            self._waiting.pop(key, None)
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)

    def hurry(self, key: Hashable) -> None:
        """The writer `key` became urgent: if it waits for a turn, it goes now."""
        task = self._waiting.pop(key, None)
        if task is not None:
            self._spent += 1
            trio.lowlevel.reschedule(task)

    async def run(self) -> None:
        """The pump: after each pass in which turns were taken, a new budget for the waiting writers."""
        waiting = self._waiting
        while True:
            await self._kick.wait()  # woken in the pass after a turn was taken or asked for
            self._kick = trio.Event()
            while True:  # one iteration per scheduler pass
                self._spent = 0
                while waiting and self._spent < self.per_pass:
                    key = next(iter(waiting))
                    trio.lowlevel.reschedule(waiting.pop(key))
                    self._spent += 1
                if not waiting:
                    break  # turns taken from now on kick the pump again
                await trio.lowlevel.checkpoint()
