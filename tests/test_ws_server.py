"""The DIFF listener's WebSocket transport (qaex.api.ws_server) over real sockets on 127.0.0.1."""

from __future__ import annotations

import base64
import os
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import trio
from trio_websocket import open_websocket_url

from qaex.api.ws_server import ConnectionClosed, WebSocketConnection, WebSocketRequest, serve_websockets

UPGRADE = (
    b"GET /x HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: " + base64.b64encode(os.urandom(16)) + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
)


async def listen(
    nursery: trio.Nursery, handler: Callable[[WebSocketRequest], Awaitable[None]], **options: Any
) -> int:
    listening = await nursery.start(
        lambda task_status: serve_websockets(
            handler,
            "127.0.0.1",
            0,
            max_message_size=options.pop("max_message_size", 1 << 20),
            task_status=task_status,
            **options,
        )
    )
    return int(listening.port)


async def test_echo_with_trio_websocket_as_the_client(nursery: trio.Nursery) -> None:
    async def echo(request: WebSocketRequest) -> None:
        ws = await request.accept()
        try:
            while True:
                message = await ws.get_message()
                await ws.send_message(message)
        except ConnectionClosed:
            pass

    port = await listen(nursery, echo)
    async with open_websocket_url(f"ws://127.0.0.1:{port}/x", max_message_size=1 << 22) as client:
        for message in ["hi", "é" * 70_000, b"\x00\x01" * 40_000, ""]:
            await client.send_message(message)
            assert await client.get_message() == message
        await client.ping(b"abcd")  # answered by the server's protocol object


async def test_a_peer_that_stops_reading_is_cut_off_and_writes_never_block(nursery: trio.Nursery) -> None:
    done = trio.Event()
    seen: dict[str, Any] = {}

    async def flood(request: WebSocketRequest) -> None:
        ws = await request.accept()
        started = trio.current_time()
        chunk = b"x" * 65536
        for _ in range(200):  # 13 MB: far more than the kernel buffers
            if ws.writable:
                ws.text(chunk)  # never waits
        seen["write_seconds"] = trio.current_time() - started
        seen["queued"] = not ws.writable
        try:
            await ws.get_message()  # the peer says nothing; the drain task gives up on it
        except ConnectionClosed as exc:
            seen["reason"] = exc.reason
        done.set()

    port = await listen(nursery, flood, send_timeout=0.5)
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.sendall(UPGRADE)
        with trio.fail_after(10):
            await done.wait()
    assert seen["write_seconds"] < 1.0
    assert seen["queued"]
    assert seen["reason"].code == 1006 and "stopped reading" in seen["reason"].reason


async def test_a_connection_without_an_upgrade_request_is_closed_after_the_timeout(
    nursery: trio.Nursery,
) -> None:
    handled = []

    async def handler(request: WebSocketRequest) -> None:
        handled.append(request)

    port = await listen(nursery, handler, handshake_timeout=0.3)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(b"GET /x HTTP/1.1\r\n")  # and nothing more
    with trio.fail_after(5):
        assert await stream.receive_some(100) == b""
    assert handled == []


async def test_a_handler_that_answers_nothing_gives_a_500(nursery: trio.Nursery) -> None:
    async def silent(request: WebSocketRequest) -> None:
        pass

    port = await listen(nursery, silent)
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(UPGRADE)
    answer = b""
    with trio.fail_after(5):
        while chunk := await stream.receive_some(1000):
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 500")


async def test_an_oversized_message_closes_with_1009_and_frames_before_it_arrive(
    nursery: trio.Nursery,
) -> None:
    got: list[Any] = []
    closed = trio.Event()

    async def collect(request: WebSocketRequest) -> None:
        ws: WebSocketConnection = await request.accept()
        try:
            while True:
                got.append(await ws.get_message())
        except ConnectionClosed as exc:
            got.append(exc.reason.code)
        closed.set()

    port = await listen(nursery, collect, max_message_size=100)
    async with open_websocket_url(f"ws://127.0.0.1:{port}/x") as client:
        await client.send_message("small")
        await client.send_message("y" * 101)
        with trio.fail_after(5):
            await closed.wait()
    assert got == ["small", 1009]
    assert client.closed is not None and client.closed.code == 1009


async def test_many_connections_at_once_are_all_accepted(nursery: trio.Nursery) -> None:
    async def hello(request: WebSocketRequest) -> None:
        ws = await request.accept()
        await ws.send_message("hello")
        try:
            await ws.get_message()
        except ConnectionClosed:
            pass

    port = await listen(nursery, hello)
    results: list[str | bytes] = []

    async def one() -> None:
        async with open_websocket_url(f"ws://127.0.0.1:{port}/x") as client:
            results.append(await client.get_message())

    with trio.fail_after(20):
        async with trio.open_nursery() as clients:
            for _ in range(300):
                clients.start_soon(one)
    assert results == ["hello"] * 300
