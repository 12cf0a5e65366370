"""The DIFF heartbeat: silent clients are pinged and closed without a pong; talking clients are not pinged."""

from __future__ import annotations

import base64
import os
import socket
import threading
import time

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


class PingCounter:
    """A WebSocket client on /ws/diff that answers every ping and counts them."""

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.opened = trio.Event()
        self.pings = 0
        self.pinged = trio.Event()  # replaced after each ping: wait on it for the next one

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        await self.stream.send_all(self.ws.send(Request(host="127.0.0.1", target="/ws/diff")))
        started = False
        while True:
            data = await self.stream.receive_some(65536)
            if not data:
                return
            self.ws.receive_data(data)
            if self.ws.state is ConnectionState.OPEN and not started:
                started = True
                task_status.started()
            for event in self.ws.events():
                if isinstance(event, Ping):
                    self.pings += 1
                    self.pinged.set()
                    self.pinged = trio.Event()
                    await self.stream.send_all(self.ws.send(event.response()))

    async def say(self, text: str) -> None:
        await self.stream.send_all(self.ws.send(TextMessage(data=text)))


async def test_a_talking_client_is_not_pinged(nursery: trio.Nursery) -> None:
    _, port = await start(nursery)
    client = PingCounter(await trio.open_tcp_stream("127.0.0.1", port))
    with trio.fail_after(5):
        await nursery.start(client.run)
    # Time must pass here: the behaviour is that nothing happens during four heartbeat intervals.
    for _ in range(12):  # 1.2 s, a message every 0.1 s
        await client.say('{"aid":"confirm_settlement"}')
        await trio.sleep(0.1)
    assert client.pings == 0


async def test_a_silent_client_is_pinged_each_interval_and_stays_open_while_it_answers(
    nursery: trio.Nursery,
) -> None:
    _, port = await start(nursery)
    client = PingCounter(await trio.open_tcp_stream("127.0.0.1", port))
    with trio.fail_after(5):
        await nursery.start(client.run)
        while client.pings < 3:  # past the 0.5 s heartbeat timeout: answered pings keep it open
            await client.pinged.wait()
    assert client.ws.state is ConnectionState.OPEN


def tasks_under(nursery: trio.Nursery) -> int:
    """Every task below ``nursery``, at any depth."""
    count, stack = 0, list(nursery.child_tasks)
    while stack:
        task = stack.pop()
        count += 1
        for child in task.child_nurseries:
            stack.extend(child.child_tasks)
    return count


SESSIONS = 20


async def test_a_diff_session_costs_the_server_two_tasks(nursery: trio.Nursery) -> None:
    """The connection's task (it reads the socket and answers the frames) and its drain task (idle
    unless the kernel's send buffer is full): one writer sends every session's frames and one
    heartbeat timer serves every session, so a session has no writer or heartbeat task of its own."""
    exchange = Exchange(Engine())
    await nursery.start(exchange.run)
    server = DiffServer(exchange, heartbeat_interval=0.2, heartbeat_timeout=2)
    async with trio.open_nursery() as server_nursery:
        listener = await server_nursery.start(server.serve, "127.0.0.1", 0)
        idle = tasks_under(server_nursery)
        port = listener.port
        clients = [PingCounter(await trio.open_tcp_stream("127.0.0.1", port)) for _ in range(SESSIONS)]
        with trio.fail_after(10):
            for client in clients:
                await nursery.start(client.run)
                await client.say('{"aid":"peek_message"}')
            # Silent sessions are pinged each interval (a task waits for each pong); between two
            # rounds of pings every session is down to its two tasks.
            for client in clients:
                while client.pings < 2:
                    await client.pinged.wait()
            for _ in range(2000):
                if (tasks_under(server_nursery) - idle) / SESSIONS == 2:
                    break
                await trio.sleep(0.005)
            assert (tasks_under(server_nursery) - idle) / SESSIONS == 2
        server_nursery.cancel_scope.cancel()


def answer_pings_in_a_thread(
    port: int, token: trio.lowlevel.TrioToken, stall: float, stop: threading.Event, pongs: list[float]
) -> None:
    """A blocking WebSocket client on /ws/diff that answers every ping. Before it answers the first, it
    blocks the server's event loop for `stall` seconds and sends the pong meanwhile: the pong then
    waits, unread, in the server's socket past the pong deadline, as on a server whose scheduler pass
    took that long."""
    ws = WSConnection(ConnectionType.CLIENT)
    with socket.create_connection(("127.0.0.1", port), timeout=0.1) as sock:
        sock.sendall(ws.send(Request(host="127.0.0.1", target="/ws/diff")))
        while not stop.is_set():
            try:
                data = sock.recv(65536)
            except TimeoutError:
                continue
            if not data:
                return
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, Ping):
                    if not pongs:
                        stalled = threading.Event()

                        def stall_the_loop(stalled: threading.Event = stalled) -> None:
                            stalled.set()
                            time.sleep(stall)

                        token.run_sync_soon(stall_the_loop)
                        stalled.wait(5)
                    sock.sendall(ws.send(event.response()))
                    pongs.append(time.monotonic())


async def test_a_server_that_fell_behind_does_not_close_a_client_whose_pong_it_has_not_read(
    nursery: trio.Nursery,
) -> None:
    server, port = await start(nursery)  # pings after 0.3 s of silence, gives up 0.5 s after a ping
    stop, pongs = threading.Event(), list[float]()
    token = trio.lowlevel.current_trio_token()
    async with trio.open_nursery() as client:
        client.start_soon(trio.to_thread.run_sync, answer_pings_in_a_thread, port, token, 1.0, stop, pongs)
        for _ in range(200):  # 10 s at most: pinged twice more after the stall, or closed
            if len(pongs) >= 3 or (pongs and not server.active):
                break
            await trio.sleep(0.05)
        assert len(pongs) >= 3
        assert server.active == 1
        stop.set()
