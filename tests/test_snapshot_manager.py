"""SnapshotManager on its own: per-user channels drained by one consumer, in order, with backpressure."""

from __future__ import annotations

import copy
import json
from typing import Any

import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from qaex.core.engine import Batch
from qaex.core.patch import merge_patch
from qaex.exchange.gateway import TradeGateway
from qaex.exchange.snapshot import SessionLink, SnapshotManager
from qaex.protocol.session import DiffSession

PEEK = b'{"aid":"peek_message"}'


def root(user_id: str) -> dict[str, Any]:
    return {"user_id": user_id, "orders": {}, "accounts": {}}


def peek_and_apply(link: SessionLink) -> dict[str, Any]:
    """Peek, take the rtn_data, and return what a client that applied it holds."""
    link.session.receive(PEEK)
    frame = link.session.data_to_send()
    assert frame is not None
    client: dict[str, Any] = {}
    for patch in json.loads(frame)["data"]:
        merge_patch(client, patch)
    return client


async def send(manager: SnapshotManager, user_id: str, patch: dict[str, Any]) -> None:
    """What the gateway does: send into the user's channel (waiting if it is full), then announce."""
    channel = manager.channel_for(user_id)
    try:
        channel.send_nowait(patch)
    except trio.WouldBlock:
        manager.announce([user_id])
        await channel.send(patch)
    manager.announce([user_id])


async def test_patches_of_many_users_arrive_in_order_through_a_full_channel() -> None:
    manager = SnapshotManager(root, channel_size=4)
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        links = {}
        for user in ("a", "b", "c"):
            links[user] = link = SessionLink(DiffSession(len(links) + 1))
            manager.add(link)
            manager.login(link, user)
        # 3 users x 200 patches through channels of 4: the sender waits on full channels many times.
        for i in range(200):
            for user in ("a", "b", "c"):
                patch = {"trade": {user: {"orders": {"o1": {"seq": i}, f"x{i}": {"n": i}}}}}
                await send(manager, user, patch)
        await trio.testing.wait_all_tasks_blocked()
        for user, link in links.items():
            client = peek_and_apply(link)
            orders = client["trade"][user]["orders"]
            assert orders["o1"] == {"seq": 199}  # the last one won: every patch applied in order
            assert len(orders) == 201
            assert orders["x150"] == {"n": 150}
        assert manager.patches_merged == 600
        nursery.cancel_scope.cancel()


async def test_a_login_never_gets_a_patch_older_than_its_snapshot() -> None:
    """The gateway writes the tree before the patch reaches the channel: login drains the channel."""
    manager = SnapshotManager(root)
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        early = SessionLink(DiffSession(1))
        manager.add(early)
        manager.login(early, "a")
        early.session.receive(PEEK)
        assert early.session.data_to_send() is not None
        for i in range(3):  # as the gateway does: into the tree, then into the channel
            manager.tree("a")["orders"][f"o{i}"] = {"status": "ALIVE"}
            manager.channel_for("a").send_nowait({"trade": {"a": {"orders": {f"o{i}": {"status": "ALIVE"}}}}})
        manager.tree("a")["orders"]["o0"]["status"] = "FINISHED"
        manager.channel_for("a").send_nowait({"trade": {"a": {"orders": {"o0": {"status": "FINISHED"}}}}})
        late = SessionLink(DiffSession(2))
        manager.add(late)
        manager.login(late, "a")  # before the consumer ran
        manager.announce(["a"])
        await trio.testing.wait_all_tasks_blocked()
        for link in (early, late):
            client = peek_and_apply(link)
            assert client["trade"]["a"]["orders"]["o0"] == {"status": "FINISHED"}
            assert len(client["trade"]["a"]["orders"]) == 3
            link.session.receive(PEEK)
            assert link.session.data_to_send() is None  # nothing older arrives afterwards
        nursery.cancel_scope.cancel()


