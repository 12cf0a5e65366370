"""SnapshotManager on its own: per-user channels drained by one consumer, in order, with backpressure."""

from __future__ import annotations

import copy
from typing import Any

import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st

from qaex.core.patch import merge_patch
from qaex.exchange.snapshot import SessionLink, SnapshotManager, merge_user_patch
from qaex.protocol.session import DiffSession

PEEK = b'{"aid":"peek_message"}'


def root(user_id: str) -> dict[str, Any]:
    return {"user_id": user_id, "orders": {}, "accounts": {}}


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
        # 3 users x 200 patches through channels of 4: the sender waits on full channels many times.
        for i in range(200):
            for user in ("a", "b", "c"):
                await send(
                    manager, user, {"trade": {user: {"orders": {"o1": {"seq": i}, f"x{i}": {"n": i}}}}}
                )
        await trio.testing.wait_all_tasks_blocked()
        for user in ("a", "b", "c"):
            orders = manager.tree(user)["orders"]
            assert orders["o1"] == {"seq": 199}  # the last one won: every patch applied in order
            assert len(orders) == 201
            assert orders["x150"] == {"n": 150}
        assert manager.patches_merged == 600
        assert manager.records_merged == 600 * 2
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


# merge_user_patch must equal the general RFC 7386 merge on every input, not just the gateway's shape.
keys = st.sampled_from(["a", "b", "c"])
scalars = st.one_of(st.integers(-2, 2), st.sampled_from(["x", "-"]), st.floats(allow_nan=False, width=16))
records = st.one_of(
    st.none(),
    scalars,
    st.dictionaries(
        keys, st.one_of(scalars, st.none(), st.dictionaries(keys, scalars, max_size=2)), max_size=3
    ),
)
kind_changes = st.one_of(st.none(), scalars, st.dictionaries(keys, records, max_size=3))
user_patches = st.dictionaries(
    st.sampled_from(["orders", "accounts", "trading_day"]), kind_changes, max_size=3
)
trees = st.dictionaries(
    st.sampled_from(["orders", "accounts", "trading_day"]),
    st.one_of(
        scalars,
        st.dictionaries(keys, st.one_of(scalars, st.dictionaries(keys, scalars, max_size=3)), max_size=3),
    ),
    max_size=3,
)


@given(trees, st.lists(user_patches, max_size=6))
def test_merge_user_patch_equals_merge_patch(tree: dict[str, Any], patches: list[dict[str, Any]]) -> None:
    fast, general = copy.deepcopy(tree), copy.deepcopy(tree)
    for patch in patches:
        original = copy.deepcopy(patch)
        merge_user_patch(fast, patch)
        merge_patch(general, patch)
        assert patch == original  # never mutated
    assert fast == general
    # Nothing in the tree is shared with a patch: later merges never write into a patch.
    for patch in patches:
        snapshot = copy.deepcopy(patch)
        merge_user_patch(fast, {"orders": {"a": {"b": 1}}, "accounts": {"a": {"c": 2}}})
        assert patch == snapshot


async def test_gateway_waits_on_a_full_user_channel_and_loses_nothing() -> None:
    from qaex.core.engine import Engine
    from qaex.core.orders import InsertOrder
    from qaex.exchange.exchange import Exchange

    exchange = Exchange(Engine())
    exchange.snapshots._channel_size = 1  # every second patch of a user finds the channel full
    async with trio.open_nursery() as nursery:
        await nursery.start(exchange.run)
        for user in ("a", "b"):
            await exchange.open_account(user, "pw", 1e9)
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
