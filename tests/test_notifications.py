"""The per-event notification stream on a real server: ``/ws`` on the DIFF listener and SSE ``/api/events``.

A fill, a partial fill, a cancel, a reject and a deposit each produce the expected events in order, on
both transports; another user's events never appear; a consumer that stops reading is cut off while
the exchange goes on; an SSE client resumes with ``Last-Event-ID`` or is told of the gap. Mark-to-market
account updates (``cause: "mark"``) may come in between at any time and are left out of the
comparisons.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
from conftest import Server, User, launch, open_user, wait_ready
from trio_websocket import ConnectionClosed, WebSocketConnection, open_websocket_url

CU = "SHFE.cu2601"
Event = dict[str, Any]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = launch(
        tmp_path_factory.mktemp("notify"),
        extra_env={"QAEX_NOTIFY_BUFFER": "300", "QAEX_NOTIFY_MAX_LAG": "200", "QAEX_NOTIFY_RETAIN_SECONDS": "60"},
    )
    wait_ready(running)
    yield running
    code = running.stop()
    assert code == 0, running.log()[-5000:]


def notify_url(server: Server) -> str:
    return server.diff_url.removesuffix("/diff")


def order(user: User, order_id: str, direction: str, volume: int, price: float, **extra: Any) -> httpx.Response:
    return user.post("/api/order/submit", json={
        "order_id": order_id, "instrument_id": CU, "direction": direction, "offset": "OPEN",
        "volume": volume, "price": price, **extra,
    })  # fmt: skip


def not_a_mark(event: Event) -> bool:
    return not (event["type"] == "account_update" and event["cause"] == "mark")


def shape(event: Event) -> tuple[Any, ...]:
    """What the comparisons look at: type, order, status, volumes, cause."""
    if event["type"] == "trade":
        return ("trade", event["order_id"], event["direction"], event["volume"], event["price"])
    if event["type"] == "order_status":
        return ("order_status", event["order_id"], event["status"], event["filled_volume"], event["remaining_volume"])
    if event["type"] == "account_update":
        return ("account_update", event["cause"])
    return (event["type"],)


class WsEvents:
    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.seen: list[Event] = []

    async def take(self, count: int, seconds: float = 10.0) -> list[Event]:
        """The next `count` events that are not marks."""
        got: list[Event] = []
        with trio.fail_after(seconds):
            while len(got) < count:
                event = json.loads(await self.ws.get_message())
                self.seen.append(event)
                if not_a_mark(event):
                    got.append(event)
        return got

    async def quiet(self, seconds: float = 0.5) -> list[Event]:
        """Whatever non-mark events arrive within `seconds`."""
        got: list[Event] = []
        with trio.move_on_after(seconds):
            while True:
                event = json.loads(await self.ws.get_message())
                if not_a_mark(event):
                    got.append(event)
        return got


@asynccontextmanager
async def ws_events(server: Server, user: User, *, query: str = "") -> AsyncIterator[WsEvents]:
    async with open_websocket_url(f"{notify_url(server)}?token={user.token}{query}") as ws:
        ready = json.loads(await ws.get_message())
        assert ready["type"] == "ready" and ready["user_id"] == user.user_id, ready
        yield WsEvents(ws)


class Sse:
    """An SSE reader: (id, event) pairs."""

    def __init__(self, lines: AsyncIterator[str]) -> None:
        self.lines = lines

    async def next(self) -> tuple[str | None, Event]:
        event_id, data = None, None
        async for line in self.lines:
            if line.startswith("id: "):
                event_id = line[4:]
            elif line.startswith("data: "):
                data = json.loads(line[6:])
            elif line == "" and data is not None:
                return event_id, data
        raise EOFError("stream ended")

    async def take(self, count: int, seconds: float = 10.0) -> list[tuple[str | None, Event]]:
        got = []
        with trio.fail_after(seconds):
            while len(got) < count:
                event_id, event = await self.next()
                if not_a_mark(event):
                    got.append((event_id, event))
        return got


@asynccontextmanager
async def sse_events(
    server: Server, user: User, *, headers: dict[str, str] | None = None, params: str = ""
) -> AsyncIterator[Sse]:
    async with httpx.AsyncClient(timeout=httpx.Timeout(10, read=30)) as client:
        async with client.stream(
            "GET", f"{server.http_url}/api/events{params}",
            headers={"Authorization": f"Bearer {user.token}", **(headers or {})},
        ) as response:  # fmt: skip
            assert response.status_code == 200, await response.aread()
            assert response.headers["content-type"].startswith("text/event-stream")
            stream = Sse(response.aiter_lines())
            _, ready = await stream.next()
            assert ready["type"] == "ready" and ready["user_id"] == user.user_id
            yield stream


FILL_SCENARIO_BOB = [
    ("order_status", "s1", "ACCEPTED", 0, 3), ("account_update", "order"),
    ("trade", "s1", "SELL", 2, 86010.0), ("order_status", "s1", "PARTIAL_FILLED", 2, 1), ("account_update", "trade"),
    ("order_status", "s1", "CANCELLED", 2, 0), ("account_update", "order"),
]  # fmt: skip
FILL_SCENARIO_ALICE = [
    ("order_status", "b1", "ACCEPTED", 0, 2),
    ("trade", "b1", "BUY", 2, 86010.0), ("order_status", "b1", "FILLED", 2, 0), ("account_update", "trade"),
]  # fmt: skip


def run_fill_scenario(alice: User, bob: User) -> None:
    assert order(bob, "s1", "SELL", 3, 86010.0).status_code == 200
    assert order(alice, "b1", "BUY", 2, 86010.0).json()["status"] == "FINISHED"
    assert bob.post("/api/order/cancel", json={"order_id": "s1"}).status_code == 200


async def test_fill_partial_fill_and_cancel_on_ws_in_order(server: Server) -> None:
    alice, bob = open_user(server), open_user(server)
    async with ws_events(server, alice) as a, ws_events(server, bob) as b:
        run_fill_scenario(alice, bob)
        bob_events = await b.take(len(FILL_SCENARIO_BOB))
        alice_events = await a.take(len(FILL_SCENARIO_ALICE))
        assert [shape(e) for e in bob_events] == FILL_SCENARIO_BOB
        assert [shape(e) for e in alice_events] == FILL_SCENARIO_ALICE
        assert await a.quiet() == [] and await b.quiet() == []
    trade = next(e for e in alice_events if e["type"] == "trade")
    assert set(trade) == {
        "type", "trade_id", "user_id", "order_id", "instrument_id", "direction", "offset", "price", "volume",
        "commission", "timestamp",
    }  # fmt: skip
    assert trade["user_id"] == alice.user_id and trade["instrument_id"] == CU and trade["offset"] == "OPEN"
    assert trade["commission"] > 0 and abs(trade["timestamp"] - time.time_ns()) < 60e9
    cancelled = bob_events[5]
    assert cancelled["reason"] == "已撤单" and cancelled["user_id"] == bob.user_id
    update = alice_events[-1]
    account = alice.get("/api/account").json()
    for name in ("balance", "available", "margin", "position_profit", "risk_ratio"):
        assert update[name] == pytest.approx(account[name]), name
    # another user's events never appear
    assert all(e["user_id"] == alice.user_id for e in a.seen)
    assert all(e["user_id"] == bob.user_id for e in b.seen)


async def test_reject_and_deposit_on_ws(server: Server) -> None:
    alice = open_user(server)
    async with ws_events(server, alice) as a:
        refused = order(alice, "big", "BUY", 400, 86000.0)  # margin far beyond 1,000,000
        assert refused.status_code == 422, refused.text
        assert alice.post("/api/account/deposit", json={"amount": 5000.0}).status_code == 200
        rejected, deposit = await a.take(2)
    assert shape(rejected) == ("order_status", "big", "REJECTED", 0, 0)
    assert rejected["reason"] and rejected["reason"] == refused.json()["order"]["last_msg"]
    assert shape(deposit) == ("account_update", "transfer")
    assert deposit["balance"] == pytest.approx(1_005_000.0)


async def test_the_same_events_on_sse_with_ids(server: Server) -> None:
    alice, bob = open_user(server), open_user(server)
    async with sse_events(server, alice) as a, sse_events(server, bob) as b:
        run_fill_scenario(alice, bob)
        bob_events = await b.take(len(FILL_SCENARIO_BOB))
        alice_events = await a.take(len(FILL_SCENARIO_ALICE))
    assert [shape(e) for _, e in bob_events] == FILL_SCENARIO_BOB
    assert [shape(e) for _, e in alice_events] == FILL_SCENARIO_ALICE
    ids = [event_id for event_id, _ in bob_events]
    assert all(event_id and re.fullmatch(r"[0-9a-f]{8}-[0-9]+", event_id) for event_id in ids), ids
    numbers = [int(event_id.split("-")[1]) for event_id in ids if event_id]
    assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)


async def test_ws_login_with_req_login_or_a_token_message_and_refusals(server: Server) -> None:
    alice = open_user(server)
    async with open_websocket_url(notify_url(server)) as ws:
        await ws.send_message(json.dumps({"aid": "req_login", "bid": "x", "user_name": alice.user_id,
                                          "password": alice.password}))  # fmt: skip
        assert json.loads(await ws.get_message())["type"] == "ready"
        alice.post("/api/account/deposit", json={"amount": 1.0})
        assert shape(json.loads(await ws.get_message())) == ("account_update", "transfer")
    async with open_websocket_url(notify_url(server)) as ws:
        await ws.send_message(json.dumps({"token": alice.token}))
        assert json.loads(await ws.get_message())["type"] == "ready"
    for first in ({"aid": "req_login", "user_name": alice.user_id, "password": "wrong"}, {"token": "forged"}):
        async with open_websocket_url(notify_url(server)) as ws:
            await ws.send_message(json.dumps(first))
            error = json.loads(await ws.get_message())
            assert error["type"] == "error" and error["code"] in ("bad_credentials", "unauthorized"), error
            with pytest.raises(ConnectionClosed) as closed:
                await ws.get_message()
            assert closed.value.reason.code == 1008


def test_sse_needs_a_token_and_takes_one_as_query_parameter(server: Server) -> None:
    alice = open_user(server)
    assert httpx.get(server.http_url + "/api/events").status_code == 401
    answer = httpx.get(server.http_url + "/api/events?token=forged")
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthorized"
    with httpx.stream("GET", f"{server.http_url}/api/events?token={alice.token}&max_events=1") as response:
        assert response.status_code == 200
        alice.post("/api/account/deposit", json={"amount": 1.0})
        body = response.read().decode()
    assert '"type":"ready"' in body and '"cause":"transfer"' in body and body.count("id: ") == 1


async def test_sse_resumes_from_last_event_id_or_says_gap(server: Server) -> None:
    alice = open_user(server)
    async with sse_events(server, alice) as a:
        alice.post("/api/account/deposit", json={"amount": 1.0})
        ((first_id, _),) = await a.take(1)
    # While nobody listens the feed goes on; a reconnect with Last-Event-ID gets what it missed.
    for amount in (2.0, 3.0):
        alice.post("/api/account/deposit", json={"amount": amount})
    assert first_id is not None
    async with sse_events(server, alice, headers={"Last-Event-ID": first_id}) as a:
        missed = await a.take(2)
        assert [e["balance"] for _, e in missed] == pytest.approx([1_000_003.0, 1_000_006.0])
        assert [e["cause"] for _, e in missed] == ["transfer", "transfer"]
    async with sse_events(server, alice, headers={"Last-Event-ID": "00000000-1"}) as a:
        ((gap_id, gap),) = await a.take(1)
    assert gap_id is None and gap["type"] == "gap" and gap["last_event_id"] == "00000000-1"
    assert "reload" in gap["message"]


def raw_websocket(server: Server, path_and_query: str) -> socket.socket:
    """A WebSocket handshake on a socket with a tiny receive buffer, never read again: a stuck client."""
    host, port = server.diff_url.removeprefix("ws://").split("/")[0].split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect((host, int(port)))
    sock.sendall(
        f"GET {path_and_query} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n".encode()
    )
    head = b""
    while b"\r\n\r\n" not in head:
        head += sock.recv(1)
    assert b" 101 " in head, head
    return sock


def metric(server: Server, name: str) -> float:
    text = httpx.get(server.http_url + "/metrics").text
    return float(re.search(rf"^{name} (\S+)$", text, re.M).group(1))  # type: ignore[union-attr]


def deposits_until(server: Server, user: User, done: Callable[[], bool], limit: int = 20_000) -> int:
    with httpx.Client(base_url=server.http_url, headers={"Authorization": f"Bearer {user.token}"}) as client:
        for count in range(1, limit + 1):
            assert client.post("/api/account/deposit", json={"amount": 1.0}).status_code == 200
            if count % 100 == 0 and done():
                return count
    raise AssertionError(f"not done after {limit} deposits")


def test_a_consumer_that_does_not_read_is_cut_off_and_the_exchange_goes_on(server: Server) -> None:
    alice, bob = open_user(server), open_user(server)
    before = metric(server, "qaex_notification_cutoffs_total")
    stuck = raw_websocket(server, f"/ws?token={alice.token}")
    try:
        sent = deposits_until(server, alice, lambda: metric(server, "qaex_notification_cutoffs_total") > before)
        print(f"cut off after {sent} deposits")
        # The exchange is unaffected: another user trades and gets events.
        assert order(bob, "x", "BUY", 1, 80000.0).status_code == 200
        assert httpx.get(server.http_url + "/health").status_code == 200
        # The stuck client, reading again, finds its events and then the close frame with the reason
        # (or, had it stayed stuck past the grace, a closed connection).
        stuck.settimeout(10)
        data = b""
        while chunk := stuck.recv(65536):
            data += chunk
        assert b"\x88" in data and b"slow consumer" in data, data[-200:]
    finally:
        stuck.close()
    with httpx.Client(base_url=server.http_url) as client:
        assert client.get("/api/account", headers={"Authorization": f"Bearer {alice.token}"}).status_code == 200


def raw_sse(server: Server, user: User) -> socket.socket:
    """GET /api/events on a socket with a tiny receive buffer, never read again."""
    host, port = server.http_url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    sock.connect((host, int(port)))
    sock.sendall(
        f"GET /api/events HTTP/1.1\r\nHost: {host}:{port}\r\nAuthorization: Bearer {user.token}\r\n\r\n".encode()
    )
    return sock


def test_an_sse_consumer_that_does_not_read_is_cut_off(server: Server) -> None:
    alice = open_user(server)
    before = metric(server, "qaex_notification_cutoffs_total")
    stuck = raw_sse(server, alice)
    try:
        deposits_until(server, alice, lambda: metric(server, "qaex_notification_cutoffs_total") > before)
        stuck.settimeout(15)
        data = b""
        # The response ends (the last chunk) with a last event saying why; or, had the client stayed
        # stuck past the grace, the connection is closed.
        while not data.endswith(b"\r\n0\r\n\r\n") and (chunk := stuck.recv(65536)):
            data += chunk
        assert b" 200 " in data.split(b"\r\n", 1)[0] and b"text/event-stream" in data
        assert b'"type":"closed","reason":"slow consumer' in data, data[-300:]
    finally:
        stuck.close()
    deadline = time.monotonic() + 5
    while metric(server, "qaex_notification_connections") and time.monotonic() < deadline:
        time.sleep(0.05)
    assert metric(server, "qaex_notification_connections") == 0


def test_sigterm_ends_open_streams_and_the_server_exits_0(tmp_path_factory: pytest.TempPathFactory) -> None:
    running = launch(tmp_path_factory.mktemp("notify-stop"))
    wait_ready(running)
    alice = open_user(running)
    running.clients.clear()  # keep alice's client: the streams below are what the stop must end
    sse = httpx.stream("GET", f"{running.http_url}/api/events", headers={"Authorization": f"Bearer {alice.token}"})
    response = sse.__enter__()
    ws = raw_websocket(running, f"/ws?token={alice.token}")
    try:
        lines = response.iter_lines()
        assert '"type":"ready"' in next(line for line in lines if line.startswith("data: "))
        started = time.monotonic()
        running.process.send_signal(signal.SIGTERM)
        assert running.process.wait(10) == 0, running.log()[-3000:]
        assert time.monotonic() - started < 8
        # hypercorn gives open requests its graceful timeout (3 s), then cancels them: the stream ends
        # with the connection (the app is not told of the shutdown before that, see qaex.api.events).
        with pytest.raises(httpx.RemoteProtocolError):
            list(lines)
        ws.settimeout(5)
        data = b""
        while chunk := ws.recv(65536):
            data += chunk
        assert b"server shutting down" in data, data[-200:]  # /ws: close frame 1001
    finally:
        ws.close()
        sse.__exit__(None, None, None)
        alice.client.close()