async def test_a_user_sessions_see_each_patch_and_the_consumer_is_one_task() -> None:
    manager = SnapshotManager(root)
    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        links = [SessionLink(DiffSession(i)) for i in range(3)]
        for link in links:
            manager.add(link)
            manager.login(link, "a")
            link.session.receive(PEEK)
            assert link.session.data_to_send() is not None  # the login snapshot
            link.session.receive(PEEK)
        tasks_before = len(nursery.child_tasks)
        for user in (f"u{i}" for i in range(50)):
            await send(manager, user, {"trade": {user: {"accounts": {"CNY": {"balance": 1.0}}}}})
        await send(manager, "a", {"trade": {"a": {"accounts": {"CNY": {"balance": 5.0}}}}})
        await trio.testing.wait_all_tasks_blocked()
        assert len(nursery.child_tasks) == tasks_before  # no task per user
        for link in links:
            frame = link.session.data_to_send()
            assert frame is not None and b'"balance":5.0' in frame
        nursery.cancel_scope.cancel()


def test_channel_for_refuses_before_the_manager_runs() -> None:
    manager = SnapshotManager(root)
    try:
        manager.channel_for("a")
    except RuntimeError:
        pass
    else:  # pragma: no cover
        raise AssertionError("channel_for worked without a consumer")


# The gateway diffs against the user's tree and writes each patch into it: for any sequence of
# renderings, a client applying the patches ends with the tree, and the tree holds the renderings.
keys = st.sampled_from(["k1", "k2", "k3"])
fields = st.sampled_from(["f", "g", "h"])
scalars = st.one_of(st.integers(-2, 2), st.sampled_from(["x", "-"]), st.floats(allow_nan=False, width=16))
renderings = st.one_of(st.none(), st.dictionaries(fields, scalars, min_size=1, max_size=3))
batches = st.lists(
    st.dictionaries(
        st.sampled_from(["orders", "positions"]), st.dictionaries(keys, renderings, max_size=3), max_size=2
    ),
    max_size=8,
)


class TreeSink:
    def __init__(self) -> None:
        self.trees: dict[str, dict[str, Any]] = {}

    def tree(self, user_id: str) -> dict[str, Any]:
        return self.trees.setdefault(user_id, root(user_id))

    def channel_for(self, user_id: str) -> Any:  # pragma: no cover - build_patches never sends
        raise AssertionError

    def announce(self, user_ids: Any) -> None:  # pragma: no cover
        raise AssertionError


@given(batches)
def test_gateway_patches_rebuild_the_tree_it_keeps(rendered_batches: list[dict[str, Any]]) -> None:
    sink = TreeSink()
    gateway = TradeGateway(trio.open_memory_channel[Batch](1)[1], sink)
    client: dict[str, Any] = {}
    model: dict[str, dict[str, Any]] = {"orders": {}, "positions": {}}
    for kinds in rendered_batches:
        patches = gateway.build_patches(Batch(users={"a": copy.deepcopy(kinds)}))
        for patch in patches.values():
            merge_patch(client, copy.deepcopy(patch))
        for kind, objects in kinds.items():
            for key, rendering in objects.items():
                if rendering is None:
                    model[kind].pop(key, None)
                else:
                    model[kind].setdefault(key, {}).update(rendering)
    tree = sink.trees.get("a", root("a"))
    for kind in ("orders", "positions"):
        assert tree.get(kind, {}) == model[kind]
        assert client.get("trade", {}).get("a", {}).get(kind, {}) == model[kind]


