"""Acknowledged means durable: `kill -9` the real server mid-load, restart it, check what survived.

Several HTTP clients and one DIFF client trade against each other; at a random moment the worker
process (the one holding the data directory lock) gets SIGKILL. A second server then starts on the
same data directory, and the test checks what every client was told against what it finds:

* every order a client got an answer for exists, in the acknowledged state or a later one;
* each order's trades add up to ``volume_orign - volume_left``; every exchange trade has both sides;
* accounts agree with the trades (commission, positions, margin), and the books hold exactly the
  orders that are still open;
* DIFF sessions after the restart see the same orders, trades and account as the HTTP API.
"""

from __future__ import annotations

import os
import random
import signal
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from conftest import Server, User, launch, open_user, wait_ready

from qaex.client import DiffClient
from qaex.core.engine import MAX_REJECTED_KEPT

SYMBOLS = {"SHFE.cu2601": (86000.0, 10.0), "SHFE.rb2601": (3100.0, 1.0)}
ENV = {"QAEX_MAX_ORDERS_PER_SECOND": "0", "QAEX_MAX_MESSAGES_PER_SECOND": "100000"}
DIFF_BURST = 25
INIT_CASH = 1e9


@dataclass
class Acks:
    """What the clients were told: the last answer about each order."""

    orders: dict[str, dict[str, Any]] = field(default_factory=dict)  # order_id -> order as answered
    owner: dict[str, str] = field(default_factory=dict)  # order_id -> user_id
    cancelled: set[str] = field(default_factory=set)  # cancels answered 200
    target: int = 0  # set `reached` once this many orders were acknowledged
    reached: trio.Event = field(default_factory=trio.Event)

    def record(self, user_id: str, order: dict[str, Any]) -> None:
        self.orders[order["order_id"]] = order
        self.owner[order["order_id"]] = user_id
        if self.target and len(self.orders) >= self.target:
            self.reached.set()


def worker_pid(server: Server) -> int:
    """hypercorn's CLI spawns the worker that runs the exchange; it writes its pid into LOCK."""
    return int((server.data_dir / "LOCK").read_text())


def random_order(rng: random.Random) -> tuple[str, str, float, int]:
    symbol = rng.choice(list(SYMBOLS))
    mid, tick = SYMBOLS[symbol]
    return symbol, rng.choice(("BUY", "SELL")), mid + tick * rng.randint(-3, 3), rng.randint(1, 3)


async def http_trader(server: Server, user: User, seed: int, acks: Acks) -> None:
    rng = random.Random(seed)
    headers = {"Authorization": f"Bearer {user.token}"}
    live: list[str] = []
    async with httpx.AsyncClient(base_url=server.http_url, headers=headers, timeout=10) as client:
        try:
            for n in range(100_000):
                if live and rng.random() < 0.3:
                    order_id = live.pop(rng.randrange(len(live)))
                    answer = await client.post("/api/order/cancel", json={"order_id": order_id})
                    if answer.status_code == 200:
                        acks.record(user.user_id, answer.json())
                        acks.cancelled.add(order_id)
                    else:
                        assert answer.json()["error"]["code"] == "order_finished", answer.text
                    continue
                symbol, direction, price, volume = random_order(rng)
                order_id = f"h{seed}-{n}"
                answer = await client.post(
                    "/api/order/submit",
                    json={
                        "order_id": order_id, "instrument_id": symbol, "direction": direction,
                        "offset": "OPEN", "volume": volume, "price": price,
                    },
                )  # fmt: skip
                if answer.status_code == 422:  # rejected (self-trade): still an order, FINISHED
                    order = answer.json()["order"]
                else:
                    assert answer.status_code == 200, answer.text
                    order = answer.json()
                acks.record(user.user_id, order)
                if order["status"] == "ALIVE":
                    live.append(order_id)
        except httpx.TransportError:
            return  # the server was killed: this request's outcome is unknown, and that is allowed


async def diff_trader(server: Server, user: User, seed: int, acks: Acks) -> None:
    """Bursts of orders over DIFF, a few cancels; an order is acknowledged once an rtn_data shows it.

    DIFF lets a client pipeline, so this is where most of the load comes from.
    """
    rng = random.Random(seed)
    try:
        async with DiffClient.connect(server.diff_url) as client:
            assert await client.login(user.user_id, user.password)
            for burst in range(100_000):
                ids = [f"d{seed}-{burst}-{k}" for k in range(DIFF_BURST)]
                for order_id in ids:
                    symbol, direction, price, volume = random_order(rng)
                    await client.insert_order(order_id, symbol, direction, "OPEN", volume, price)
                await client.wait_for(lambda c, ids=ids: all(i in c.trade().get("orders", {}) for i in ids))
                for order_id in ids:
                    order = dict(client.order(order_id))
                    acks.record(user.user_id, order)
                    if order["status"] == "ALIVE" and rng.random() < 0.3:
                        await client.cancel_order(order_id)
    except Exception:
        return  # connection closed by the kill, in whatever wrapping trio gives it


