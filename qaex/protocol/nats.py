"""A sans-IO NATS client protocol object (like h11 or wsproto: bytes in, events out; no sockets).

The NATS client protocol (docs.nats.io, "Client Protocol") is line based: a control line ending in
CRLF (``INFO {...}``, ``MSG <subject> <sid> [reply-to] <#bytes>``, ``PING``, ...), followed for
``MSG``/``HMSG``/``PUB``/``HPUB`` by exactly ``#bytes`` of payload and a CRLF. Operation names are
case insensitive; arguments are separated by spaces or tabs.

:class:`NatsParser` turns a byte stream into events. It accepts data split at any byte boundary
(``receive_data`` any number of times, then ``next_event`` until it returns None), parses in time
linear in the input (each byte is scanned for CRLF once: the scan resumes where the last one
stopped) and bounds what it holds: a control line longer than ``max_control_line`` and a payload
larger than ``max_payload`` are protocol errors (:class:`NatsProtocolError`), after which the
parser refuses more input — the transport drops the connection, as the server does. ``role``
chooses which operations may arrive: a client reads what a server sends (INFO, MSG, HMSG, PING,
PONG, +OK, -ERR), a server what a client sends (CONNECT, PUB, HPUB, SUB, UNSUB, PING, PONG); the
server role exists for tests (the encoders below round-trip through it).

The encoders (:func:`connect`, :func:`pub`, :func:`sub`, ...) return the bytes of one operation;
the transport joins a batch of them into one write.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

CRLF = b"\r\n"
DEFAULT_MAX_PAYLOAD = 1 << 20
"""nats-server's default ``max_payload`` (1 MB); the server's INFO tells the real one."""
DEFAULT_MAX_CONTROL_LINE = 4096
"""nats-server's default ``max_control_line`` (4 KB): subjects, reply subjects and sizes fit in it."""
HEADER_VERSION = b"NATS/1.0"
MAX_SUBJECT_LENGTH = 1024


class NatsProtocolError(Exception):
    """The peer broke the protocol (or a bound); the connection cannot go on."""


# -- events ---------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Info:
    info: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Connect:
    options: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Msg:
    """MSG or HMSG from the server. `headers` is None for MSG; `status` is the HMSG status (503: no
    responders), None without one."""

    subject: str
    sid: str
    reply: str | None
    payload: bytes
    headers: tuple[tuple[str, str], ...] | None = None
    status: int | None = None

    def header(self, name: str) -> str | None:
        for key, value in self.headers or ():
            if key.lower() == name.lower():
                return value
        return None


@dataclass(frozen=True, slots=True)
class Pub:
    """PUB or HPUB from a client (server role)."""

    subject: str
    reply: str | None
    payload: bytes
    headers: tuple[tuple[str, str], ...] | None = None


@dataclass(frozen=True, slots=True)
class Sub:
    subject: str
    queue: str | None
    sid: str


@dataclass(frozen=True, slots=True)
class Unsub:
    sid: str
    max_msgs: int | None


@dataclass(frozen=True, slots=True)
class Ping:
    pass


@dataclass(frozen=True, slots=True)
class Pong:
    pass


@dataclass(frozen=True, slots=True)
class Ok:
    pass


@dataclass(frozen=True, slots=True)
class Err:
    message: str


Event = Info | Connect | Msg | Pub | Sub | Unsub | Ping | Pong | Ok | Err

CLIENT_RECEIVES = frozenset({b"INFO", b"MSG", b"HMSG", b"PING", b"PONG", b"+OK", b"-ERR"})
SERVER_RECEIVES = frozenset({b"CONNECT", b"PUB", b"HPUB", b"SUB", b"UNSUB", b"PING", b"PONG"})


@dataclass(slots=True)
class _Body:
    """A control line whose payload has not all arrived yet."""

    op: bytes
    args: list[bytes]
    header_size: int
    total_size: int


