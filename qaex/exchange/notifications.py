"""NotificationHub: the per-event stream (``/ws``, SSE ``/api/events``) fed from the SnapshotManager.

The SnapshotManager hands the hub every per-user patch it delivers to DIFF sessions
(:meth:`NotificationHub.patch`, called from ``SnapshotManager.apply``, in the order the gateway
sent them): there is no second path through the engine. Only users somebody subscribed to have a
feed (qaex.protocol.notifications.UserFeed: the patch interpreter and a bounded log of encoded
events); everyone else costs one dictionary miss per patch.

Every connection is a :class:`Subscriber`: a cursor into its user's log, nothing buffered of its
own. A subscriber more than ``max_lag`` events behind the log (it does not read, so its writer is
stuck in a send) is *cut off*: its reason is set and its cancel scope cancelled, which ends the
connection with that reason (``/ws``: close code 1008; SSE: the stream ends). Pushing never waits:
the gateway and the exchange are never held up by a client.

A feed outlives its last subscriber by ``retain_seconds`` so that an SSE client reconnecting with
``Last-Event-ID`` gets what it missed; later the feed is dropped and such a client gets a gap event.
The hub's task (:meth:`run`, in the app's supervisor nursery) emits coalesced mark updates when
they are due and drops idle feeds; when it ends (shutdown) every subscriber is cut off.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import trio

from qaex.core.errors import Conflict
from qaex.protocol.notifications import Gap, UserFeed

if TYPE_CHECKING:
    from qaex.config import Config
    from qaex.exchange.snapshot import SnapshotManager

log = logging.getLogger("qaex.notifications")

Patch = dict[str, Any]
READ_LIMIT = 256
"""Events a connection takes from its log per send (one WebSocket frame each, one SSE chunk)."""


CUT_GRACE = 5.0
"""Seconds a cut-off connection's writer may still take to finish its send and say why it closes."""


class SubscriberClosed(Exception):
    """The subscriber was cut off; the message is the reason to show the client."""


class Subscriber:
    """One connection's place in its user's event log."""

    def __init__(self, hub: NotificationHub, user_id: str, feed: UserFeed, next_seq: int) -> None:
        self.hub = hub
        self.user_id = user_id
        self.feed = feed
        self.next_seq = next_seq
        self.reason: str | None = None  # set when cut off
        self.scope: trio.CancelScope | None = None  # cancelled when cut off (the connection's)
        self._wakeup = trio.Event()

    def lag(self) -> int:
        return self.feed.log.last_seq + 1 - self.next_seq

    def wake(self) -> None:
        self._wakeup.set()

    def cut(self, reason: str, grace: float = CUT_GRACE) -> None:
        """End this subscription: its writer, once it can send again, tells the client `reason` and
        closes; a writer still stuck in a send after `grace` seconds is cancelled (the connection is
        then closed without a reason: the client is not reading anyway)."""
        if self.reason is None:
            self.reason = reason
            self._wakeup.set()
            if self.scope is not None:
                self.scope.deadline = min(self.scope.deadline, trio.current_time() + grace)

    def take(self, limit: int = READ_LIMIT) -> list[tuple[str, bytes]]:
        """The events waiting for this connection, as (id, JSON), without waiting."""
        if self.reason is not None:
            raise SubscriberClosed(self.reason)
        log_ = self.feed.log
        if self.next_seq > log_.last_seq:
            return []
        events = log_.read(self.next_seq, limit)
        if events:
            self.next_seq = events[-1][0] + 1
        return [(log_.event_id(seq), data) for seq, data in events]

    async def next_events(self, limit: int = READ_LIMIT) -> list[tuple[str, bytes]]:
        """Wait for events; raises SubscriberClosed when cut off."""
        while True:
            events = self.take(limit)
            if events:
                return events
            self._wakeup = trio.Event()
            await self._wakeup.wait()

    async def wait_or_timeout(self, seconds: float, limit: int = READ_LIMIT) -> list[tuple[str, bytes]]:
        """Like :meth:`next_events`, but ``[]`` after `seconds` with nothing (time for a keep-alive)."""
        with trio.move_on_after(seconds):
            return await self.next_events(limit)
        return []

    def close(self) -> None:
        self.hub.unsubscribe(self)


