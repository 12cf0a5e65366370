"""The server-side WebSocket protocol object (qaex.protocol.websocket), with no IO: a wsproto client
on the other side, the bytes between them cut at any boundary."""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from qaex.protocol.websocket import (
    BAD_REQUEST,
    Closed,
    MessageReceived,
    PongReceived,
    RequestReceived,
    ServerWebSocket,
    text_frame,
)


def client_and_upgrade() -> tuple[WSConnection, bytes]:
    client = WSConnection(ConnectionType.CLIENT)
    return client, client.send(Request(host="127.0.0.1", target="/ws/diff?x=1"))


def feed(server: ServerWebSocket, data: bytes, cuts: list[int]) -> list[Any]:
    """Feed ``data`` to the server in pieces cut at ``cuts`` (offsets, any order)."""
    events: list[Any] = []
    bounds = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    for start, end in itertools.pairwise(bounds):
        events.extend(server.receive(data[start:end]))
    return events


def open_pair(max_message_size: int = 1 << 20) -> tuple[ServerWebSocket, WSConnection]:
    server = ServerWebSocket(max_message_size)
    client, upgrade = client_and_upgrade()
    [request] = server.receive(upgrade)
    assert isinstance(request, RequestReceived) and request.target == "/ws/diff?x=1"
    server.accept()
    client.receive_data(bytes(server.outgoing))
    server.outgoing.clear()
    assert isinstance(next(client.events()), AcceptConnection)
    assert server.open
    return server, client


def client_events(client: WSConnection, data: bytes) -> list[Any]:
    client.receive_data(data)
    return list(client.events())


@settings(max_examples=200, deadline=None)
@given(
    texts=st.lists(st.text(max_size=300), min_size=1, max_size=6),
    blob=st.binary(max_size=300),
    cuts=st.lists(st.integers(min_value=0, max_value=10_000), max_size=40),
)
def test_messages_pings_and_a_close_split_at_any_byte(texts: list[str], blob: bytes, cuts: list[int]) -> None:
    server = ServerWebSocket(1 << 20)
    client, upgrade = client_and_upgrade()
    wire = bytearray(upgrade)
    events = feed(server, bytes(wire), cuts)
    assert [type(e) for e in events] == [RequestReceived]
    server.accept()
    client.receive_data(bytes(server.outgoing))
    server.outgoing.clear()
    list(client.events())
    wire = bytearray()
    for text in texts:  # each text in two fragments
        half = len(text) // 2
        wire += client.send(TextMessage(data=text[:half], message_finished=False))
        wire += client.send(TextMessage(data=text[half:], message_finished=True))
    wire += client.send(Ping(payload=b"p1"))
    wire += client.send(BytesMessage(data=blob))
    wire += client.send(Pong(payload=b"hb"))
    wire += client.send(CloseConnection(code=1000, reason="bye"))
    events = feed(server, bytes(wire), cuts)
    assert events == [
        *(MessageReceived(text) for text in texts),
        MessageReceived(blob),
        PongReceived(b"hb"),
        Closed(1000, "bye"),
    ]
    answers = client_events(client, bytes(server.outgoing))
    assert [type(a) for a in answers] == [Pong, CloseConnection]  # the ping answered, the close echoed
    assert answers[1].code == 1000
    assert server.receive(b"anything after the end") == []