@dataclass(slots=True)
class NatsParser:
    role: Literal["client", "server"] = "client"
    max_payload: int = DEFAULT_MAX_PAYLOAD
    max_control_line: int = DEFAULT_MAX_CONTROL_LINE
    _buffer: bytearray = field(default_factory=bytearray)
    _start: int = 0  # where unparsed data begins in _buffer
    _scanned: int = 0  # bytes after _start already searched for CRLF (no rescan: linear time)
    _body: _Body | None = None
    _broken: NatsProtocolError | None = None

    def receive_data(self, data: bytes) -> None:
        if self._broken is not None:
            raise self._broken
        self._buffer += data

    @property
    def buffered(self) -> int:
        """Bytes received and not parsed yet (bounded by max_control_line or max_payload + the line)."""
        return len(self._buffer) - self._start

    def next_event(self) -> Event | None:
        """The next complete event, or None until more data arrives. Raises NatsProtocolError."""
        if self._broken is not None:
            raise self._broken
        try:
            event = self._next()
        except NatsProtocolError as exc:
            self._broken = exc
            self._buffer = bytearray()
            self._start = self._scanned = 0
            raise
        if self._start > 65536 and self._start * 2 > len(self._buffer):
            del self._buffer[: self._start]  # compaction: amortized linear
            self._start = 0
        return event

    def events(self) -> list[Event]:
        out: list[Event] = []
        while (event := self.next_event()) is not None:
            out.append(event)
        return out

    def _next(self) -> Event | None:
        buffer = self._buffer
        if self._body is not None:
            return self._finish_body(self._body)
        begin = self._start
        end = buffer.find(CRLF, begin + max(self._scanned - 1, 0))
        if end < 0:
            self._scanned = len(buffer) - begin
            if self._scanned > self.max_control_line:
                raise NatsProtocolError(f"control line longer than {self.max_control_line} bytes")
            return None
        if end - begin > self.max_control_line:
            raise NatsProtocolError(f"control line longer than {self.max_control_line} bytes")
        line = bytes(buffer[begin:end])
        self._start = end + 2
        self._scanned = 0
        cut = line.find(b" ", 0, 8)
        if b"\t" in line[:8]:  # rare: tabs separate too
            tab = line.find(b"\t", 0, 8)
            cut = tab if cut < 0 else min(cut, tab)
        op, rest = (line, b"") if cut < 0 else (line[:cut], line[cut + 1 :])
        op = op.upper()
        allowed = CLIENT_RECEIVES if self.role == "client" else SERVER_RECEIVES
        if op not in allowed:
            raise NatsProtocolError(f"unexpected operation {op[:16]!r}")
        if op == b"PING":
            return Ping()
        if op == b"PONG":
            return Pong()
        if op == b"+OK":
            return Ok()
        if op == b"-ERR":
            return Err(rest.strip().strip(b"'").decode("utf-8", "replace"))
        if op in (b"INFO", b"CONNECT"):
            try:
                value = json.loads(rest)
            except ValueError as exc:
                raise NatsProtocolError(f"{op.decode()} is not JSON") from exc
            if not isinstance(value, dict):
                raise NatsProtocolError(f"{op.decode()} is not a JSON object")
            return Info(value) if op == b"INFO" else Connect(value)
        args = rest.split()
        if op == b"SUB":
            if len(args) not in (2, 3):
                raise NatsProtocolError("SUB takes a subject, an optional queue group and a sid")
            return Sub(args[0].decode(), args[1].decode() if len(args) == 3 else None, args[-1].decode())
        if op == b"UNSUB":
            if len(args) not in (1, 2):
                raise NatsProtocolError("UNSUB takes a sid and an optional count")
            return Unsub(args[0].decode(), _size(args[1]) if len(args) == 2 else None)
        # MSG <subject> <sid> [reply] <#bytes>; HMSG ... <#hdr> <#total>; PUB <subject> [reply] <#bytes>
        headers = op in (b"HMSG", b"HPUB")
        fixed = (2 if op in (b"MSG", b"HMSG") else 1) + (2 if headers else 1)
        if len(args) not in (fixed, fixed + 1):
            raise NatsProtocolError(f"{op.decode()}: wrong number of arguments")
        total = _size(args[-1])
        header_size = _size(args[-2]) if headers else 0
        if header_size > total:
            raise NatsProtocolError(f"{op.decode()}: header size larger than the total")
        if total > self.max_payload:
            raise NatsProtocolError(f"payload of {total} bytes exceeds max_payload {self.max_payload}")
        body = self._body = _Body(op, args, header_size, total)
        return self._finish_body(body)

    def _finish_body(self, body: _Body) -> Event | None:
        buffer = self._buffer
        begin = self._start
        stop = begin + body.total_size
        if len(buffer) < stop + 2:
            return None
        if buffer[stop : stop + 2] != CRLF:
            raise NatsProtocolError(f"{body.op.decode()}: payload not followed by CRLF")
        data = bytes(buffer[begin:stop])
        self._start = stop + 2
        self._body = None
        headers: tuple[tuple[str, str], ...] | None = None
        status: int | None = None
        if body.op in (b"HMSG", b"HPUB"):
            headers, status = parse_headers(data[: body.header_size])
            data = data[body.header_size :]
        args = [a.decode() for a in body.args]
        if body.op in (b"MSG", b"HMSG"):
            reply = args[2] if len(args) == (5 if headers is not None else 4) else None
            return Msg(args[0], args[1], reply, data, headers, status)
        reply = args[1] if len(args) == (4 if headers is not None else 3) else None
        return Pub(args[0], reply, data, headers)


