"""The DIFF heartbeat: silent clients are pinged and closed without a pong; talking clients are not pinged."""

from __future__ import annotations

import base64
import os

import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import Ping, Request, TextMessage

from qaex.api.diff_server import DiffServer
from qaex.core.engine import Engine
from qaex.exchange.exchange import Exchange


async def start(nursery: trio.Nursery) -> tuple[DiffServer, int]:
    exchange = Exchange(Engine())
    await nursery.start(exchange.run)
    server = DiffServer(exchange, heartbeat_interval=0.3, heartbeat_timeout=0.5)
    listener = await nursery.start(server.serve, "127.0.0.1", 0)
    return server, listener.port


async def test_a_client_that_never_answers_pings_is_closed(nursery: trio.Nursery) -> None:
    _, port = await start(nursery)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    key = base64.b64encode(os.urandom(16))
    await stream.send_all(
        b"GET /ws/diff HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: " + key + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    received = b""
    with trio.fail_after(10):
        # Read (and never answer) until the server gives up on us and closes the connection.
        while True:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            received += chunk
    assert b"101 Switching Protocols" in received
    assert b"\x89" in received  # a ping frame (FIN + opcode 9) was sent
    assert b"\x88" in received  # then a close frame


async def test_a_talking_client_is_not_pinged_and_a_silent_one_is(nursery: trio.Nursery) -> None:
    _, port = await start(nursery)

    async def pings_received(talk: bool) -> int:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        ws = WSConnection(ConnectionType.CLIENT)
        await stream.send_all(ws.send(Request(host="127.0.0.1", target="/ws/diff")))
        pings = 0
        opened = trio.Event()
        async with trio.open_nursery() as inner:

            async def receive() -> None:
                nonlocal pings
                while True:
                    data = await stream.receive_some(65536)
                    if not data:
                        return
                    ws.receive_data(data)
                    if ws.state is ConnectionState.OPEN:
                        opened.set()
                    for event in ws.events():
                        if isinstance(event, Ping):
                            pings += 1
                            await stream.send_all(ws.send(event.response()))

            inner.start_soon(receive)
            with trio.fail_after(5):
                await opened.wait()
            for _ in range(12):  # 1.2 s: four heartbeat intervals
                if talk:
                    await stream.send_all(ws.send(TextMessage(data='{"aid":"confirm_settlement"}')))
                await trio.sleep(0.1)
            inner.cancel_scope.cancel()
        await stream.aclose()
        return pings

    assert await pings_received(talk=True) == 0
    assert await pings_received(talk=False) >= 2  # pinged each silent interval, and it answers: stays open
