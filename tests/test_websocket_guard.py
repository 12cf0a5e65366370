"""WebSocket upgrades on the HTTP port (hypercorn issue #225, qaex.api.websocket_guard).

The real server (hypercorn subprocess, as the README starts it) gets raw-socket upgrade requests on
its HTTP port, some followed by a stray byte at the moment hypercorn 0.18 is most fragile, and must
stay up and answer each with a plain HTTP error.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import httpx
import trio
from conftest import Server, launch, wait_ready

HANDSHAKE_KEY = b"bKdPyn3u98cTfZJSh4TNeQ=="
STORM_TRIES = 60
DENSE_TRIES = 30
STORM_ROUNDS = 3
READ_TIMEOUT = 5.0


def upgrade_request(host: str, path: str = "/ws/diff") -> bytes:
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n".encode()
        + b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: "
        + HANDSHAKE_KEY
        + b"\r\n\r\n"
    )


def address(server: Server) -> tuple[str, int]:
    host, port = server.http_url.removeprefix("http://").split(":")
    return host, int(port)


async def try_upgrade(server: Server, stray: bytes, delays: tuple[float | None, ...]) -> bytes:
    """Send an upgrade request, then `stray` after each delay (None: in the request's own segment).

    Returns whatever the server answered before closing the connection (or within READ_TIMEOUT);
    a connection the server reset counts as an answer of what arrived before the reset.
    """
    host, port = address(server)
    received = bytearray()
    with trio.move_on_after(READ_TIMEOUT + max((d or 0.0 for d in delays), default=0.0)):
        stream = await trio.open_tcp_stream(host, port)
        async with stream:

            async def read_all() -> None:
                try:
                    while chunk := await stream.receive_some(65536):
                        received.extend(chunk)
                except trio.BrokenResourceError:
                    pass

            async with trio.open_nursery() as nursery:
                nursery.start_soon(read_all)
                request = upgrade_request(host)
                if None in delays:
                    request += stray
                try:
                    await stream.send_all(request)
                    waited = 0.0
                    for delay in sorted(d for d in delays if d is not None):
                        await trio.sleep(delay - waited)
                        waited = delay
                        await stream.send_all(stray)
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    pass  # the server already answered and closed: the stray byte has nowhere to go
    return bytes(received)


def assert_alive(server: Server) -> None:
    assert server.process.poll() is None, f"the server exited with {server.process.returncode}"
    answer = httpx.get(server.http_url + "/health", timeout=5.0)
    assert answer.status_code == 200, answer.text


def storm_delays() -> list[tuple[float | None, ...]]:
    """When each try sends its stray byte: spread over 0.95-1.10 s (the old guard answered after 1 s),
    denser at 1.00-1.01 s where hypercorn's two answers collided, plus at once and other delays."""
    delays: list[tuple[float | None, ...]] = [
        (0.95 + 0.15 * n / (STORM_TRIES - 1),) for n in range(STORM_TRIES)
    ]
    delays += [(0.999 + 0.010 * n / (DENSE_TRIES - 1),) for n in range(DENSE_TRIES)]
    delays += [(None,), (0.0,), (0.001,), (0.01,), (0.05,), (0.2,), (0.5,)]
    delays += [(None, 0.5, 1.0, 1.001, 1.002, 1.004)]
    return delays


async def storm(server: Server, rounds: int) -> None:
    """All tries at once, so the server is busy when the answers and the stray bytes cross."""
    delays = storm_delays()
    for _ in range(rounds):
        answers: list[bytes] = []

        async def one(delay: tuple[float | None, ...], answers: list[bytes] = answers) -> None:
            answers.append(await try_upgrade(server, b"x", delay))

        async with trio.open_nursery() as nursery:
            for delay in delays:
                nursery.start_soon(one, delay)
        assert_alive(server)
        assert len(answers) == len(delays)
        assert all(answer.startswith(b"HTTP/1.1 4") for answer in answers), [a[:40] for a in answers]


async def test_stray_bytes_after_upgrade_requests_at_any_moment_do_not_kill_the_server(
    server: Server,
) -> None:
    await storm(server, STORM_ROUNDS)


async def test_the_same_with_qaex_serve(tmp_path: Path) -> None:
    running = launch(tmp_path, serve=True)
    try:
        wait_ready(running)
        await storm(running, 1)
    except BaseException:
        print(f"\n--- qaex serve log ---\n{running.log()}", file=sys.stderr)
        raise
    finally:
        running.stop()


async def test_an_upgrade_on_the_http_port_gets_a_json_error_at_once(server: Server) -> None:
    with trio.fail_after(0.9):  # well before any grace period the server could be waiting out
        answer = await try_upgrade(server, b"", ())
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {name.lower(): value.strip() for name, _, value in (h.partition(":") for h in header_lines)}
    assert status_line.startswith("HTTP/1.1 400"), answer
    assert headers["content-type"] == "application/json"
    assert headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert error["code"] == "websocket_not_served"
    assert "QAEX_DIFF_PORT" in error["message"]
    assert_alive(server)


async def test_an_upgrade_with_trailing_garbage_and_a_body_is_answered_the_same_way(server: Server) -> None:
    host, port = address(server)
    request = (
        upgrade_request(host).replace(b"\r\n\r\n", b"\r\nContent-Length: 5\r\n\r\nhello") + b"GARBAGE\r\n\r\n"
    )
    received = bytearray()
    with trio.fail_after(READ_TIMEOUT):
        async with await trio.open_tcp_stream(host, port) as stream:
            await stream.send_all(request)
            try:
                while chunk := await stream.receive_some(65536):
                    received.extend(chunk)
            except trio.BrokenResourceError:
                pass
    assert received.startswith(b"HTTP/1.1 400"), bytes(received)
    assert received.count(b"HTTP/1.1") == 1, bytes(received)  # the connection closed after one answer
    assert_alive(server)
