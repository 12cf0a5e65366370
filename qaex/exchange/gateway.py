"""TradeGateway: engine batches in, per-user DIFF merge patches out.

For every user a batch touched, the gateway compares each rendered object (order, trade, position,
account, transfer) with what it sent before and builds one merge patch of only the changed fields,
rooted at ``trade/{user_id}``; notifies ride in the same patch under ``notify``. "What it sent
before" is the user's trade tree kept by the SnapshotManager: the gateway applies each patch to it
as it builds the patch, so there is one copy of every user's state, not a snapshot plus a shadow
(the manager drains a user's channel before it copies the tree for a session, see
SnapshotManager.login). Each user's patches go over that user's memory channel to the
SnapshotManager, which is then told which users have new patches (one wake-up per batch). The
gateway never awaits a network peer: the only thing it can wait on is a full user channel, which is
backpressure from the SnapshotManager, never from a client.

A batch with market-level effects (trades, changed books with their depth, instrument and main-contract
changes) is forwarded unchanged to the market-data service, if one is attached.
"""

from __future__ import annotations

import itertools
import logging
import secrets
from collections.abc import Iterable
from typing import Any, Protocol

import trio

from qaex.core.engine import Batch

log = logging.getLogger("qaex.gateway")

Patch = dict[str, Any]


class PatchSink(Protocol):
    """Where per-user patches go: the SnapshotManager."""

    def channel_for(self, user_id: str) -> trio.MemorySendChannel[Patch]: ...

    def tree(self, user_id: str) -> dict[str, Any]:
        """The user's trade tree: what the user's sessions are built from, and what was sent."""
        ...

    def announce(self, user_ids: Iterable[str]) -> None:
        """Patches were sent into these users' channels: the consumer should drain them."""


class TradeGateway:
    def __init__(
        self,
        batches: trio.MemoryReceiveChannel[Batch],
        sink: PatchSink,
        market: trio.MemorySendChannel[Batch] | None = None,
    ) -> None:
        self._batches = batches
        self._sink = sink
        self._market = market
        self._notify_ids = itertools.count(1)
        # Notify keys must be new to every client, also one that reconnects after a restart.
        self._notify_prefix = f"qaex-{secrets.token_hex(3)}-g"
        self.patches_sent = 0
        self.records_sent = 0
        # Accounts nobody can log in as (the liquidity simulator's): no patches, no trees to keep.
        self.silent_users: set[str] = set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        log.info("gateway ready")
        async with self._batches:
            async for batch in self._batches:
                await self.dispatch(batch)

    async def dispatch(self, batch: Batch) -> None:
        patches = self.build_patches(batch)
        sink = self._sink
        sent: list[str] = []
        for user_id, patch in patches.items():
            channel = sink.channel_for(user_id)
            try:
                channel.send_nowait(patch)  # the usual case: no scheduler round trip per patch
            except trio.WouldBlock:
                # Backpressure from the snapshot manager: let it drain this user's channel first.
                sink.announce([*sent, user_id])
                sent.clear()
                await channel.send(patch)
            sent.append(user_id)
        if sent:
            sink.announce(sent)
        await trio.lowlevel.checkpoint()
        self.patches_sent += len(patches)
        market = self._market
        if market is not None and (
            batch.market_trades or batch.depth_changed or batch.instruments_changed or batch.main_contracts
        ):
            await market.send(batch)

    def build_patches(self, batch: Batch) -> dict[str, Patch]:
        """One merge patch per user with only what changed since that user's previous patch."""
        patches: dict[str, Patch] = {}
        silent = self.silent_users
        user_tree = self._sink.tree
        debug = log.isEnabledFor(logging.DEBUG)
        records = 0
        for user_id, kinds in batch.users.items():
            if user_id in silent:
                continue
            sent = user_tree(user_id)
            tree: dict[str, Any] = {}
            for kind, objects in kinds.items():
                sent_objects = sent.get(kind)
                if type(sent_objects) is not dict:
                    sent_objects = sent[kind] = {}
                changes: dict[str, Any] = {}
                for key, rendered in objects.items():
                    before = sent_objects.get(key)
                    if before is None:
                        if rendered is not None:
                            changes[key] = rendered
                            sent_objects[key] = rendered.copy()  # the patch carries `rendered` itself
                        elif key in sent_objects:
                            del sent_objects[key]
                            changes[key] = None
                    elif rendered is None:
                        del sent_objects[key]
                        changes[key] = None
                    else:
                        # Rendered records are flat, and may be partial (a mark sends only the marked
                        # fields): one pass over what was rendered, then the tree takes the changes.
                        # (A plain loop: a comprehension is a function call of its own before 3.12.)
                        get = before.get
                        delta = {}
                        for name, value in rendered.items():
                            if get(name) != value:
                                delta[name] = value
                        if delta:
                            changes[key] = delta
                            before.update(delta)
                if changes:
                    tree[kind] = changes
                    records += len(changes)
            if batch.settled:
                tree["trading_day"] = sent["trading_day"] = batch.trading_day
                tree["session"] = {"trading_day": batch.trading_day}
                session = sent.get("session")
                if type(session) is dict:
                    session["trading_day"] = batch.trading_day
                else:
                    sent["session"] = {"trading_day": batch.trading_day}
            if tree:
                patches[user_id] = {"trade": {user_id: tree}}
                if debug:
                    log.debug("user %s: patch of %s", user_id, ", ".join(sorted(tree)))
        self.records_sent += records
        for user_id, notes in batch.notifies.items():
            if user_id in silent:
                continue
            patch = patches.get(user_id)
            if patch is None:
                patch = patches[user_id] = {}
            patch["notify"] = {
                f"{self._notify_prefix}{next(self._notify_ids)}": {
                    "type": "MESSAGE",
                    "level": level,
                    "code": code,
                    "content": text,
                }
                for code, level, text in notes
            }
            if log.isEnabledFor(logging.DEBUG):
                for code, level, text in notes:
                    log.debug("user %s: notify %s %s %s", user_id, level, code, text)
        return patches
