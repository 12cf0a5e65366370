"""The sans-IO NATS protocol object (qaex.protocol.nats): no IO, data split at every byte boundary."""

from __future__ import annotations

import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qaex.protocol import nats
from qaex.protocol.nats import (
    Connect,
    Err,
    Event,
    Info,
    Msg,
    NatsParser,
    NatsProtocolError,
    Ok,
    Ping,
    Pong,
    Pub,
    Sub,
    Unsub,
)

token = st.text(st.sampled_from("abcxyzABC0123456789._-*>"), min_size=1, max_size=20)
payload = st.binary(max_size=300)
header_text = st.text(
    st.characters(min_codepoint=33, max_codepoint=126, blacklist_characters=":"), min_size=1, max_size=10
)
headers = st.lists(st.tuples(header_text, header_text), max_size=3).map(tuple)


def server_frames() -> st.SearchStrategy[tuple[bytes, Event]]:
    """(bytes a server sends, the event a client parses from them)."""
    msgs = st.builds(
        lambda s, sid, p, r: (nats.msg(s, sid, p, r), Msg(s, sid, r, p)),
        token,
        token,
        payload,
        st.none() | token,
    )
    hmsgs = st.builds(
        lambda s, sid, p, r, h, status: (
            nats.msg(s, sid, p, r, h, status),
            Msg(s, sid, r, p, h, status),
        ),
        token,
        token,
        payload,
        st.none() | token,
        headers,
        st.none() | st.sampled_from([503, 408, 100]),
    )
    infos = st.dictionaries(token, st.integers() | token, max_size=4).map(lambda d: (nats.info(d), Info(d)))
    fixed = st.sampled_from(
        [
            (nats.PING, Ping()),
            (nats.PONG, Pong()),
            (nats.OK, Ok()),
            (nats.err("Stale Connection"), Err("Stale Connection")),
        ]
    )
    return msgs | hmsgs | infos | fixed


def client_frames() -> st.SearchStrategy[tuple[bytes, Event]]:
    pubs = st.builds(lambda s, p, r: (nats.pub(s, p, r), Pub(s, r, p)), token, payload, st.none() | token)
    hpubs = st.builds(
        lambda s, p, r, h: (nats.pub(s, p, r, h), Pub(s, r, p, h)), token, payload, st.none() | token, headers
    )
    subs = st.builds(lambda s, sid, q: (nats.sub(s, sid, q), Sub(s, q, sid)), token, token, st.none() | token)
    unsubs = st.builds(
        lambda sid, n: (nats.unsub(sid, n), Unsub(sid, n)), token, st.none() | st.integers(0, 10**9)
    )
    connects = st.dictionaries(token, st.booleans() | token, max_size=4).map(
        lambda d: (nats.connect(d), Connect(d))
    )
    fixed = st.sampled_from([(nats.PING, Ping()), (nats.PONG, Pong())])
    return pubs | hpubs | subs | unsubs | connects | fixed


def feed(parser: NatsParser, data: bytes, cuts: list[int]) -> list[Event]:
    events: list[Event] = []
    last = 0
    for cut in [*sorted({c % (len(data) + 1) for c in cuts}), len(data)]:
        parser.receive_data(data[last:cut])
        events += parser.events()
        last = cut
    return events


@settings(max_examples=300)
@given(st.lists(server_frames(), max_size=12), st.lists(st.integers(0, 10_000), max_size=20))
def test_client_parses_server_frames_split_anywhere(
    frames: list[tuple[bytes, Event]], cuts: list[int]
) -> None:
    data = b"".join(raw for raw, _ in frames)
    parser = NatsParser("client")
    assert feed(parser, data, cuts) == [event for _, event in frames]
    assert parser.buffered == 0


@settings(max_examples=300)
@given(st.lists(client_frames(), max_size=12), st.lists(st.integers(0, 10_000), max_size=20))
def test_encoders_round_trip_through_the_server_role(
    frames: list[tuple[bytes, Event]], cuts: list[int]
) -> None:
    data = b"".join(raw for raw, _ in frames)
    assert feed(NatsParser("server"), data, cuts) == [event for _, event in frames]