async def run_load_and_kill(server: Server, users: list[User], diff_users: list[User], kill_at: int) -> Acks:
    acks = Acks(target=kill_at)
    async with trio.open_nursery() as nursery:
        for index, user in enumerate(users):
            nursery.start_soon(http_trader, server, user, index, acks)
        for index, user in enumerate(diff_users):
            nursery.start_soon(diff_trader, server, user, 90 + index, acks)
        with trio.move_on_after(15):
            await acks.reached.wait()
        await trio.sleep(random.random() / 20)  # and then some: kill inside whatever is in flight
        os.kill(worker_pid(server), signal.SIGKILL)
    await trio.to_thread.run_sync(server.process.wait)
    return acks


def fetch(server: Server, user: User, path: str) -> Any:
    answer = httpx.get(server.http_url + path, headers={"Authorization": f"Bearer {user.token}"})
    assert answer.status_code == 200, answer.text
    return answer.json()


def check_invariants(server: Server, users: list[User], acks: Acks) -> dict[str, dict[str, Any]]:
    """Everything the docstring promises; returns each user's orders, trades and account."""
    seen: dict[str, dict[str, Any]] = {}
    trade_sides: Counter[str] = Counter()
    resting: dict[tuple[str, str], Counter[float]] = defaultdict(Counter)
    for user in users:
        orders = fetch(server, user, "/api/orders")["orders"]
        trades = fetch(server, user, "/api/trades")["trades"]
        account = fetch(server, user, "/api/account")
        positions = fetch(server, user, "/api/positions")["positions"]
        seen[user.user_id] = {"orders": orders, "trades": trades, "account": account}
        traded: Counter[str] = Counter()
        longs: Counter[str] = Counter()
        shorts: Counter[str] = Counter()
        for trade in trades.values():
            traded[trade["order_id"]] += trade["volume"]
            trade_sides[trade["exchange_trade_id"]] += 1
            symbol = f"{trade['exchange_id']}.{trade['instrument_id']}"
            (longs if trade["direction"] == "BUY" else shorts)[symbol] += trade["volume"]
        for order_id, order in orders.items():
            assert traded[order_id] == order["volume_orign"] - order["volume_left"], order
            if order["status"] == "ALIVE":
                side = "bids" if order["direction"] == "BUY" else "asks"
                resting[(f"{order['exchange_id']}.{order['instrument_id']}", side)][order["limit_price"]] += (
                    order["volume_left"]
                )
        for symbol in set(longs) | set(shorts) | set(positions):
            assert positions[symbol]["volume_long"] == longs[symbol], symbol
            assert positions[symbol]["volume_short"] == shorts[symbol], symbol
        assert account["commission"] == pytest.approx(sum(t["commission"] for t in trades.values()))
        assert account["close_profit"] == 0  # every order opens
        assert account["margin"] == pytest.approx(sum(p["margin"] for p in positions.values()))
        assert account["static_balance"] == pytest.approx(INIT_CASH)
    # Every acknowledged order is there, in the state it was acknowledged in or a later one; only an
    # order the risk checks refused may be gone, and only once the day keeps MAX_REJECTED_KEPT newer ones.
    for order_id, acked in acks.orders.items():
        user_id = acks.owner[order_id]
        now = seen[user_id]["orders"].get(order_id)
        if now is None and acked["status"] == "FINISHED" and not acked["exchange_order_id"]:
            refused = [o for o in seen[user_id]["orders"].values() if not o["exchange_order_id"]]
            assert len(refused) == MAX_REJECTED_KEPT, f"refused order {order_id} of {user_id} dropped early"
            assert all(o["seqno"] > acked["seqno"] for o in refused), (acked, refused)
            continue
        assert now is not None, f"acknowledged order {order_id} of {user_id} is lost"
        assert now["volume_left"] <= acked["volume_left"], (acked, now)
        if acked["status"] == "FINISHED":
            assert now == acked or now["volume_left"] == acked["volume_left"], (acked, now)
            assert now["status"] == "FINISHED"
        if order_id in acks.cancelled:
            assert now["status"] == "FINISHED"
    # Both sides of every exchange trade, each exactly once (trade ids are dict keys per user).
    assert trade_sides and set(trade_sides.values()) == {2}
    # The books hold exactly the open orders.
    for symbol in SYMBOLS:
        depth = httpx.get(f"{server.http_url}/api/market/depth/{symbol}", params={"levels": 50}).json()
        for side in ("bids", "asks"):
            in_book = {price: volume for price, volume in depth[side]}
            assert in_book == dict(resting[(symbol, side)]), (symbol, side)
    return seen


