"""The DIFF engine end to end in one process: router -> engine -> gateway -> snapshot manager -> sessions.

Real services in a real trio nursery; sessions are the sans-IO DiffSession driven the way the
WebSocket handler drives it (feed frames, take rtn_data frames), so no network is involved.
"""

from __future__ import annotations

import itertools
import json
import math
import tracemalloc
from collections.abc import AsyncIterator
from typing import Any

import pytest
import trio
import trio.testing
from conftest import pinned_instruments

from qaex.core.engine import Engine
from qaex.core.errors import Conflict, QaexError
from qaex.core.orders import InsertOrder
from qaex.core.patch import merge_patch
from qaex.exchange import exchange as exchange_module
from qaex.exchange.exchange import Exchange
from qaex.exchange.snapshot import SessionLink
from qaex.protocol.session import DiffSession

_session_ids = itertools.count(1)
PEEK = b'{"aid":"peek_message"}'


class Client:
    """A DIFF client model: applies every rtn_data to its own tree, as TqSdk does."""

    def __init__(self, exchange: Exchange, **session_options: Any) -> None:
        self.exchange = exchange
        self.link = SessionLink(DiffSession(next(_session_ids), **session_options))
        exchange.snapshots.add(self.link)
        self.tree: dict[str, Any] = {}
        self.frames = 0

    def login(self, user_id: str) -> None:
        self.exchange.snapshots.login(self.link, user_id)

    def peek(self) -> None:
        self.link.session.receive(PEEK)

    def take(self) -> list[dict[str, Any]] | None:
        """One rtn_data if the session would send one now (resync handled as the writer does)."""
        session = self.link.session
        if session.resync_needed and session.user_id is not None:
            session.reset([self.exchange.snapshots.full_view(session.user_id)])
        frame = session.data_to_send()
        if frame is None:
            return None
        message = json.loads(frame)
        assert message["aid"] == "rtn_data"
        for patch in message["data"]:
            merge_patch(self.tree, patch)
        self.frames += 1
        data: list[dict[str, Any]] = message["data"]
        return data

    async def peek_and_wait(self, seconds: float = 5.0) -> list[dict[str, Any]]:
        self.peek()
        with trio.fail_after(seconds):
            while True:
                data = self.take()
                if data is not None:
                    return data
                await self.link.wait()

    async def settle_down(self) -> None:
        """Let every queued batch and patch flow through, then take whatever is pending."""
        await drain(self.exchange)
        self.peek()
        self.take()

    def trade(self, user_id: str) -> dict[str, Any]:
        tree: dict[str, Any] = self.tree["trade"][user_id]
        return tree


async def drain(exchange: Exchange) -> None:
    """Wait until the router, gateway and snapshot consumers are idle."""
    for _ in range(20):
        await trio.testing.wait_all_tasks_blocked()


@pytest.fixture
async def exchange(nursery: trio.Nursery) -> AsyncIterator[Exchange]:
    exchange = Exchange(Engine(pinned_instruments()))  # on the wall clock: contracts that never expire
    await nursery.start(exchange.run)
    for user in ("alice", "bob", "carol"):
        await exchange.open_account(user, "pw-123456", 1_000_000.0)
    yield exchange


def limit(user: str, order_id: str, direction: str, volume: int, price: float, **kw: Any) -> InsertOrder:
    return InsertOrder(
        user_id=user,
        order_id=order_id,
        exchange_id="SHFE",
        instrument_id="cu2601",
        direction=direction,
        offset=kw.pop("offset", "OPEN"),
        volume=volume,
        limit_price=price,
        **kw,  # type: ignore[arg-type]
    )


def assert_tree_matches_engine(client: Client, exchange: Exchange, user_id: str) -> None:
    expected = json.loads(
        json.dumps(exchange.engine.user_tree(user_id), allow_nan=True).replace("NaN", "null")
    )
    merge_patch(expected, {})  # drop nulls the way a client would
    actual = client.trade(user_id)
    for kind in ("accounts", "positions", "orders", "trades"):
        assert _clean(actual.get(kind, {})) == _clean(expected[kind]), kind


def _clean(tree: Any) -> Any:
    if isinstance(tree, dict):
        return {
            k: _clean(v)
            for k, v in tree.items()
            if v is not None and not (isinstance(v, float) and math.isnan(v))
        }
    if isinstance(tree, float):
        return round(tree, 6)
    return tree


