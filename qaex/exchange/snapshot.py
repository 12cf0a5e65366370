"""SnapshotManager: per-user trade trees and the fan-out of patches to DIFF sessions.

Each user has a bounded memory channel from the TradeGateway. The gateway sends a batch's patches
into the channels of the users it touched and then *announces* those users; the manager's consumer
task (one for all users, run in the exchange's nursery, never detached) drains the announced
channels in order and pushes each patch into the pending buffer of each of that user's sessions,
then wakes them. The manager also keeps each user's current trade tree, so that a session logging in
later starts from one complete snapshot; the gateway writes every patch into the tree as it builds
it (the tree doubles as the gateway's record of what was sent), which is why the manager drains a
user's channel before it copies the tree for a session (`login`, `full_view`). A full channel makes
the gateway wait (it announces first, so the consumer drains it): backpressure stays per user and in
order. Pending buffers coalesce and are bounded (see qaex.protocol.session): a session that stops
peeking costs about one snapshot, never an unbounded queue.

Sessions also receive market data (quotes, charts): `SessionLink` is the trio side of one
connection, a DiffSession plus the wake-up of what sends its frames (the DIFF server's one writer,
qaex.api.diff_writer; or a task waiting on it).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, Protocol

import trio

from qaex.core.errors import Conflict
from qaex.core.notify_codes import NOTIFY_TOO_MANY_SESSIONS
from qaex.core.patch import copy_tree
from qaex.exchange.pacing import WakePacer
from qaex.protocol.session import DiffSession

if TYPE_CHECKING:
    from qaex.exchange.notifications import NotificationHub

DEFAULT_MAX_SESSIONS_PER_USER = 32
"""Sessions one user may be logged in on at once: every one costs a copy of each patch and a frame each."""

log = logging.getLogger("qaex.snapshot")

WAKE_BUDGET = 128
"""Session writers woken per scheduler pass by the consumer (about 10 ms of sending at most)."""

Patch = dict[str, Any]


class SessionWriter(Protocol):
    """What sends a DIFF server's frames (qaex.api.diff_writer.DiffWriter)."""

    def ready(self, link: SessionLink) -> None:
        """``link`` has a peek waiting and data pending."""

    def hurry(self, link: SessionLink) -> None:
        """``link`` became urgent (see SessionLink.urgent)."""


class SessionLink:
    """One connected DIFF session as the exchange sees it: protocol state and a wake-up for its writer."""

    __slots__ = ("_waiter", "_woken", "closed", "session", "urgent", "writer")

    def __init__(self, session: DiffSession, writer: SessionWriter | None = None) -> None:
        self.session = session
        # An answer for this client is pending (its user's trade patches, a notify for its request): the
        # DIFF writer sends it before the sessions that only have market data (qaex.api.diff_writer).
        self.urgent = False
        self.writer = writer
        """The DIFF server's writer; without one, a task waits on :meth:`wait` (tests, benches)."""
        # A one-waiter event without the allocation of a trio.Event per wait (this is on the path of
        # every rtn_data): `_woken` remembers a wake-up that came while nobody waited.
        self._waiter: trio.lowlevel.Task | None = None
        self._woken = False
        self.closed = False

    def mark_urgent(self) -> None:
        """An answer for this client is pending: its writer does not wait for a turn (see `urgent`)."""
        self.urgent = True
        if self.writer is not None:
            self.writer.hurry(self)

    def wake(self) -> None:
        """Tell the writer there is something to send: a peek is waiting and data is pending.

        Without a waiting peek the writer could send nothing, so it is not woken (a task switch per
        patch saved); the peek's arrival wakes it later.
        """
        if self.session.wants_data():
            if self.writer is not None:
                self.writer.ready(self)
                return
            self._woken = True
            waiter = self._waiter
            if waiter is not None:
                self._waiter = None
                trio.lowlevel.reschedule(waiter)

    async def wait(self) -> None:
        """Return once woken (at once if a wake-up came since the last wait). One waiter at a time."""
        if self._woken:
            self._woken = False
            await trio.lowlevel.checkpoint()
            return
        if self._waiter is not None:
            raise RuntimeError("another task is already waiting on this session")
        self._waiter = trio.lowlevel.current_task()

        def abort(_: object) -> trio.lowlevel.Abort:
            self._waiter = None
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        self._woken = False