class NotificationHub:
    def __init__(
        self,
        snapshots: SnapshotManager,
        *,
        buffer: int = 1000,
        max_per_user: int = 0,
        max_lag: int = 500,
        mark_interval: float = 1.0,
        retain_seconds: float = 600.0,
    ) -> None:
        self.snapshots = snapshots
        self.buffer = max(1, buffer)
        self.max_lag = max(1, min(max_lag, self.buffer))  # cut off before an event leaves the log
        self.max_per_user = max_per_user  # connections per user (0: no limit)
        self.mark_interval = mark_interval
        self.retain_seconds = retain_seconds
        self.feeds: dict[str, UserFeed] = {}
        self.subscribers: dict[str, set[Subscriber]] = {}
        self._idle_since: dict[str, float] = {}
        self._marks: set[str] = set()  # users with a coalesced mark waiting
        self._wakeup = trio.Event()
        self.cut_off = 0  # subscribers cut off for lagging, ever
        # Called with a user whose last subscriber left (a DIFF gateway then forgets the user if no
        # session holds it either: qaex.exchange.remote).
        self.on_idle: Callable[[str], None] | None = None

    @classmethod
    def for_config(cls, snapshots: SnapshotManager, config: Config) -> NotificationHub:
        """The hub a server (the core's app or a DIFF gateway) runs with ``config``'s notify limits."""
        return cls(
            snapshots,
            buffer=config.notify_buffer,
            max_lag=config.notify_max_lag,
            mark_interval=config.notify_mark_interval,
            retain_seconds=config.notify_retain_seconds,
            max_per_user=config.max_sessions_per_user,
        )

    # -- fed by the SnapshotManager ------------------------------------------------------------------
    def patch(self, user_id: str, patch: Patch) -> None:
        feed = self.feeds.get(user_id)
        if feed is None:
            return
        if feed.push(patch, trio.current_time(), time.time_ns()):
            self._deliver(user_id, feed)
        if user_id not in self._marks and feed.due_mark() is not None:
            self._marks.add(user_id)
            self._wakeup.set()

    def _deliver(self, user_id: str, feed: UserFeed) -> None:
        for subscriber in tuple(self.subscribers.get(user_id, ())):
            if subscriber.lag() > self.max_lag:
                self.cut_off += 1
                log.info("notification consumer of %s cut off: %d events not read", user_id, subscriber.lag())
                subscriber.cut(f"slow consumer: more than {self.max_lag} events not read")
            else:
                subscriber.wake()

    # -- connections -----------------------------------------------------------------------------------
    def subscribe(self, user_id: str, last_event_id: str | None = None) -> tuple[Subscriber, Gap | None]:
        """A cursor on the user's events: new ones only, or those after `last_event_id` (else a Gap).

        Raises Conflict (``too_many_sessions``) when the user already holds `max_per_user` of them.
        """
        held = self.subscribers.get(user_id, ())
        if self.max_per_user and len(held) >= self.max_per_user:
            raise Conflict(
                f"at most {self.max_per_user} notification connections per user", code="too_many_sessions"
            )
        feed = self.feeds.get(user_id)
        if feed is None:
            # The tree is ahead of the user's channel (see SnapshotManager.login): drain it first, so
            # that the feed starts from a tree that holds every patch it will not be given.
            self.snapshots.flush(user_id)
            feed = self.feeds[user_id] = UserFeed(
                user_id,
                self.snapshots.tree(user_id),
                capacity=self.buffer,
                mark_interval=self.mark_interval,
                now=trio.current_time(),
            )
            log.info("notification feed of %s started", user_id)
        self._idle_since.pop(user_id, None)
        start = feed.log.seq_after(last_event_id)
        gap: Gap | None = None
        if isinstance(start, Gap):
            gap, start = start, feed.log.last_seq + 1
        subscriber = Subscriber(self, user_id, feed, start)
        self.subscribers.setdefault(user_id, set()).add(subscriber)
        return subscriber, gap

    def unsubscribe(self, subscriber: Subscriber) -> None:
        subscribers = self.subscribers.get(subscriber.user_id)
        if subscribers is None:
            return
        subscribers.discard(subscriber)
        if not subscribers:
            del self.subscribers[subscriber.user_id]
            self._idle_since[subscriber.user_id] = trio.current_time()
            if self.on_idle is not None:
                self.on_idle(subscriber.user_id)

    def drop(self, user_id: str) -> None:
        """Forget a user's feed now (a gateway that no longer follows the user: its tree is gone)."""
        if user_id not in self.subscribers:
            self.feeds.pop(user_id, None)
            self._idle_since.pop(user_id, None)
            self._marks.discard(user_id)

    @property
    def connections(self) -> int:
        return sum(len(s) for s in self.subscribers.values())

    # -- the hub's task ------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        try:
            while True:
                now = trio.current_time()
                wake_at = now + min(1.0, self.retain_seconds)
                for user_id in tuple(self._marks):
                    feed = self.feeds.get(user_id)
                    due = feed.due_mark() if feed is not None else None
                    if feed is None or due is None:
                        self._marks.discard(user_id)
                    elif due <= now:
                        self._marks.discard(user_id)
                        if feed.flush_mark(now, time.time_ns()):
                            self._deliver(user_id, feed)
                    else:
                        wake_at = min(wake_at, due)
                for user_id, since in tuple(self._idle_since.items()):
                    if now - since >= self.retain_seconds:
                        del self._idle_since[user_id]
                        self.feeds.pop(user_id, None)
                        self._marks.discard(user_id)
                        log.info("notification feed of %s dropped (no subscriber)", user_id)
                with trio.move_on_at(wake_at):
                    await self._wakeup.wait()
                self._wakeup = trio.Event()
        finally:
            for subscribers in tuple(self.subscribers.values()):
                for subscriber in tuple(subscribers):
                    subscriber.cut("server shutting down", grace=1.0)