def _size(token: bytes) -> int:
    if not token.isdigit() or len(token) > 12:
        raise NatsProtocolError(f"bad size {token[:16]!r}")
    return int(token)


def parse_headers(block: bytes) -> tuple[tuple[tuple[str, str], ...], int | None]:
    """``NATS/1.0[ <status>[ <description>]]\\r\\nName: value\\r\\n...\\r\\n`` -> (headers, status)."""
    lines = block.split(CRLF)
    first = lines[0]
    if not first.startswith(HEADER_VERSION):
        raise NatsProtocolError("headers do not start with NATS/1.0")
    status: int | None = None
    rest = first[len(HEADER_VERSION) :].strip()
    if rest:
        code = rest.split(None, 1)[0]
        if not code.isdigit() or len(code) != 3:
            raise NatsProtocolError("bad header status")
        status = int(code)
    pairs: list[tuple[str, str]] = []
    for line in lines[1:]:
        if not line:
            continue
        name, colon, value = line.partition(b":")
        if not colon or not name.strip():
            raise NatsProtocolError("bad header line")
        pairs.append((name.strip().decode("utf-8", "replace"), value.strip().decode("utf-8", "replace")))
    return tuple(pairs), status


# -- encoders (client -> server, and the server's side for tests) ---------------------------------
def _token(value: str, what: str) -> bytes:
    raw = value.encode()
    if not raw or len(raw) > MAX_SUBJECT_LENGTH or any(c in raw for c in b" \t\r\n"):
        raise ValueError(f"bad NATS {what}: {value[:64]!r}")
    return raw


def encode_headers(
    headers: tuple[tuple[str, str], ...] | list[tuple[str, str]], status: int | None = None
) -> bytes:
    out = bytearray(HEADER_VERSION)
    if status is not None:
        out += b" %d" % status
    out += CRLF
    for name, value in headers:
        if any(c in name for c in ":\r\n") or any(c in value for c in "\r\n"):
            raise ValueError(f"bad NATS header {name[:64]!r}")
        out += f"{name}: {value}".encode() + CRLF
    out += CRLF
    return bytes(out)


def connect(options: dict[str, Any]) -> bytes:
    return b"CONNECT " + json.dumps(options, separators=(",", ":")).encode() + CRLF


def info(options: dict[str, Any]) -> bytes:
    return b"INFO " + json.dumps(options, separators=(",", ":")).encode() + CRLF


def pub(
    subject: str,
    payload: bytes,
    reply: str | None = None,
    headers: tuple[tuple[str, str], ...] | list[tuple[str, str]] | None = None,
) -> bytes:
    """PUB (or HPUB when `headers` is given, even empty) of one message."""
    parts = [_token(subject, "subject")]
    if reply is not None:
        parts.append(_token(reply, "reply subject"))
    if headers is None:
        return b"PUB " + b" ".join(parts) + b" %d\r\n" % len(payload) + payload + CRLF
    block = encode_headers(headers)
    size = len(block) + len(payload)
    return b"HPUB " + b" ".join(parts) + b" %d %d\r\n" % (len(block), size) + block + payload + CRLF


def msg(
    subject: str,
    sid: str,
    payload: bytes,
    reply: str | None = None,
    headers: tuple[tuple[str, str], ...] | None = None,
    status: int | None = None,
) -> bytes:
    """MSG (or HMSG) as a server sends it (for tests)."""
    parts = [_token(subject, "subject"), _token(sid, "sid")]
    if reply is not None:
        parts.append(_token(reply, "reply subject"))
    if headers is None and status is None:
        return b"MSG " + b" ".join(parts) + b" %d\r\n" % len(payload) + payload + CRLF
    block = encode_headers(headers or (), status)
    size = len(block) + len(payload)
    return b"HMSG " + b" ".join(parts) + b" %d %d\r\n" % (len(block), size) + block + payload + CRLF


def sub(subject: str, sid: str, queue: str | None = None) -> bytes:
    parts = [_token(subject, "subject")]
    if queue is not None:
        parts.append(_token(queue, "queue group"))
    return b"SUB " + b" ".join(parts) + b" " + _token(sid, "sid") + CRLF


def unsub(sid: str, max_msgs: int | None = None) -> bytes:
    tail = b"" if max_msgs is None else b" %d" % max_msgs
    return b"UNSUB " + _token(sid, "sid") + tail + CRLF


PING = b"PING\r\n"
PONG = b"PONG\r\n"
OK = b"+OK\r\n"


def err(message: str) -> bytes:
    return b"-ERR '" + message.replace("\r", " ").replace("\n", " ").encode() + b"'" + CRLF