@given(st.lists(server_frames(), min_size=1, max_size=6))
def test_one_byte_at_a_time(frames: list[tuple[bytes, Event]]) -> None:
    data = b"".join(raw for raw, _ in frames)
    parser = NatsParser("client")
    events: list[Event] = []
    for i in range(len(data)):
        parser.receive_data(data[i : i + 1])
        events += parser.events()
    assert events == [event for _, event in frames]


def test_operation_names_are_case_insensitive_and_tabs_separate() -> None:
    parser = NatsParser("client")
    parser.receive_data(b"ping\r\nmsg\tfoo  7\t3\r\nabc\r\n+ok\r\n")
    assert parser.events() == [Ping(), Msg("foo", "7", None, b"abc"), Ok()]


def test_payload_may_contain_crlf() -> None:
    parser = NatsParser("client")
    parser.receive_data(nats.msg("a", "1", b"\r\nMSG x 1 2\r\n\r\n"))
    assert parser.events() == [Msg("a", "1", None, b"\r\nMSG x 1 2\r\n\r\n")]


def test_no_responders_status() -> None:
    parser = NatsParser("client")
    parser.receive_data(b"HMSG _INBOX.x.1 2 16 16\r\nNATS/1.0 503\r\n\r\n\r\n")
    [event] = parser.events()
    assert isinstance(event, Msg) and event.status == 503 and event.payload == b""


@pytest.mark.parametrize(
    "data",
    [
        b"MSG a 1 10\r\n" + b"x" * 10 + b"XX",  # no CRLF after the payload
        b"MSG a 1 -1\r\n",
        b"MSG a 1 notanumber\r\n",
        b"MSG a\r\n",
        b"HMSG a 1 10 5\r\n",  # headers larger than the total
        b"PUB a 1\r\n",  # a client operation reaching a client
        b"INFO [1]\r\n",
        b"INFO {\r\n",
        b"HMSG a 1 5 5\r\nHTTP/\r\n",
    ],
)
def test_broken_input_is_an_error_and_stays_one(data: bytes) -> None:
    parser = NatsParser("client")
    with pytest.raises(NatsProtocolError):
        parser.receive_data(data)
        parser.events()
    with pytest.raises(NatsProtocolError):
        parser.receive_data(b"PING\r\n")


def test_bounds() -> None:
    parser = NatsParser("client", max_payload=100, max_control_line=64)
    parser.receive_data(b"MSG a 1 101\r\n")
    with pytest.raises(NatsProtocolError, match="max_payload"):
        parser.events()
    parser = NatsParser("client", max_payload=100, max_control_line=64)
    parser.receive_data(b"MSG " + b"a" * 70)  # no CRLF yet, already too long
    with pytest.raises(NatsProtocolError, match="control line"):
        parser.events()
    parser = NatsParser("client", max_control_line=64)
    parser.receive_data(b"MSG " + b"a" * 70 + b" 1 0\r\n\r\n")
    with pytest.raises(NatsProtocolError, match="control line"):
        parser.events()


def test_encoders_refuse_bad_subjects() -> None:
    for bad in ("", "a b", "a\r\nPUB", "x" * 2000):
        with pytest.raises(ValueError):
            nats.pub(bad, b"")
    with pytest.raises(ValueError):
        nats.pub("a", b"", headers=[("bad:name", "v")])


def test_parsing_is_linear() -> None:
    """A megabyte of one payload fed a byte at a time, and many small messages: linear, not quadratic."""
    parser = NatsParser("client", max_payload=1 << 21)
    frame = nats.msg("big", "1", b"z" * 200_000)
    started = time.perf_counter()
    for i in range(0, len(frame), 7):
        parser.receive_data(frame[i : i + 7])
        parser.events()
    many = b"".join(nats.msg("q.rb", "1", b"p" * 50) for _ in range(50_000))
    parser.receive_data(many)
    assert len(parser.events()) == 50_000
    assert time.perf_counter() - started < 5.0
    # a long control line split in small pieces is scanned once
    parser = NatsParser("client", max_control_line=1 << 20)
    started = time.perf_counter()
    for _ in range(100_000):
        parser.receive_data(b"a")
        assert parser.next_event() is None
    assert time.perf_counter() - started < 5.0
