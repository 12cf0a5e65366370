"""DIFF over real WebSockets against the real server (hypercorn subprocess, trio-websocket listener)."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import Server, User, launch, open_user, wait_ready
from trio_websocket import ConnectionClosed, ConnectionRejected, open_websocket_url

from qaex.client import DiffClient

CU = "SHFE.cu2601"


def has_trade(client: DiffClient, order_id: str) -> bool:
    return any(t.get("order_id") == order_id for t in client.trade().get("trades", {}).values())


def error_notify(client: DiffClient, since: int, code: int | None = None) -> dict[str, Any] | None:
    for note in client.notifies[since:]:
        if note.get("level") == "ERROR" and (code is None or note.get("code") == code):
            return note
    return None


async def test_rtn_brokers_on_connect_and_first_peek_answers_at_once(server: Server) -> None:
    async with DiffClient.connect(server.diff_url) as client:
        await client.wait_for(lambda c: c.brokers == ["qaex"] and c.rtn_data_count >= 1)
        assert client.tree["mdhis_more_data"] is False


async def test_original_scenario_http_order_crosses_and_both_diff_clients_get_everything(
    server: Server,
) -> None:
    # The original design's scenario: DIFF clients peek; an order submitted over HTTP crosses another
    # user's order; both clients receive order, trade, position and account in rtn_data.
    alice, bob = open_user(server), open_user(server)
    async with DiffClient.connect(server.diff_url) as a, DiffClient.connect(server.diff_url) as b:
        assert await a.login(alice.user_id, alice.password)
        assert await b.login(bob.user_id, bob.password)
        sell = bob.post("/api/order/submit", json={
            "order_id": "s1", "instrument_id": CU, "direction": "SELL", "offset": "OPEN",
            "volume": 2, "price": 86000.0, "order_type": "LIMIT",
        })  # fmt: skip
        assert sell.status_code == 200, sell.text
        buy = alice.post("/api/order/submit", json={
            "user_id": alice.user_id, "order_id": "b1", "instrument_id": CU, "direction": "BUY",
            "offset": "OPEN", "volume": 2, "price": 86000.0, "order_type": "LIMIT",
        })  # fmt: skip
        assert buy.status_code == 200 and buy.json()["status"] == "FINISHED", buy.text
        await a.wait_for(lambda c: has_trade(c, "b1") and c.position(CU).get("volume_long") == 2)
        await b.wait_for(lambda c: has_trade(c, "s1") and c.position(CU).get("volume_short") == 2)
        assert a.order("b1")["status"] == "FINISHED" and b.order("s1")["status"] == "FINISHED"
        assert a.account()["margin"] == pytest.approx(2 * 86000 * 5 * 0.1)
        http_account = alice.get("/api/account").json()
        assert a.account()["balance"] == pytest.approx(http_account["balance"])
        assert a.account()["available"] == pytest.approx(http_account["available"])
        assert bob.user_id not in a.tree["trade"] and alice.user_id not in b.tree["trade"]


async def test_the_same_scenario_entirely_over_diff(server: Server) -> None:
    alice, bob = open_user(server), open_user(server)
    async with DiffClient.connect(server.diff_url) as a, DiffClient.connect(server.diff_url) as b:
        assert await a.login(alice.user_id, alice.password)
        assert await b.login(bob.user_id, bob.password)
        await b.insert_order("s1", CU, "SELL", "OPEN", 3, 86010.0)
        await b.wait_for(lambda c: c.order("s1").get("status") == "ALIVE")
        assert b.order("s1")["exchange_order_id"] != ""
        await a.insert_order("b1", CU, "BUY", "OPEN", 2, 86010.0)
        await a.wait_for(lambda c: c.order("b1").get("status") == "FINISHED" and has_trade(c, "b1"))
        await b.wait_for(lambda c: c.order("s1").get("volume_left") == 1)
        (trade,) = a.trade()["trades"].values()
        assert trade["price"] == 86010.0 and trade["volume"] == 2 and trade["commission"] > 0
        assert b.position(CU)["volume_short_today"] == 2 and b.position(CU)["pos_short_today"] == 2
        # cancel the rest of the resting order
        await b.cancel_order("s1")
        await b.wait_for(lambda c: c.order("s1").get("status") == "FINISHED")
        assert b.order("s1")["last_msg"] == "已撤单" and b.account()["frozen_margin"] == 0
        assert any(n.get("code") == 419 for n in b.notifies)


async def test_every_session_of_a_user_gets_the_fill(server: Server) -> None:
    alice, bob = open_user(server), open_user(server)
    async with DiffClient.connect(server.diff_url) as one, DiffClient.connect(server.diff_url) as two:
        assert await one.login(alice.user_id, alice.password)
        assert await two.login(alice.user_id, alice.password)
        bob.post("/api/order/submit", json={"order_id": "s", "instrument_id": CU, "direction": "SELL",
                                            "offset": "OPEN", "volume": 1, "price": 86000.0})  # fmt: skip
        await one.insert_order("b", CU, "BUY", "OPEN", 1, 86000.0)
        for session in (one, two):
            await session.wait_for(lambda c: has_trade(c, "b"))


async def test_login_failures_are_error_notifies_and_the_connection_stays_usable(server: Server) -> None:
    alice = open_user(server)
    async with DiffClient.connect(server.diff_url) as client:
        assert not await client.login(alice.user_id, "wrong password")
        assert error_notify(client, 0, 402) is not None
        assert not await client.login("no-such-user", "x")
        assert "trade" not in client.tree
        assert await client.login(alice.user_id, alice.password)
        seen = len(client.notifies)
        await client.send(
            {"aid": "req_login", "bid": "qaex", "user_name": alice.user_id, "password": alice.password}
        )
        await client.wait_for(lambda c: error_notify(c, seen, 400))


async def test_transfers_deposit_withdraw_and_refuse_zero(server: Server) -> None:
    """The session splits req_transfer by the amount's sign; the transport moves the money."""
    alice = open_user(server)
    async with DiffClient.connect(server.diff_url) as client:
        assert await client.login(alice.user_id, alice.password)
        before = client.account()["balance"]
        seen = len(client.notifies)
        await client.send({"aid": "req_transfer", "amount": 0, "currency": "CNY"})
        note = await client.wait_for(lambda c: error_notify(c, seen, 422))
        assert note["content"] == "转账失败: 转账金额不能为 0"
        await client.send({"aid": "req_transfer", "amount": 500.0, "currency": "CNY"})
        await client.wait_for(lambda c: c.account().get("balance") == before + 500.0)
        await client.send({"aid": "req_transfer", "amount": -200.0, "currency": "CNY"})
        await client.wait_for(lambda c: c.account().get("balance") == before + 300.0)
        account = client.account()
        assert (account["deposit"], account["withdraw"]) == (500.0, 200.0)
        transfers = sorted(t["amount"] for t in client.trade()["transfers"].values())
        assert transfers == [-200.0, 500.0]
        assert [n["code"] for n in client.notifies[seen:] if n["level"] == "INFO"] == [421, 421]