async def test_a_waiting_peek_returns_the_trade_order_account_and_position_after_a_fill(
    exchange: Exchange,
) -> None:
    # The original design's unit test: a user peeks, a fill happens, the peek returns all four patches.
    alice = Client(exchange)
    alice.login("alice")
    await alice.peek_and_wait()  # the first peek brings the full snapshot
    await exchange.insert_order(limit("bob", "b1", "SELL", 2, 86000.0))
    await exchange.insert_order(limit("alice", "a1", "BUY", 2, 86000.0))
    await drain(exchange)
    data = await alice.peek_and_wait()
    merged: dict[str, Any] = {}
    for patch in data:
        merge_patch(merged, patch)
    user = merged["trade"]["alice"]
    (trade,) = user["trades"].values()
    assert (
        trade["order_id"] == "a1"
        and trade["volume"] == 2
        and trade["price"] == 86000.0
        and trade["commission"] > 0
    )
    assert user["orders"]["a1"]["status"] == "FINISHED" and user["orders"]["a1"]["volume_left"] == 0
    assert user["positions"]["SHFE.cu2601"]["volume_long_today"] == 2
    assert user["accounts"]["CNY"]["margin"] == pytest.approx(2 * 86000 * 5 * 0.1)
    assert_tree_matches_engine(alice, exchange, "alice")


async def test_order_appears_alive_with_status_and_exchange_order_id_together(exchange: Exchange) -> None:
    alice = Client(exchange)
    alice.login("alice")
    await alice.peek_and_wait()
    await exchange.insert_order(limit("alice", "a1", "BUY", 1, 85000.0))
    data = await alice.peek_and_wait()
    first = next(p for p in data if "trade" in p)["trade"]["alice"]["orders"]["a1"]
    assert first["status"] == "ALIVE" and first["exchange_order_id"] != ""


async def test_partial_fill_then_fill(exchange: Exchange) -> None:
    bob = Client(exchange)
    bob.login("bob")
    await bob.peek_and_wait()
    await exchange.insert_order(limit("bob", "b1", "SELL", 3, 86000.0))
    await exchange.insert_order(limit("alice", "a1", "BUY", 1, 86000.0))
    await bob.settle_down()
    order = bob.trade("bob")["orders"]["b1"]
    assert order["status"] == "ALIVE" and order["volume_left"] == 2
    await exchange.insert_order(limit("carol", "c1", "BUY", 2, 86000.0))
    await bob.settle_down()
    order = bob.trade("bob")["orders"]["b1"]
    assert order["status"] == "FINISHED" and order["volume_left"] == 0 and order["last_msg"] == "全部成交"
    assert len(bob.trade("bob")["trades"]) == 2
    assert bob.trade("bob")["positions"]["SHFE.cu2601"]["volume_short"] == 3
    assert_tree_matches_engine(bob, exchange, "bob")


async def test_cancel_after_partial_fill(exchange: Exchange) -> None:
    bob = Client(exchange)
    bob.login("bob")
    await exchange.insert_order(limit("bob", "b1", "SELL", 3, 86000.0))
    await exchange.insert_order(limit("alice", "a1", "BUY", 1, 86000.0))
    await exchange.cancel_order("bob", "b1")
    await bob.settle_down()
    order = bob.trade("bob")["orders"]["b1"]
    assert order["status"] == "FINISHED" and order["volume_left"] == 2 and order["last_msg"] == "已撤单"
    account = bob.trade("bob")["accounts"]["CNY"]
    assert account["frozen_margin"] == 0 and account["margin"] == pytest.approx(86000 * 5 * 0.1)
    assert_tree_matches_engine(bob, exchange, "bob")


async def test_rejected_order_is_finished_with_reason_and_an_error_notify(exchange: Exchange) -> None:
    alice = Client(exchange)
    alice.login("alice")
    await alice.peek_and_wait()
    await exchange.insert_order(limit("alice", "a1", "BUY", 100, 86000.0))  # 4.3M margin > 1M cash
    data = await alice.peek_and_wait()
    merged: dict[str, Any] = {}
    for patch in data:
        merge_patch(merged, patch)
    order = merged["trade"]["alice"]["orders"]["a1"]
    assert (
        order["status"] == "FINISHED"
        and order["exchange_order_id"] == ""
        and order["last_msg"] == "开仓资金不足"
    )
    (note,) = merged["notify"].values()
    assert note["level"] == "ERROR" and note["code"] == 413