def test_text_frames_of_every_length_class_decode_as_text() -> None:
    server, client = open_pair()
    for size in (0, 1, 125, 126, 127, 65535, 65536, 200_000):
        payload = ("é" * (size // 2) + "x" * (size % 2)).encode()
        [message] = client_events(client, text_frame(payload))
        assert isinstance(message, TextMessage) and message.data == payload.decode()
        assert server.text(payload) == text_frame(payload)


def test_a_message_over_the_limit_closes_with_1009_however_it_is_fragmented() -> None:
    server, client = open_pair(max_message_size=1000)
    wire = b"".join(client.send(TextMessage(data="a" * 100, message_finished=False)) for _ in range(10))
    assert server.receive(wire) == []  # exactly 1,000: still fine
    events = server.receive(client.send(TextMessage(data="b", message_finished=True)))
    assert events == [Closed(1009, "message over 1000 bytes")]
    [close] = client_events(client, bytes(server.outgoing))
    assert isinstance(close, CloseConnection) and close.code == 1009
    assert server.receive(bytes((0x81, 0x80)) + b"\x00" * 4) == []  # nothing after the end


def test_a_message_at_the_limit_is_delivered_and_the_count_starts_again() -> None:
    server, client = open_pair(max_message_size=10)
    for _ in range(3):
        assert server.receive(client.send(BytesMessage(data=b"0123456789"))) == [
            MessageReceived(b"0123456789")
        ]


def test_invalid_utf8_closes_with_1007() -> None:
    server, _client = open_pair()
    frame = bytes((0x81, 0x80 | 2)) + b"\x00\x00\x00\x00" + b"\xff\xfe"  # masked with a zero key
    [closed] = server.receive(frame)
    assert isinstance(closed, Closed) and closed.code == 1007
    assert bytes(server.outgoing).startswith(b"\x88")  # a close frame back


def test_an_unmasked_client_frame_is_a_protocol_error() -> None:
    server, _client = open_pair()
    [closed] = server.receive(bytes((0x81, 2)) + b"hi")
    assert isinstance(closed, Closed) and closed.code == 1002


def test_a_broken_upgrade_request_gets_a_400() -> None:
    server = ServerWebSocket(1 << 20)
    [closed] = server.receive(b"GET /ws/diff HTTP/1.1\r\nHost: x\r\n\r\n")  # no Upgrade headers
    assert isinstance(closed, Closed)
    assert bytes(server.outgoing).startswith(b"HTTP/1.1 400")
    garbage = ServerWebSocket(1 << 20)
    [closed] = garbage.receive(b"\x16\x03\x01 not http at all\r\n\r\n")
    assert isinstance(closed, Closed)
    assert bytes(garbage.outgoing).startswith(b"HTTP/1.1 400")


def test_an_endless_request_head_is_refused_past_h11s_bound() -> None:
    server = ServerWebSocket(1 << 20)
    events: list[Any] = server.receive(b"GET /ws/diff HTTP/1.1\r\n")
    for _ in range(100):  # 100 KB of headers, far past the 16 KiB bound
        events += server.receive(b"X-Filler: " + b"y" * 1000 + b"\r\n")
        if events:
            break
    assert [type(e) for e in events] == [Closed]
    assert bytes(server.outgoing) in (BAD_REQUEST,) or bytes(server.outgoing).startswith(b"HTTP/1.1 4")


def test_a_rejected_upgrade_answers_the_status_and_body() -> None:
    server = ServerWebSocket(1 << 20)
    client, upgrade = client_and_upgrade()
    server.receive(upgrade)
    server.reject(503, b"too many sessions")
    assert server.closed is not None and not server.open
    answer = client_events(client, bytes(server.outgoing))
    assert isinstance(answer[0], RejectConnection) and answer[0].status_code == 503
    assert b"".join(a.data for a in answer if isinstance(a, RejectData)) == b"too many sessions"


def test_the_server_closes_first_and_the_peer_answers() -> None:
    server, client = open_pair()
    frame = server.close(1001, "server shutting down " + "x" * 300)  # the reason is cut to fit
    assert server.close_sent and not server.open
    [close] = client_events(client, frame)
    assert isinstance(close, CloseConnection) and close.code == 1001 and len(close.reason.encode()) <= 120
    assert server.close(1000, "") == b""  # once
    events = server.receive(client.send(close.response()))
    assert events == [Closed(1001, close.reason)]
    assert bytes(server.outgoing) == b""  # nothing owed: the close handshake is complete


def test_eof_without_a_close_frame_is_1006() -> None:
    server, _client = open_pair()
    assert server.receive(b"") == [Closed(1006, "the peer closed the TCP connection")]


frame_specs = st.lists(
    st.one_of(
        st.tuples(st.just("text"), st.text(max_size=200)),
        st.tuples(st.just("bytes"), st.binary(max_size=200)),
        st.tuples(st.just("fragmented"), st.text(min_size=2, max_size=50)),
        st.tuples(st.just("ping"), st.binary(max_size=20)),
        st.tuples(st.just("pong"), st.binary(max_size=20)),
        st.tuples(st.just("long"), st.integers(min_value=65_000, max_value=70_000)),
    ),
    max_size=12,
)


def opened_client() -> tuple[WSConnection, bytes]:
    """A client past its handshake (with a scratch server) and the upgrade request it sent."""
    client, upgrade = client_and_upgrade()
    scratch = ServerWebSocket(1 << 20)
    scratch.receive(upgrade)
    scratch.accept()
    client.receive_data(bytes(scratch.outgoing))
    list(client.events())
    return client, upgrade


def client_frames(client: WSConnection, specs: list[tuple[str, Any]]) -> bytes:
    wire = bytearray()
    for kind, value in specs:
        if kind == "text":
            wire += client.send(TextMessage(data=value))
        elif kind == "bytes":
            wire += client.send(BytesMessage(data=value))
        elif kind == "fragmented":
            wire += client.send(TextMessage(data=value[:1], message_finished=False))
            wire += client.send(Ping(payload=b"mid"))  # a control frame between two fragments
            wire += client.send(TextMessage(data=value[1:], message_finished=True))
        elif kind == "ping":
            wire += client.send(Ping(payload=value))
        elif kind == "pong":
            wire += client.send(Pong(payload=value))
        else:
            wire += client.send(TextMessage(data="L" * value))
    return bytes(wire)


def run_server(wire: bytes, cuts: list[int], fast: bool) -> tuple[list[Any], bytes]:
    """Upgrade + frames in one byte string (frames right behind the request), cut at ``cuts``."""
    server = ServerWebSocket(100_000)
    if not fast:
        server._fast = False  # the reference: wsproto for every frame
    events: list[Any] = []
    bounds = sorted({c % (len(wire) + 1) for c in cuts} | {0, len(wire)})
    accepted = False
    for start, end in itertools.pairwise(bounds):
        events.extend(server.receive(wire[start:end]))
        if not accepted and any(isinstance(e, RequestReceived) for e in events):
            accepted = True
            server.accept()
            events.extend(server.receive_early())
    return events, bytes(server.outgoing)


@settings(max_examples=300, deadline=None)
@given(specs=frame_specs, cuts=st.lists(st.integers(min_value=0, max_value=200_000), max_size=30))
def test_the_fast_path_and_wsproto_give_the_same_events_and_answers(
    specs: list[tuple[str, Any]], cuts: list[int]
) -> None:
    client, upgrade = opened_client()
    wire = upgrade + client_frames(client, specs) + client.send(CloseConnection(code=1000, reason="end"))
    fast = run_server(wire, cuts, fast=True)
    reference = run_server(wire, cuts, fast=False)
    assert fast == reference
    assert fast[0][-1] == Closed(1000, "end")
    assert sum(isinstance(e, MessageReceived) for e in fast[0]) == sum(
        kind in ("text", "bytes", "fragmented", "long") for kind, _ in specs
    )


def test_frames_behind_the_upgrade_request_are_read_once_it_is_accepted() -> None:
    client, upgrade = opened_client()
    server = ServerWebSocket(1 << 20)
    events = server.receive(upgrade + client.send(TextMessage(data='{"aid":"peek_message"}')))
    assert [type(e) for e in events] == [RequestReceived]
    server.accept()
    assert server.receive_early() == [MessageReceived('{"aid":"peek_message"}')]
    assert server.receive_early() == []


def test_a_fast_path_text_frame_with_invalid_utf8_or_over_the_limit_closes() -> None:
    server, client = open_pair(max_message_size=10)
    [closed] = server.receive(client.send(BytesMessage(data=b"01234567890")))
    assert closed == Closed(1009, "message over 10 bytes")
    server, client = open_pair()
    frame = bytearray(client.send(TextMessage(data="ab")))
    frame[0] = 0x81
    masked = frame[2:6]
    frame[6], frame[7] = 0xFF ^ masked[0], 0xFE ^ masked[1]
    [closed] = server.receive(bytes(frame))
    assert isinstance(closed, Closed) and closed.code == 1007


def test_a_large_frame_sent_a_byte_at_a_time_arrives_whole() -> None:
    server, client = open_pair()
    text = "x" * 60_000 + "é"  # under FAST_FRAME_MAX: the fast path buffers it
    wire = client.send(TextMessage(data=text)) + client.send(TextMessage(data="next"))
    events: list[Any] = []
    for i in range(len(wire)):
        events += server.receive(wire[i : i + 1])
        if i < len(wire) - 12:
            assert not events or events == [MessageReceived(text)]
    assert events == [MessageReceived(text), MessageReceived("next")]


def test_a_frame_declaring_a_terabyte_is_refused_once_the_limit_is_passed() -> None:
    server, _client = open_pair(max_message_size=100_000)
    header = bytes((0x81, 0x80 | 127)) + (1 << 40).to_bytes(8, "big") + b"\x00\x00\x00\x00"  # zero mask
    events = server.receive(header)
    chunk = b"a" * 16_384
    for _ in range(10):  # 160 KB of its terabyte: nothing is kept past the limit
        if events:
            break
        events = server.receive(chunk)
    assert events == [Closed(1009, "message over 100000 bytes")]
    assert bytes(server.outgoing).startswith(b"\x88")
    assert server.receive(chunk) == []