async def test_trade_messages_before_login_are_refused(server: Server) -> None:
    alice = open_user(server)
    async with DiffClient.connect(server.diff_url + f"?user_id={alice.user_id}") as client:
        client.user_id = alice.user_id  # a user_id on the URL is not a login
        await client.insert_order("x1", CU, "BUY", "OPEN", 1, 86000.0)
        note = await client.wait_for(lambda c: error_notify(c, 0, 408))
        assert "not logged in" in note["content"]
        assert "trade" not in client.tree
    assert alice.get("/api/orders").json()["orders"] == {}


async def test_a_user_cannot_insert_or_cancel_for_another_user(server: Server) -> None:
    alice, mallory = open_user(server), open_user(server)
    placed = alice.post("/api/order/submit", json={"order_id": "a1", "instrument_id": CU, "direction": "BUY",
                                                   "offset": "OPEN", "volume": 1, "price": 85000.0})  # fmt: skip
    assert placed.status_code == 200
    async with DiffClient.connect(server.diff_url) as client:
        assert await client.login(mallory.user_id, mallory.password)
        seen = len(client.notifies)
        await client.send({"aid": "insert_order", "user_id": alice.user_id, "order_id": "evil", "exchange_id": "SHFE",
                           "instrument_id": "cu2601", "direction": "SELL", "offset": "OPEN", "volume": 1,
                           "price_type": "LIMIT", "limit_price": 85000.0})  # fmt: skip
        await client.wait_for(lambda c: error_notify(c, seen, 408))
        seen = len(client.notifies)
        await client.send({"aid": "cancel_order", "user_id": alice.user_id, "order_id": "a1"})
        await client.wait_for(lambda c: error_notify(c, seen, 418))
        # Cancelling "a1" as oneself only looks in one's own orders: not found.
        seen = len(client.notifies)
        await client.cancel_order("a1")
        await client.wait_for(lambda c: error_notify(c, seen, 420))
    assert alice.get("/api/order/a1").json()["status"] == "ALIVE"
    assert "evil" not in json.dumps(alice.get("/api/orders").json())


