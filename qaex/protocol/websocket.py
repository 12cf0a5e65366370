"""One server-side WebSocket connection as a protocol object: bytes in, events out, bytes to send.

wsproto does the work (the HTTP/1.1 upgrade through h11, frame parsing, unmasking, UTF-8 checks,
close codes); this object adds what a server needs on top of it and what wsproto leaves to its user:

* messages put together from their fragments, at most ``max_message_size`` characters (text) or
  bytes (binary) each: a larger one closes the connection with 1009, whatever its frames declared;
* the answers the protocol owes the peer without being asked (a pong for each ping, the close
  reply) queued in :attr:`outgoing` for the transport to send, in order, before anything else;
* a fast path for what a DIFF client sends nearly always, a small message in one masked frame:
  its header is read and its payload unmasked here (one big-integer XOR) instead of through
  wsproto's generators (about 25 µs a frame); control frames still go through wsproto, one whole
  frame at a time, and a fragmented message or a frame over FAST_FRAME_MAX hands the rest of the
  connection to wsproto, which streams it. Both paths give the same events (tests/test_websocket_protocol.py);
* a text frame built straight from encoded bytes (:meth:`text`): a DIFF rtn_data is JSON bytes
  already, and a server frame is a header and the payload (no mask, no extension is negotiated), so
  it is neither decoded to ``str`` nor encoded back as wsproto's ``Message`` would.

No IO here (the trio transport is qaex.api.ws_server). Parsing is linear in the input: wsproto reads
each byte once and the parts of a message are joined once.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
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
from wsproto.utilities import RemoteProtocolError

MESSAGE_TOO_BIG = 1009
INVALID_DATA = 1007
FAST_FRAME_MAX = 1 << 16
"""Frames up to this size are decoded by the fast path (see ServerWebSocket._frames)."""
ABNORMAL = 1006  # no close frame: the peer went away (never sent on the wire)
MAX_CLOSE_REASON = 120  # bytes of a close reason (a control frame's payload is at most 125)
EOF_REASON = "the peer closed the TCP connection"
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"


@dataclass(frozen=True, slots=True)
class RequestReceived:
    """The upgrade request: answer it with :meth:`ServerWebSocket.accept` or :meth:`reject`."""

    target: str
    headers: list[tuple[bytes, bytes]]


@dataclass(frozen=True, slots=True)
class MessageReceived:
    data: str | bytes


@dataclass(frozen=True, slots=True)
class PongReceived:
    payload: bytes


@dataclass(frozen=True, slots=True)
class Closed:
    """The connection is over: the peer closed it (its code and reason), broke the protocol (1002,
    1007, 1009), or went away without a close frame (1006). Send :attr:`ServerWebSocket.outgoing`,
    then close the socket."""

    code: int
    reason: str


Event = RequestReceived | MessageReceived | PongReceived | Closed


def text_frame(payload: bytes) -> bytes:
    """A single-frame text message from the server (FIN, opcode 1, no mask) carrying ``payload``
    (which must be UTF-8: DIFF frames are JSON)."""
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 1 << 16:
        return struct.pack("!BBH", 0x81, 126, size) + payload
    return struct.pack("!BBQ", 0x81, 127, size) + payload


class ServerWebSocket:
    """The protocol state of one accepted TCP connection (see the module docstring)."""

    __slots__ = (
        "_buffer",
        "_early",
        "_fast",
        "_head_tail",
        "_need",
        "_parts",
        "_size",
        "_ws",
        "closed",
        "max_message_size",
        "outgoing",
    )

    def __init__(self, max_message_size: int) -> None:
        self._ws = WSConnection(ConnectionType.SERVER)
        self.max_message_size = max_message_size
        self.outgoing = bytearray()
        """Bytes the protocol owes the peer (pongs, close replies, the handshake answer), in order."""
        self.closed: Closed | None = None
        self._parts: list[str | bytes] = []
        self._size = 0
        self._fast = True  # see _frames
        self._buffer = bytearray()  # the start of a frame the fast path has not all of yet
        self._need = 0  # bytes the buffered frame needs before it is worth parsing again
        self._early = b""  # bytes behind the upgrade request, read before it was accepted
        self._head_tail = b""  # the last bytes of the request head so far (its end may be split)

    @property
    def open(self) -> bool:
        """Messages may be sent (the handshake is accepted and no close was sent or received)."""
        return self._ws.state is ConnectionState.OPEN

    def receive(self, data: bytes) -> list[Event]:
        """Feed bytes from the socket (``b""``: the peer closed its side) and return what they meant."""
        if self.closed is not None:
            return []
        if self._ws.state is ConnectionState.CONNECTING:
            return self._handshake(data)
        if self._fast and data:
            return self._frames(data)
        return self._through_wsproto(data)

    def receive_early(self) -> list[Event]:
        """What came right behind the upgrade request, before it was accepted (call after accept)."""
        early, self._early = self._early, b""
        return self.receive(early) if early and self.open else []

    def _handshake(self, data: bytes) -> list[Event]:
        """Give wsproto the request head only; frames behind it wait in ``_early`` for the fast path."""
        if data:
            joined = self._head_tail + data
            end = joined.find(b"\r\n\r\n")
            if end >= 0:
                cut = end + 4 - len(self._head_tail)
                data, self._early = data[:cut], data[cut:]
            else:
                self._head_tail = joined[-3:]
        return self._through_wsproto(data)

    def _frames(self, data: bytes) -> list[Event]:
        """The fast path (see the module docstring): whole single-frame data messages are decoded
        here; control frames go to wsproto one whole frame at a time (its buffer stays empty, so its
        state stays right); a fragmented message or a frame over FAST_FRAME_MAX hands the connection
        to wsproto for good."""
        if self._buffer:
            self._buffer += data
            if len(self._buffer) < self._need:
                return []  # still incomplete: no copy (a frame sent a byte at a time stays linear)
            data = bytes(self._buffer)
            self._buffer.clear()
        self._need = 0
        events: list[Event] = []
        size, i = len(data), 0
        need = 2  # bytes the frame at i needs to be parsed, as far as its header tells
        while size - i >= 2:
            b0, b1 = data[i], data[i + 1]
            length, head = b1 & 0x7F, 2
            if length == 126:
                if size - i < 4:
                    need = 4
                    break
                length, head = int.from_bytes(data[i + 2 : i + 4], "big"), 4
            elif length == 127:
                if size - i < 10:
                    need = 10
                    break
                length, head = int.from_bytes(data[i + 2 : i + 10], "big"), 10
            if length > FAST_FRAME_MAX or (b0 & 0x0F) == 0 or ((b0 & 0x80) == 0 and (b0 & 0x0F) < 8):
                self._fast = False  # fragments or a long frame: wsproto from here on, streaming
                events += self._through_wsproto(data[i:])
                return events
            masked = b1 & 0x80
            if masked:
                head += 4
            end = i + head + length
            if end > size:
                need = end - i
                break
            if masked and (b0 == 0x81 or b0 == 0x82):
                payload = _unmask(data[i + head : end], data[i + head - 4 : i + head])
                message = self._whole_message(b0 == 0x81, payload)
                events.append(message)
                if isinstance(message, Closed):
                    return events
            else:  # control frames, and whatever wsproto must refuse (no mask, RSV bits, opcodes)
                events += self._through_wsproto(data[i:end])
                if self.closed is not None or not self._fast:
                    return events
            i = end
        if i < size:
            self._buffer += data[i:]
            self._need = need
        return events

    def _whole_message(self, text: bool, payload: bytes) -> MessageReceived | Closed:
        message: str | bytes = payload
        if text:
            try:
                message = payload.decode("utf-8")
            except UnicodeDecodeError:
                reason = "invalid UTF-8 in a text message"
                self._send_raw(CloseConnection(code=INVALID_DATA, reason=reason))
                return self._close_now(INVALID_DATA, reason)
        if len(message) > self.max_message_size:
            return self._too_big()
        return MessageReceived(message)

    def _too_big(self) -> Closed:
        self._parts, self._size = [], 0
        reason = f"message over {self.max_message_size} bytes"
        self._send_raw(CloseConnection(code=MESSAGE_TOO_BIG, reason=reason))
        return self._close_now(MESSAGE_TOO_BIG, reason)

    def _through_wsproto(self, data: bytes) -> list[Event]:
        ws = self._ws
        try:
            ws.receive_data(data or None)
        except RemoteProtocolError as exc:  # a broken upgrade request: 400, and the connection ends
            if ws.state is ConnectionState.CONNECTING:
                try:
                    self._send_raw(RejectConnection(status_code=400))
                except Exception:  # h11 cannot answer a request it never parsed: answer it by hand
                    self.outgoing += BAD_REQUEST
            return [self._close_now(1002, str(exc))]
        events: list[Event] = []
        for event in ws.events():
            if isinstance(event, (TextMessage, BytesMessage)):
                message = self._message_part(event)
                if isinstance(message, Closed):
                    events.append(message)
                    return events
                if message is not None:
                    events.append(MessageReceived(message))
            elif isinstance(event, Ping):
                self._send_raw(event.response())
            elif isinstance(event, Pong):
                events.append(PongReceived(bytes(event.payload)))
            elif isinstance(event, CloseConnection):
                if ws.state is ConnectionState.REMOTE_CLOSING:
                    self._send_raw(event.response())  # the peer closed first: echo its code
                elif ws.state is ConnectionState.OPEN:  # a protocol error found by wsproto: 1002 / 1007
                    self._send_raw(CloseConnection(code=event.code, reason=_reason(event.reason)))
                reason = event.reason or ("" if data else EOF_REASON)
                events.append(self._close_now(int(event.code), reason))
                return events
            elif isinstance(event, Request):
                events.append(RequestReceived(event.target, list(event.extra_headers)))
        if not data and self.closed is None:
            events.append(self._close_now(ABNORMAL, EOF_REASON))
        return events

    def _message_part(self, event: TextMessage | BytesMessage) -> str | bytes | Closed | None:
        data = event.data if isinstance(event.data, str) else bytes(event.data)
        self._size += len(data)
        if self._size > self.max_message_size:
            return self._too_big()
        if not event.message_finished:
            self._parts.append(data)
            return None
        parts, self._parts, self._size = self._parts, [], 0
        if not parts:
            return data
        parts.append(data)
        if isinstance(data, str):
            return "".join(part for part in parts if isinstance(part, str))
        return b"".join(part for part in parts if not isinstance(part, str))

    def _close_now(self, code: int, reason: str) -> Closed:
        self.closed = Closed(code, reason)
        return self.closed

    def _send_raw(
        self, event: AcceptConnection | RejectConnection | RejectData | CloseConnection | Pong
    ) -> None:
        self.outgoing += self._ws.send(event)

    # -- what the server sends ----------------------------------------------------------------------
    def accept(self) -> None:
        """Accept the upgrade (no subprotocol, no extension); the 101 answer goes to :attr:`outgoing`."""
        self._send_raw(AcceptConnection())

    def reject(self, status: int, body: bytes) -> None:
        """Refuse the upgrade with an HTTP ``status`` and a plain-text ``body``; the connection ends."""
        headers = [(b"content-type", b"text/plain; charset=utf-8"), (b"content-length", b"%d" % len(body))]
        self._send_raw(RejectConnection(status_code=status, headers=headers, has_body=True))
        self._send_raw(RejectData(data=body))
        self.closed = Closed(ABNORMAL, f"upgrade refused with {status}")

    def message(self, data: str | bytes) -> bytes:
        """The frame of one message (text for ``str``, binary for ``bytes``)."""
        if isinstance(data, str):
            return self._ws.send(TextMessage(data=data))
        return self._ws.send(BytesMessage(data=data))

    def text(self, payload: bytes) -> bytes:
        """The frame of one text message whose UTF-8 bytes are ``payload`` (see :func:`text_frame`)."""
        return text_frame(payload)

    def ping(self, payload: bytes) -> bytes:
        return self._ws.send(Ping(payload=payload))

    def close(self, code: int, reason: str) -> bytes:
        """The close frame the server starts a closing handshake with (nothing once closing)."""
        if self._ws.state is not ConnectionState.OPEN:
            return b""
        return self._ws.send(CloseConnection(code=code, reason=_reason(reason)))

    @property
    def close_sent(self) -> bool:
        """The server sent its close frame and waits for the peer's."""
        return self._ws.state is ConnectionState.LOCAL_CLOSING


def _unmask(payload: bytes, mask: bytes) -> bytes:
    """A client frame's payload XOR its 4-byte mask, as one big-integer XOR (linear, in C)."""
    size = len(payload)
    if not size:
        return b""
    key = (mask * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(size, "little")


def _reason(reason: str | None) -> str:
    """A close reason that fits a control frame (at most 123 bytes of UTF-8, whole characters)."""
    encoded = (reason or "").encode()[:MAX_CLOSE_REASON]
    return encoded.decode("utf-8", "ignore")