async def test_two_users_trading_each_see_only_their_own_tree(exchange: Exchange) -> None:
    alice, bob = Client(exchange), Client(exchange)
    alice.login("alice")
    bob.login("bob")
    await exchange.insert_order(limit("bob", "b1", "SELL", 1, 86000.0))
    await exchange.insert_order(limit("alice", "a1", "BUY", 1, 86000.0))
    await alice.settle_down()
    await bob.settle_down()
    assert set(alice.tree["trade"]) == {"alice"}
    assert set(bob.tree["trade"]) == {"bob"}
    assert "b1" not in alice.trade("alice")["orders"]
    assert_tree_matches_engine(alice, exchange, "alice")
    assert_tree_matches_engine(bob, exchange, "bob")


async def test_three_sessions_of_one_user_each_get_everything(exchange: Exchange) -> None:
    sessions = [Client(exchange) for _ in range(3)]
    for session in sessions:
        session.login("alice")
    await exchange.insert_order(limit("bob", "b1", "SELL", 2, 86000.0))
    await exchange.insert_order(limit("alice", "a1", "BUY", 1, 86000.0))
    await exchange.insert_order(limit("alice", "a2", "BUY", 1, 86000.0))
    for session in sessions:
        await session.settle_down()
        assert set(session.trade("alice")["orders"]) == {"a1", "a2"}
        assert len(session.trade("alice")["trades"]) == 2
        assert_tree_matches_engine(session, exchange, "alice")


async def test_session_connecting_after_1000_fills_gets_one_complete_snapshot(exchange: Exchange) -> None:
    await exchange.deposit("alice", 100_000_000.0)
    await exchange.deposit("bob", 100_000_000.0)
    for i in range(500):
        await exchange.insert_order(limit("bob", f"b{i}", "SELL", 2, 86000.0))
        await exchange.insert_order(limit("alice", f"a{i}", "BUY", 1, 86000.0))
        await exchange.insert_order(limit("carol", f"c{i}", "BUY", 1, 86000.0))
    await drain(exchange)
    late = Client(exchange)
    late.login("alice")
    data = await late.peek_and_wait()
    assert late.frames == 1
    assert len(late.trade("alice")["trades"]) == 500
    assert data  # everything arrived in that one rtn_data
    assert_tree_matches_engine(late, exchange, "alice")


async def test_a_session_that_never_peeks_stays_bounded_and_resyncs_correctly(exchange: Exchange) -> None:
    await exchange.deposit("alice", 10_000_000_000.0)
    await exchange.deposit("bob", 10_000_000_000.0)
    sleeper = Client(exchange)
    sleeper.login("alice")
    session = sleeper.link.session
    pending_after_push: list[int] = []
    push = session.push

    def observed_push(patch: dict[str, Any]) -> None:
        push(patch)
        pending_after_push.append(session.pending_size)

    session.push = observed_push  # type: ignore[method-assign]
    tracemalloc.start()
    try:
        baseline = tracemalloc.get_traced_memory()[0]
        # Each round trip makes ~6 patches for alice (orders, account, position, mark-to-market):
        # 20,000 orders push well over 100,000 patch applications through the session.
        for i in range(10_000):
            await exchange.insert_order(limit("alice", f"a{i}", "BUY", 1, 86000.0 + 10 * (i % 7)))
            await exchange.insert_order(limit("bob", f"b{i}", "SELL", 1, 86000.0))
            if i % 1000 == 999:
                await drain(exchange)
        await drain(exchange)
        grown = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    assert exchange.snapshots.patches_merged >= 20_000
    # The session's pending patches were dropped when they passed the bound, at every push ...
    assert max(pending_after_push) <= session.pending_limit
    assert session.resync_needed and session.pending_size == 0
    # ... so what the run keeps is the day's state the exchange holds by design (20,000 orders and
    # 10,000 trades in the engine and the snapshot trees): 32.8 MB measured (CPython 3.11.7), against
    # 43.1 MB for the same run with the bound disabled (max_pending=10**12). 36 MB leaves ~10% slack
    # and still fails if the session kept its patches.
    assert grown < 36_000_000
    await sleeper.peek_and_wait()
    assert_tree_matches_engine(sleeper, exchange, "alice")