@pytest.mark.parametrize(
    ("frame", "fragment"),
    [
        ("{not json", "malformed JSON"),
        ("[1, 2]", "JSON object"),
        ('{"no_aid": 1}', "aid"),
        ('{"aid": "launch_missiles"}', "unknown aid"),
        (
            '{"aid": "insert_order", "user_id": "u", "order_id": "o", "exchange_id": "SHFE", "instrument_id": "cu2601",'
            ' "direction": "BUY", "offset": "OPEN", "volume": "ten", "price_type": "LIMIT", "limit_price": 1}',
            "volume",
        ),
        ('{"aid": "subscribe_quote", "ins_list": 5}', "ins_list"),
    ],
)
async def test_bad_messages_get_an_error_notify_and_the_session_goes_on(
    server: Server, frame: str, fragment: str
) -> None:
    alice = open_user(server)
    async with DiffClient.connect(server.diff_url) as client:
        assert await client.login(alice.user_id, alice.password)
        seen = len(client.notifies)
        await client.ws.send_message(frame)
        note = await client.wait_for(lambda c: error_notify(c, seen))
        assert fragment in note["content"]
        await client.insert_order("ok1", CU, "BUY", "OPEN", 1, 85000.0)
        await client.wait_for(lambda c: c.order("ok1").get("status") == "ALIVE")


async def test_an_oversized_frame_closes_only_that_session(server: Server) -> None:
    alice = open_user(server)
    async with DiffClient.connect(server.diff_url) as bystander:
        assert await bystander.login(alice.user_id, alice.password)
        with pytest.raises(ConnectionClosed) as info:
            async with open_websocket_url(server.diff_url, max_message_size=1 << 24) as ws:
                await ws.send_message("x" * (2 << 20))
                with trio.fail_after(10):
                    while True:
                        await ws.get_message()
        assert info.value.reason.code == 1009
        await bystander.insert_order("still", CU, "BUY", "OPEN", 1, 85000.0)
        await bystander.wait_for(lambda c: c.order("still").get("status") == "ALIVE")


async def test_other_paths_are_rejected(server: Server) -> None:
    with pytest.raises(ConnectionRejected) as info:
        async with open_websocket_url(server.diff_url.replace("/ws/diff", "/ws/other")):
            pass
    assert info.value.status_code == 404


