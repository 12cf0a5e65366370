"""A DIFF client that peeks and then never reads is cut off; nothing else waits for it.

The in-process exchange and DIFF listener run on real sockets on 127.0.0.1. The stuck client logs in
to an account whose tree (500 orders, ~150 KB) does not fit the socket buffers, peeks, and stops
reading: the server's output waits in the connection's queue, the writer goes on serving everyone
else, and after ``send_timeout`` without progress the connection is closed.
"""

from __future__ import annotations

import json
import socket

import trio
from trio_websocket import open_websocket_url
from wsproto import ConnectionType, WSConnection
from wsproto.events import Request, TextMessage

from qaex.api.diff_server import DIFF_PATH, DiffServer
from qaex.core.engine import Engine
from qaex.core.orders import InsertOrder
from qaex.exchange.exchange import Exchange

PASSWORD = "stuck-client-pw-1"


def stuck_client(port: int) -> socket.socket:
    """Upgrade, log in and peek on a socket with a tiny receive buffer; then never read again."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect(("127.0.0.1", port))
    ws = WSConnection(ConnectionType.CLIENT)
    sock.sendall(ws.send(Request(host="127.0.0.1", target=DIFF_PATH)))
    head = b""
    while b"\r\n\r\n" not in head:  # the 101 (one byte at a time: nothing of the frames behind it)
        head += sock.recv(1)
    ws.receive_data(head)
    list(ws.events())
    login = {"aid": "req_login", "bid": "qaex", "user_name": "stuck", "password": PASSWORD}
    for message in (login, {"aid": "peek_message"}):
        sock.sendall(ws.send(TextMessage(data=json.dumps(message))))
    return sock


async def test_a_client_that_peeks_and_never_reads_is_cut_off(nursery: trio.Nursery) -> None:
    engine = Engine()
    exchange = Exchange(engine)
    await nursery.start(exchange.run)
    await exchange.open_account("stuck", PASSWORD, 1e9)
    await exchange.open_account("other", PASSWORD, 1e9)
    for i in range(500):  # resting orders far from the market: ~150 KB of tree
        await exchange.insert_order(
            InsertOrder(
                user_id="stuck", order_id=f"o{i}", exchange_id="SHFE", instrument_id="cu2601",
                direction="BUY", offset="OPEN", volume=1, limit_price=10_000.0 + i * 10,  # type: ignore[arg-type]
            )
        )  # fmt: skip
    server = DiffServer(exchange, send_timeout=1.0)
    listening = await nursery.start(server.serve, "127.0.0.1", 0)
    sock = await trio.to_thread.run_sync(stuck_client, listening.port)
    try:
        with trio.fail_after(10):
            for _ in range(500):  # logged in: its snapshot is queued
                if exchange.snapshots.sessions.get("stuck"):
                    break
                await trio.sleep(0.02)
            # Meanwhile another client is served at once.
            async with open_websocket_url(f"ws://127.0.0.1:{listening.port}{DIFF_PATH}") as other:
                assert json.loads(await other.get_message())["aid"] == "rtn_brokers"
                await other.send_message(json.dumps({"aid": "peek_message"}))
                assert json.loads(await other.get_message())["aid"] == "rtn_data"
            started = trio.current_time()
            for _ in range(200):  # the stuck one is cut off once its output made no progress for 1 s
                if not server.active:
                    break
                await trio.sleep(0.05)
            assert 0.9 <= trio.current_time() - started < 5
    finally:
        sock.close()
    assert not exchange.snapshots.links