class SnapshotManager:
    def __init__(
        self,
        root_fields: Callable[[str], dict[str, Any]],
        *,
        channel_size: int = 1024,
        max_sessions_per_user: int = DEFAULT_MAX_SESSIONS_PER_USER,
    ) -> None:
        """`root_fields(user_id)`: the fields a user's trade tree starts with (user_id, trading_day...);
        `max_sessions_per_user`: logged-in sessions one user may hold at once (0 = no limit)."""
        self._root_fields = root_fields
        self.max_sessions_per_user = max_sessions_per_user
        self._channel_size = channel_size
        self._running = False
        self._channels: dict[str, trio.MemorySendChannel[Patch]] = {}
        self._receivers: dict[str, trio.MemoryReceiveChannel[Patch]] = {}
        # Users whose channel has patches the consumer has not drained yet, in the order announced.
        self._ready: dict[str, None] = {}
        self._wakeup = trio.Event()
        self.trees: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, set[SessionLink]] = {}
        self.links: set[SessionLink] = set()
        # Sessions with new data whose writers are still to be woken, oldest first (see `run`).
        self._pacer = WakePacer[SessionLink](WAKE_BUDGET)
        self.patches_merged = 0
        # The per-event notification stream (qaex.exchange.notifications), fed every patch in order.
        self.notifications: NotificationHub | None = None
        # A core with a broker (qaex.exchange.broker_core): every patch in order, numbered and published.
        self.broker: Callable[[str, Patch], None] | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """The consumer: drains the channels of announced users, in order, one patch at a time.

        One task for all users, not one per user: a batch touching 500 users then costs one wake-up
        instead of 500 task switches, and every user's patches still arrive in the order they were sent.

        Every patch goes into its sessions' pending buffers at once, but the sessions' writers are
        woken at most :data:`WAKE_BUDGET` per scheduler pass (qaex.exchange.pacing, the scheme
        MarketData uses too). A round that touches more sessions than that (200 users with 50
        sessions each: 10,000 writers, about a second of sending) goes to a backlog that drains
        ``WAKE_BUDGET`` writers per pass, while the sessions of later, smaller rounds are woken
        first. Otherwise trio would run all 10,000 writers in one pass, and every other session's
        acknowledgement would wait behind them.
        """
        self._running = True
        task_status.started()
        log.info("snapshot manager ready")
        pacer = self._pacer
        try:
            while True:
                if not self._ready and not pacer.pending:
                    await self._wakeup.wait()
                    self._wakeup = trio.Event()
                ready, self._ready = self._ready, {}
                fresh: dict[SessionLink, None] = {}  # ordered, each session once
                for user_id in ready:
                    self._drain(user_id, fresh)
                pacer.wake(fresh)  # one pass's budget: this round if it fits, then the backlog
                # Give the gateway (and everyone else) a turn between two rounds.
                await trio.lowlevel.checkpoint()
        finally:
            self._running = False
            for channel in self._channels.values():
                channel.close()
            for receive in self._receivers.values():
                receive.close()

    # -- users ------------------------------------------------------------------------------------
    def tree(self, user_id: str) -> dict[str, Any]:
        tree = self.trees.get(user_id)
        if tree is None:
            tree = self.trees[user_id] = self._root_fields(user_id)
            log.info("user %s initialized", user_id)
        return tree

    def channel_for(self, user_id: str) -> trio.MemorySendChannel[Patch]:
        """The user's patch channel (created with the user's tree on first use).

        Whoever sends into it must then :meth:`announce` the user, or the patches wait there.
        """
        channel = self._channels.get(user_id)
        if channel is None:
            if not self._running:
                raise RuntimeError("SnapshotManager is not running")
            channel, self._receivers[user_id] = trio.open_memory_channel[Patch](self._channel_size)
            self._channels[user_id] = channel
            self.tree(user_id)
        return channel

    def announce(self, user_ids: Iterable[str]) -> None:
        """These users' channels have new patches: wake the consumer (once, however many users)."""
        self._ready.update(dict.fromkeys(user_ids))
        self._wakeup.set()

    def apply(self, user_id: str, patch: Patch, woken: dict[SessionLink, None] | None = None) -> None:
        """Push one patch into every one of the user's sessions and wake them (or list them in `woken`).

        The user's tree already holds the patch: the gateway writes it as it builds the patch.
        """
        self.patches_merged += 1
        if self.broker is not None:
            self.broker(user_id, patch)
        if self.notifications is not None:
            self.notifications.patch(user_id, patch)
        sessions = self.sessions.get(user_id)
        if not sessions:
            return
        patch = _without_trade_deletions(user_id, patch)
        for link in sessions:
            link.session.push(patch)
            link.mark_urgent()
            if woken is None:
                link.wake()
            else:
                woken[link] = None
            if log.isEnabledFor(logging.DEBUG):
                log.debug("patch pushed to session %s of %s", link.session.session_id, user_id)

    # -- sessions ---------------------------------------------------------------------------------
    def add(self, link: SessionLink) -> None:
        self.links.add(link)

    def login(self, link: SessionLink, user_id: str) -> None:
        """Attach a logged-in session to its user: it gets the full trade tree first, then every patch.

        Raises Conflict (``too_many_sessions``) when the user already holds `max_sessions_per_user`.

        The tree is ahead of the user's channel (the gateway writes patches into it before sending
        them), so the channel is drained first: the new session then starts from a tree that
        includes every patch the other sessions got, and gets only newer ones.
        """
        sessions = self.sessions.setdefault(user_id, set())
        if self.max_sessions_per_user and len(sessions) >= self.max_sessions_per_user:
            raise Conflict(
                f"登录失败: 连接数已达上限 (at most {self.max_sessions_per_user} sessions per user)",
                code="too_many_sessions",
                diff_code=NOTIFY_TOO_MANY_SESSIONS,
            )
        self.flush(user_id)
        link.session.logged_in(user_id)
        sessions.add(link)
        link.session.push({"trade": {user_id: copy_tree(self.tree(user_id))}})
        link.mark_urgent()
        link.wake()
        log.info("session %s logged in as %s", link.session.session_id, user_id)

    def full_view(self, user_id: str) -> Patch:
        """The whole trade tree of a user as one patch (for a session's resync).

        Drains the user's channel first (see :meth:`login`): a resyncing session must not get, after
        its full view, a patch the view already holds.
        """
        self.flush(user_id)
        return {"trade": {user_id: copy_tree(self.tree(user_id))}}

    def flush(self, user_id: str) -> None:
        """Deliver the patches waiting in the user's channel to the user's sessions now."""
        self._drain(user_id, None)

    def _drain(self, user_id: str, woken: dict[SessionLink, None] | None) -> None:
        receive = self._receivers.get(user_id)
        if receive is None:
            return
        while True:
            try:
                patch = receive.receive_nowait()
            except trio.WouldBlock:
                return
            self.apply(user_id, patch, woken)

    def remove(self, link: SessionLink) -> None:
        """Forget a closed session: its pending buffer goes with it; the user's tree stays."""
        link.closed = True
        self.links.discard(link)
        self._pacer.discard(link)
        user_id = link.session.user_id
        if user_id is not None:
            sessions = self.sessions.get(user_id)
            if sessions is not None:
                sessions.discard(link)
                if not sessions:
                    del self.sessions[user_id]


def _without_trade_deletions(user_id: str, patch: Patch) -> Patch:
    """``patch`` without its ``trades/{id}: null`` entries (a copy; the original is never mutated).

    A settlement removes the day's orders and trades. TqSdk 3.10.4 cannot take a deleted trade: its
    DataExtension looks every changed trade up again after the merge and fails with ``KeyError:
    '_path'``, killing TqApi (deleted orders are fine). So connected sessions keep yesterday's trades
    until they reconnect; the snapshot tree (what a new login or a resync sends) drops them.
    """
    user = patch.get("trade", {}).get(user_id)
    trades = user.get("trades") if type(user) is dict else None
    if type(trades) is not dict or None not in trades.values():
        return patch
    kept = {trade_id: trade for trade_id, trade in trades.items() if trade is not None}
    user = {key: value for key, value in user.items() if key != "trades"}
    if kept:
        user["trades"] = kept
    return {**patch, "trade": {**patch["trade"], user_id: user}}