async def test_200_concurrent_sessions_each_get_their_snapshot_and_updates(server: Server) -> None:
    users = [open_user(server, prefix="c") for _ in range(20)]
    seller = open_user(server)
    done: list[bool] = []

    async def session(user: User, index: int) -> None:
        async with DiffClient.connect(server.diff_url) as client:
            assert await client.login(user.user_id, user.password, within=60)
            if index % 10 == 0:
                await client.insert_order(f"b{index}", CU, "BUY", "OPEN", 1, 86000.0)
            await client.wait_for(lambda c: has_trade(c, f"b{index // 10 * 10}"), within=60)
            done.append(True)

    sell = seller.post("/api/order/submit", json={"order_id": "big", "instrument_id": CU, "direction": "SELL",
                                                  "offset": "OPEN", "volume": 20, "price": 86000.0})  # fmt: skip
    assert sell.status_code == 200
    async with trio.open_nursery() as nursery:
        for index in range(200):
            nursery.start_soon(session, users[index // 10], index)
    assert len(done) == 200
    assert seller.get("/api/order/big").json()["volume_left"] == 0


async def test_a_stray_byte_after_an_upgrade_request_does_not_kill_the_server(server: Server) -> None:
    # hypercorn issue #225: an upgrade request followed by one stray byte killed the trio worker.
    host, port = server.http_url.removeprefix("http://").split(":")
    for trailing in (b"x", b"", b"x" * 300):
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            sock.sendall(
                b"GET / HTTP/1.1\r\nHost: "
                + host.encode()
                + b"\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"
                b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: bKdPyn3u98cTfZJSh4TNeQ==\r\n\r\n" + trailing
            )
            answer = sock.recv(100)
            assert answer.startswith(b"HTTP/1.1 4"), answer
    user = open_user(server)
    placed = user.post("/api/order/submit", json={"order_id": "after", "instrument_id": CU, "direction": "BUY",
                                                  "offset": "OPEN", "volume": 1, "price": 85000.0})  # fmt: skip
    assert placed.status_code == 200 and placed.json()["status"] == "ALIVE"
    assert server.process.poll() is None


def test_session_and_message_rate_limits(tmp_path: Any) -> None:
    running = launch(tmp_path, extra_env={"QAEX_MAX_SESSIONS": "2", "QAEX_MAX_MESSAGES_PER_SECOND": "20"})
    try:
        wait_ready(running)

        async def main() -> None:
            async with DiffClient.connect(running.diff_url) as first, DiffClient.connect(running.diff_url):
                with pytest.raises(ConnectionRejected) as info:
                    async with open_websocket_url(running.diff_url):
                        pass
                assert info.value.status_code == 503
                # A burst past the per-second budget: one ERROR notify 429, then the session is closed
                # once a second's window holds 4x the budget (80). Sent until closed, at most 4,000
                # frames, so that a slow machine spreading the burst over several windows still gets there.
                with pytest.raises(ConnectionClosed), trio.fail_after(30):
                    for _ in range(4_000):
                        await first.send({"aid": "confirm_settlement"})
                await first.wait_for(lambda c: c.closed is not None)
                assert first.closed is not None and first.closed.code == 1008

        trio.run(main)
        assert running.process.poll() is None
    finally:
        running.stop()


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT])
def test_shutdown_closes_sessions_with_1001_and_exits_0(tmp_path: Any, stop_signal: int) -> None:
    running = launch(tmp_path)
    try:
        wait_ready(running)
        user = open_user(running)
        codes: list[int] = []

        async def main() -> None:
            async with open_websocket_url(running.diff_url) as ws:
                await ws.send_message(json.dumps({"aid": "req_login", "bid": "qaex", "user_name": user.user_id,
                                                  "password": user.password}))  # fmt: skip
                await ws.send_message('{"aid":"peek_message"}')
                await ws.get_message()
                running.process.send_signal(stop_signal)
                with trio.fail_after(15):
                    try:
                        while True:
                            await ws.get_message()
                    except ConnectionClosed as exc:
                        codes.append(exc.reason.code)

        trio.run(main)
        assert codes == [1001]
        assert running.process.wait(20) == 0
    finally:
        if running.process.poll() is None:
            running.process.kill()
            running.process.wait()
    assert isinstance(running.process, subprocess.Popen)


def test_the_integration_example_runs_against_the_server(server: Server) -> None:
    example = Path(__file__).resolve().parent.parent / "examples" / "diff_integration_example.py"
    done = subprocess.run(
        [sys.executable, str(example), "--http", server.http_url, "--diff", server.diff_url,
         "--symbol", "SHFE.rb2601"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert "alice: traded BUY 2 @ 3100.0" in done.stdout and "bob: traded SELL 2 @ 3100.0" in done.stdout


async def test_ins_query_is_answered_under_symbols_and_a_bad_one_with_an_error(server: Server) -> None:
    query = 'query {\n  multi_symbol_info(class: [FUTURE], exchange_id: ["DCE"]) {\n    instrument_id\n  }\n}'
    async with DiffClient.connect(server.diff_url) as client:  # before any login, as TqSdk may send it
        await client.send({"aid": "ins_query", "query_id": "q1", "query": query, "variables": {}})
        answer = await client.wait_for(lambda c: c.tree.get("symbols", {}).get("q1"))
        assert answer["query"] == query
        assert [e["instrument_id"] for e in answer["result"]["multi_symbol_info"]] == [
            "DCE.m2601",
            "DCE.i2601",
        ]
        await client.send({"aid": "ins_query", "query_id": "q2", "query": "query { options { x } }"})
        await client.wait_for(lambda c: "q2" in c.tree.get("symbols", {}))
        assert client.tree["symbols"]["q2"]["result"] == {}  # answered, so the client does not hang
        note = await client.wait_for(lambda c: error_notify(c, 0))
        assert "multi_symbol_info" in note["content"]
        await client.send({"aid": "ins_query", "query_id": "q1", "query": ""})  # TqSdk's way to drop one
        await client.wait_for(lambda c: "q1" not in c.tree.get("symbols", {}))