async def test_gateway_waits_on_a_full_user_channel_and_loses_nothing() -> None:
    from qaex.core.engine import Engine
    from qaex.core.orders import InsertOrder
    from qaex.exchange.exchange import Exchange

    exchange = Exchange(Engine())
    exchange.snapshots._channel_size = 1  # every second patch of a user finds the channel full
    async with trio.open_nursery() as nursery:
        await nursery.start(exchange.run)
        for user in ("a", "b"):
            await exchange.open_account(user, "pw-123456", 1e9)
        async with trio.open_nursery() as load:
            for i in range(300):
                for user, direction in (("a", "BUY"), ("b", "SELL")):
                    order = InsertOrder(
                        user_id=user, order_id=f"{user}{i}", exchange_id="SHFE", instrument_id="rb2601",
                        direction=direction, offset="OPEN", volume=1, limit_price=3100.0 + i % 5,
                    )  # fmt: skip
                    load.start_soon(exchange.insert_order, order)
        for _ in range(10):
            await trio.testing.wait_all_tasks_blocked()
        for user in ("a", "b"):
            tree = exchange.snapshots.tree(user)
            engine_tree = exchange.engine.user_tree(user)
            assert tree["orders"].keys() == engine_tree["orders"].keys()
            assert {k: o["volume_left"] for k, o in tree["orders"].items()} == {
                k: o["volume_left"] for k, o in engine_tree["orders"].items()
            }
            assert (
                tree["positions"]["SHFE.rb2601"]["volume_long" if user == "a" else "volume_short"]
                == (engine_tree["positions"]["SHFE.rb2601"]["volume_long" if user == "a" else "volume_short"])
            )
        nursery.cancel_scope.cancel()


async def test_session_link_wake_and_wait() -> None:
    link = SessionLink(DiffSession(1))
    link.wake()  # no peek yet: nothing to send, so no wake-up
    with trio.move_on_after(0.05) as scope:
        await link.wait()
    assert scope.cancelled_caught  # cancelled while waiting: the waiter is cleared
    link.session.receive(PEEK)  # a peek with pending data (mdhis_more_data): wake-ups count now
    link.wake()
    with trio.fail_after(1):
        await link.wait()  # a wake-up before the wait is not lost
    woken = 0

    async def writer() -> None:
        nonlocal woken
        await link.wait()
        woken += 1

    async with trio.open_nursery() as nursery:
        nursery.start_soon(writer)
        await trio.testing.wait_all_tasks_blocked()
        assert woken == 0
        link.wake()
    assert woken == 1


async def test_a_round_touching_many_sessions_does_not_hold_up_later_ones(monkeypatch: Any) -> None:
    """Writers are woken WAKE_BUDGET per pass; a later small round's sessions go before the backlog."""
    from qaex.exchange import snapshot

    monkeypatch.setattr(snapshot, "WAKE_BUDGET", 10)
    woken: list[SessionLink] = []
    real_wake = SessionLink.wake
    manager = SnapshotManager(root)

    def recording_wake(self: SessionLink) -> None:
        woken.append(self)
        real_wake(self)
        if len(woken) == 10:  # the first round's budget is spent: now a small round comes in
            manager.channel_for("small").send_nowait({"trade": {"small": {"orders": {"1": {"n": 9}}}}})
            manager.announce(["small"])

    async with trio.open_nursery() as nursery:
        await nursery.start(manager.run)
        links: dict[str, list[SessionLink]] = {}
        for user_id, count in [
            ("big0", 10),
            ("big1", 10),
            ("big2", 10),
            ("big3", 10),
            ("big4", 10),
            ("small", 1),
        ]:
            links[user_id] = []
            for _ in range(count):
                link = SessionLink(DiffSession(len(manager.links) + 1))
                manager.add(link)
                manager.login(link, user_id)
                peek_and_apply(link)  # the login snapshot is taken; the next peek waits for data
                link.session.receive(PEEK)
                links[user_id].append(link)
        await trio.testing.wait_all_tasks_blocked()
        monkeypatch.setattr(SessionLink, "wake", recording_wake)
        for i in range(5):
            manager.channel_for(f"big{i}").send_nowait({"trade": {f"big{i}": {"orders": {"1": {"n": i}}}}})
        manager.announce(f"big{i}" for i in range(5))
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    small = links["small"][0]
    assert woken.index(small) == 10  # first in the next pass, before the 40 of the backlog
    every_big = {link for user_id, group in links.items() if user_id != "small" for link in group}
    assert set(woken) - {small} == every_big and len(woken) == 51  # all woken, each once
    for user_id, group in links.items():
        for link in group:
            expected = 9 if user_id == "small" else int(user_id[3:])
            assert peek_and_apply(link)["trade"][user_id]["orders"]["1"]["n"] == expected