async def test_closed_sessions_leave_nothing_behind(exchange: Exchange) -> None:
    clients = [Client(exchange) for _ in range(exchange.snapshots.max_sessions_per_user)]
    for client in clients:
        client.login("alice")
    assert len(exchange.snapshots.sessions["alice"]) == len(clients)
    for client in clients:
        exchange.snapshots.remove(client.link)
    assert "alice" not in exchange.snapshots.sessions
    assert not exchange.snapshots.links
    assert "alice" in exchange.snapshots.trees  # the user's state stays


async def test_deposit_withdraw_and_settlement_reach_the_session(exchange: Exchange) -> None:
    alice = Client(exchange)
    alice.login("alice")
    await exchange.deposit("alice", 500.0)
    await exchange.withdraw("alice", 200.0)
    await alice.settle_down()
    account = alice.trade("alice")["accounts"]["CNY"]
    assert account["deposit"] == 500.0 and account["withdraw"] == 200.0
    assert len(alice.trade("alice")["transfers"]) == 2
    await exchange.insert_order(limit("bob", "b1", "SELL", 1, 86000.0))
    await exchange.insert_order(limit("alice", "a1", "BUY", 1, 86000.0))
    day = exchange.engine.trading_day
    await exchange.settle({"SHFE.cu2601": 86100.0})
    await alice.settle_down()
    tree = alice.trade("alice")
    assert tree["trading_day"] > day and tree["orders"] == {}
    # Connected sessions keep the day's trades (TqSdk cannot take a deleted trade); a new login has none.
    assert len(tree["trades"]) == 1
    late = Client(exchange)
    late.login("alice")
    await late.peek_and_wait()
    assert late.trade("alice")["trades"] == {}
    assert_tree_matches_engine(late, exchange, "alice")
    position = tree["positions"]["SHFE.cu2601"]
    assert position["volume_long_his"] == 1 and position["position_price_long"] == 86100.0
    assert tree["accounts"]["CNY"]["pre_balance"] == pytest.approx(1_000_300.0 + 500 - 86000 * 5 * 0.00005)
    # Until the next trade, positions are marked at the settlement price.
    assert position["position_profit_long"] == 0.0 and tree["accounts"]["CNY"]["position_profit"] == 0.0


async def test_price_move_marks_every_holder_to_market(exchange: Exchange) -> None:
    alice = Client(exchange)
    alice.login("alice")
    await exchange.insert_order(limit("bob", "b1", "SELL", 1, 86000.0))
    await exchange.insert_order(limit("alice", "a1", "BUY", 1, 86000.0))
    await exchange.insert_order(limit("bob", "b2", "SELL", 1, 86500.0))
    await exchange.insert_order(limit("carol", "c1", "BUY", 1, 86500.0))
    await alice.settle_down()

    def marked() -> bool:
        return bool(alice.trade("alice")["positions"]["SHFE.cu2601"]["last_price"] == 86500.0)

    # Alice took no part in the 86500 fill: only the mark-to-market pass, on its timer, reaches her.
    with trio.fail_after(exchange.mark_interval * 10):
        while not marked():
            await alice.peek_and_wait()
    position = alice.trade("alice")["positions"]["SHFE.cu2601"]
    assert position["last_price"] == 86500.0
    assert position["float_profit_long"] == pytest.approx(500 * 5)
    assert alice.trade("alice")["accounts"]["CNY"]["position_profit"] == pytest.approx(500 * 5)


async def test_opening_a_taken_or_malformed_id_is_refused_before_the_password_is_hashed(
    exchange: Exchange, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_hashing(password: str) -> str:
        raise AssertionError("hashed a password for an account that cannot be opened")

    monkeypatch.setattr(exchange_module, "hash_password", no_hashing)
    seq = exchange.engine.seq
    for user_id, code in (("alice", "user_exists"), ("a.b", "bad_user_id")):
        with pytest.raises(QaexError) as refused:
            await exchange.open_account(user_id, "pw-123456")
        assert refused.value.code == code
    assert exchange.engine.seq == seq  # nothing reached the engine


async def test_the_engine_decides_when_two_openings_of_one_id_race(exchange: Exchange) -> None:
    outcomes: list[str] = []

    async def open_dave() -> None:
        try:
            await exchange.open_account("dave", "pw-123456")
            outcomes.append("opened")
        except Conflict as exc:
            outcomes.append(exc.code)

    async with trio.open_nursery() as nursery:  # both pass the early check, then hash at once
        nursery.start_soon(open_dave)
        nursery.start_soon(open_dave)
    assert sorted(outcomes) == ["opened", "user_exists"]
