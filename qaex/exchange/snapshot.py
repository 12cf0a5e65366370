"""SnapshotManager: per-user trade trees and the fan-out of patches to DIFF sessions.

Each user has a memory channel from the TradeGateway and one consumer task in the manager's own
nursery (started when the user's first patch is sent, never detached). The consumer merges every
patch into the user's current trade tree, so that a session logging in later starts from one complete
snapshot, and pushes the patch into the pending buffer of each of that user's sessions, then wakes
them. Pending buffers coalesce and are bounded (see qaex.protocol.session): a session that stops
peeking costs about one snapshot, never an unbounded queue.

Sessions also receive market data (quotes, charts): `SessionLink` is the trio side of one
connection, a DiffSession plus the event its writer task waits on.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from typing import Any

import trio

from qaex.core.patch import merge_patch
from qaex.protocol.session import DiffSession

log = logging.getLogger("qaex.snapshot")

Patch = dict[str, Any]


class SessionLink:
    """One connected DIFF session as the exchange sees it: protocol state and a wake-up for its writer."""

    __slots__ = ("_wakeup", "closed", "session")

    def __init__(self, session: DiffSession) -> None:
        self.session = session
        self._wakeup = trio.Event()
        self.closed = False

    def wake(self) -> None:
        """Tell the writer there is something to send: a peek is waiting and data is pending.

        Without a waiting peek the writer could send nothing, so it is not woken (a task switch per
        patch saved); the peek's arrival wakes it later.
        """
        if self.session.wants_data():
            self._wakeup.set()

    async def wait(self) -> None:
        await self._wakeup.wait()
        self._wakeup = trio.Event()


class SnapshotManager:
    def __init__(self, root_fields: Callable[[str], dict[str, Any]], *, channel_size: int = 1024) -> None:
        """`root_fields(user_id)`: the fields a user's trade tree starts with (user_id, trading_day...)."""
        self._root_fields = root_fields
        self._channel_size = channel_size
        self._nursery: trio.Nursery | None = None
        self._channels: dict[str, trio.MemorySendChannel[Patch]] = {}
        self.trees: dict[str, dict[str, Any]] = {}
        self.sessions: dict[str, set[SessionLink]] = {}
        self.links: set[SessionLink] = set()
        self.patches_merged = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            log.info("snapshot manager ready")
            try:
                await trio.sleep_forever()
            finally:
                for channel in self._channels.values():
                    channel.close()

    # -- users ------------------------------------------------------------------------------------
    def tree(self, user_id: str) -> dict[str, Any]:
        tree = self.trees.get(user_id)
        if tree is None:
            tree = self.trees[user_id] = self._root_fields(user_id)
            log.info("user %s initialized", user_id)
        return tree

    def channel_for(self, user_id: str) -> trio.MemorySendChannel[Patch]:
        """The user's patch channel; the first call starts the user's consumer task."""
        channel = self._channels.get(user_id)
        if channel is None:
            if self._nursery is None:
                raise RuntimeError("SnapshotManager is not running")
            channel, receive = trio.open_memory_channel[Patch](self._channel_size)
            self._channels[user_id] = channel
            self.tree(user_id)
            self._nursery.start_soon(self._consume, user_id, receive, name=f"snapshot:{user_id}")
        return channel

    async def _consume(self, user_id: str, receive: trio.MemoryReceiveChannel[Patch]) -> None:
        async with receive:
            async for patch in receive:
                self.apply(user_id, patch)
                while True:  # drain what is queued without a scheduler round trip per patch
                    try:
                        patch = receive.receive_nowait()
                    except trio.WouldBlock:
                        break
                    self.apply(user_id, patch)

    def apply(self, user_id: str, patch: Patch) -> None:
        """Merge one patch into the user's tree and every one of the user's sessions; wake them."""
        trade = patch.get("trade")
        if trade is not None:
            merge_patch(self.tree(user_id), trade[user_id])
        self.patches_merged += 1
        patch = _without_trade_deletions(user_id, patch)
        for link in self.sessions.get(user_id, ()):
            link.session.push(patch)
            link.wake()
            if log.isEnabledFor(logging.DEBUG):
                log.debug("patch pushed to session %s of %s", link.session.session_id, user_id)

    # -- sessions ---------------------------------------------------------------------------------
    def add(self, link: SessionLink) -> None:
        self.links.add(link)

    def login(self, link: SessionLink, user_id: str) -> None:
        """Attach a logged-in session to its user: it gets the full trade tree first, then every patch."""
        link.session.logged_in(user_id)
        self.sessions.setdefault(user_id, set()).add(link)
        link.session.push({"trade": {user_id: copy.deepcopy(self.tree(user_id))}})
        link.wake()
        log.info("session %s logged in as %s", link.session.session_id, user_id)

    def full_view(self, user_id: str) -> Patch:
        """The whole trade tree of a user as one patch (for a session's resync)."""
        return {"trade": {user_id: copy.deepcopy(self.tree(user_id))}}

    def remove(self, link: SessionLink) -> None:
        """Forget a closed session: its pending buffer goes with it; the user's tree stays."""
        link.closed = True
        self.links.discard(link)
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