async def check_diff_trees(server: Server, user: User, seen: dict[str, Any]) -> None:
    """A session after the restart starts from the complete tree, equal to what HTTP shows."""
    async with DiffClient.connect(server.diff_url) as client:
        assert await client.login(user.user_id, user.password)
        tree = client.trade()
        assert set(tree["orders"]) == set(seen["orders"])
        for order_id, order in seen["orders"].items():
            assert tree["orders"][order_id]["status"] == order["status"]
            assert tree["orders"][order_id]["volume_left"] == order["volume_left"]
        assert set(tree["trades"]) == set(seen["trades"])
        assert tree["accounts"]["CNY"]["balance"] == pytest.approx(seen["account"]["balance"])


def relogin(server: Server, user: User) -> User:
    """The token signing secret lives in the data directory, so tokens survive the restart."""
    client = httpx.Client(base_url=server.http_url, headers={"Authorization": f"Bearer {user.token}"})
    server.clients.append(client)
    return User(user.user_id, user.password, user.token, client)


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_kill_9_mid_load_loses_nothing_acknowledged(tmp_path: Path, seed: int) -> None:
    # Checkpoints every few hundred records, so some kills land after a checkpoint and replay less.
    env = ENV | {"QAEX_CHECKPOINT_RECORDS": "400"}
    first = launch(tmp_path, extra_env=env)
    wait_ready(first)
    users = [open_user(first, init_cash=INIT_CASH) for _ in range(2)]
    diff_users = [open_user(first, init_cash=INIT_CASH) for _ in range(2)]
    for client in first.clients:
        client.close()
    kill_at = random.Random(seed).randint(1000, 2500)  # acknowledged orders before the kill
    acks = await run_load_and_kill(first, users, diff_users, kill_at)
    assert len(acks.orders) >= kill_at, "the load should have been running when the server was killed"

    second = launch(tmp_path, data_dir=first.data_dir, extra_env=env)
    try:
        wait_ready(second)
        everyone = [relogin(second, user) for user in [*users, *diff_users]]
        seen = check_invariants(second, everyone, acks)
        for user in (diff_users[0], users[0]):
            await check_diff_trees(second, user, seen[user.user_id])
        # And it trades on: a new order is accepted (at the lower limit, so that it can never meet one
        # of the user's own resting sells, which the self-trade rule would refuse).
        after = everyone[0].post(
            "/api/order/submit",
            json={
                "instrument_id": "SHFE.cu2601",
                "direction": "BUY",
                "offset": "OPEN",
                "volume": 1,
                "price": 79980,
            },
        )
        assert after.status_code == 200, after.text
    finally:
        code = second.stop()
    assert code == 0, second.log()


def state_digest(server: Server) -> dict[str, Any]:
    answer = httpx.get(
        server.http_url + "/api/admin/state-digest", headers={"Authorization": f"Bearer {server.admin_token}"}
    )
    assert answer.status_code == 200, answer.text
    digest: dict[str, Any] = answer.json()
    return digest


async def quiet_digest(server: Server) -> dict[str, Any]:
    """The digest once the state stops changing (the mark-to-market timer runs after the last trade)."""
    digest = state_digest(server)
    with trio.fail_after(10):
        while True:
            await trio.sleep(0.5)
            again = state_digest(server)
            if again == digest:
                return digest
            digest = again


async def test_graceful_restart_keeps_the_state_digest(tmp_path: Path) -> None:
    first = launch(tmp_path, extra_env=ENV)
    wait_ready(first)
    users = [open_user(first, init_cash=INIT_CASH) for _ in range(2)]
    diff_user = open_user(first, init_cash=INIT_CASH)
    acks = Acks(target=200)
    async with trio.open_nursery() as nursery:
        for index, user in enumerate(users):
            nursery.start_soon(http_trader, first, user, index, acks)
        nursery.start_soon(diff_trader, first, diff_user, 7, acks)
        with trio.move_on_after(15):
            await acks.reached.wait()
        nursery.cancel_scope.cancel()
    before = await quiet_digest(first)
    assert before["seq"] >= 200
    assert first.stop() == 0, first.log()
    assert f"state digest {before['digest']}" in first.log()

    second = launch(tmp_path, data_dir=first.data_dir, extra_env=ENV)
    try:
        wait_ready(second)
        assert state_digest(second) == before
        assert "records replayed" in second.log()
    finally:
        assert second.stop() == 0, second.log()
