"""One server-side WebSocket connection as a protocol object: bytes in, events out, bytes to send.

wsproto does the work (the HTTP/1.1 upgrade through h11, frame parsing, unmasking, UTF-8 checks,
close codes); this object adds what a server needs on top of it and what wsproto leaves to its user:

* messages put together from their fragments, at most ``max_message_size`` characters (text) or
  bytes (binary) each: a larger one closes the connection with 1009, whatever its frames declared;
* the answers the protocol owes the peer without being asked (a pong for each ping, the close
  reply) queued in :attr:`outgoing` for the transport to send, in order, before anything else;
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

    __slots__ = ("_parts", "_size", "_ws", "closed", "max_message_size", "outgoing")

    def __init__(self, max_message_size: int) -> None:
        self._ws = WSConnection(ConnectionType.SERVER)
        self.max_message_size = max_message_size
        self.outgoing = bytearray()
        """Bytes the protocol owes the peer (pongs, close replies, the handshake answer), in order."""
        self.closed: Closed | None = None
        self._parts: list[str | bytes] = []
        self._size = 0

    @property
    def open(self) -> bool:
        """Messages may be sent (the handshake is accepted and no close was sent or received)."""
        return self._ws.state is ConnectionState.OPEN

    def receive(self, data: bytes) -> list[Event]:
        """Feed bytes from the socket (``b""``: the peer closed its side) and return what they meant."""
        if self.closed is not None:
            return []
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
            self._parts = []
            reason = f"message over {self.max_message_size} bytes"
            self._send_raw(CloseConnection(code=MESSAGE_TOO_BIG, reason=reason))
            return self._close_now(MESSAGE_TOO_BIG, reason)
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


def _reason(reason: str | None) -> str:
    """A close reason that fits a control frame (at most 123 bytes of UTF-8, whole characters)."""
    encoded = (reason or "").encode()[:MAX_CLOSE_REASON]
    return encoded.decode("utf-8", "ignore")
