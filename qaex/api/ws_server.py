"""The DIFF listener's WebSocket server: the protocol object of qaex.protocol.websocket over trio sockets.

Why not trio-websocket (which the clients, tests and benches still use): its connection runs a reader
task that hands every message to the application's task over a memory channel, and every send takes
a lock and awaits ``send_all``: per frame a task switch or two and several scheduler checkpoints. A
DIFF process's work *is* frames (each session peeks after each rtn_data), and a publish sends one to
every subscribed session. Here:

* the application's task reads the socket itself (:meth:`WebSocketConnection.receive_messages`
  returns every complete message of one read; control frames are answered on the way);
* :meth:`WebSocketConnection.write` sends without waiting: the bytes go to the kernel at once, and
  only what the kernel did not take is queued, for the connection's drain task to send when the
  socket is writable. The DIFF writer (qaex.api.diff_writer) sends every session's frames from one
  task this way, with no task switch per frame;
* a peer that stops reading is cut off: queued bytes that made no progress for ``send_timeout``
  seconds close the connection, so a writer is never stuck on a client for ever.

A connection is two tasks: the application's (reading) and the drain task, which sleeps unless the
kernel's send buffer filled up. The upgrade request must arrive within ``handshake_timeout``; its size
is bounded by h11 (16 KiB), a message by ``max_message_size`` (close 1009).
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import trio

from qaex.protocol.websocket import (
    ABNORMAL,
    Closed,
    Event,
    MessageReceived,
    PongReceived,
    RequestReceived,
    ServerWebSocket,
)

log = logging.getLogger("qaex.ws")

RECEIVE_SIZE = 65536
HANDSHAKE_TIMEOUT = 10.0
SEND_TIMEOUT = 30.0
"""Seconds queued output may make no progress before the connection is cut off (a peer not reading)."""
CLOSE_WAIT = 1.0
"""Seconds a server-initiated close waits for the peer's close frame."""
BACKLOG = 4096
NOTSENT_LOWAT = 1 << 14


@dataclass(frozen=True, slots=True)
class CloseReason:
    code: int
    reason: str


class ConnectionClosed(Exception):
    """The connection is closed (by either side, or broken); ``reason`` says how."""

    def __init__(self, reason: CloseReason) -> None:
        super().__init__(f"{reason.code} {reason.reason}".strip())
        self.reason = reason


@dataclass(frozen=True, slots=True)
class Peer:
    address: str
    port: int

    def __str__(self) -> str:
        return f"{self.address}:{self.port}"


class WebSocketConnection:
    """One server-side WebSocket connection (see the module docstring)."""

    def __init__(
        self,
        sock: socket.socket,
        remote: Peer,
        *,
        max_message_size: int,
        send_timeout: float = SEND_TIMEOUT,
    ) -> None:
        self._sock = sock
        self.remote = remote
        self.protocol = ServerWebSocket(max_message_size)
        self.send_timeout = send_timeout
        self.closed: CloseReason | None = None
        """Set once the connection is over, by either side."""
        self.path = ""
        self.headers: list[tuple[bytes, bytes]] = []
        self.on_drained: Callable[[], None] | None = None
        """Called when queued output has all gone to the kernel (the DIFF writer offers the session again)."""
        self._out = bytearray()  # what the kernel has not taken yet, in order
        self._has_out = trio.Event()
        self._drained = trio.Event()
        self._drained.set()
        self._send_lock = trio.Lock()
        self._messages: deque[str | bytes] = deque()
        self._reading = False
        self._close_received = trio.Event()
        self._pings: dict[bytes, trio.Event] = {}
        self._socket_closed = False

    # -- sending ----------------------------------------------------------------------------------
    @property
    def writable(self) -> bool:
        """Open, with nothing queued: a write now goes straight to the kernel."""
        return not self._out and self.closed is None and self.protocol.open

    def write(self, data: bytes) -> None:
        """Send ``data`` without waiting: what the kernel does not take now is queued for the drain task."""
        if self._socket_closed:
            raise ConnectionClosed(self.closed or CloseReason(ABNORMAL, "the connection is closed"))
        if self._out:
            self._out += data
            return
        try:
            sent = self._sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError as exc:
            self._broken(exc)
            raise ConnectionClosed(self.closed or CloseReason(ABNORMAL, str(exc))) from None
        if sent < len(data):
            self._out += memoryview(data)[sent:]
            self._drained = trio.Event()
            self._has_out.set()

    def text(self, payload: bytes) -> None:
        """Write one text message whose UTF-8 bytes are ``payload``."""
        self.write(self.protocol.text(payload))

    async def send_message(self, data: str | bytes) -> None:
        """Send one message (text for ``str``) and wait until the kernel has all of it."""
        if self.closed is not None or not self.protocol.open:
            raise ConnectionClosed(self.closed or CloseReason(ABNORMAL, "the connection is closing"))
        self.write(self.protocol.message(data))
        await self._until_drained()

    async def ping(self, payload: bytes | None = None) -> None:
        """Ping and wait for the pong carrying the same payload (read by whoever reads the connection)."""
        if self.closed is not None or not self.protocol.open:
            raise ConnectionClosed(self.closed or CloseReason(ABNORMAL, "the connection is closing"))
        payload = payload if payload is not None else os.urandom(4)
        answered = self._pings.setdefault(payload, trio.Event())
        self.write(self.protocol.ping(payload))
        await answered.wait()
        if self.closed is not None and payload in self._pings:
            raise ConnectionClosed(self.closed)

    async def _until_drained(self) -> None:
        while self._out:
            if self._socket_closed:
                raise ConnectionClosed(self.closed or CloseReason(ABNORMAL, "the connection is closed"))
            await self._drained.wait()
        await trio.lowlevel.checkpoint()

    async def drain(self) -> None:
        """The drain task: sends queued output whenever there is some (runs for the connection's life)."""
        while True:
            await self._has_out.wait()
            self._has_out = trio.Event()
            await self._flush()
            if not self._out and self.on_drained is not None and self.closed is None:
                self.on_drained()

    async def _flush(self) -> None:
        """Send everything queued, waiting for the socket as needed; cut the peer off after
        ``send_timeout`` seconds without progress."""
        async with self._send_lock:
            while self._out and not self._socket_closed:
                with trio.move_on_after(self.send_timeout) as waited:
                    await trio.lowlevel.wait_writable(self._sock)
                if waited.cancelled_caught:
                    log.info("%s: no output taken for %.0f s; cutting it off", self.remote, self.send_timeout)
                    self._set_closed(CloseReason(ABNORMAL, "the peer stopped reading"))
                    self.abort()
                    break
                try:
                    sent = self._sock.send(self._out)
                except BlockingIOError:
                    continue
                except OSError as exc:
                    self._broken(exc)
                    break
                del self._out[:sent]
            if not self._out or self._socket_closed:
                self._out.clear()
                self._drained.set()

    # -- receiving --------------------------------------------------------------------------------
    async def receive_messages(self) -> list[str | bytes]:
        """The complete messages of the next read (at least one), in order; ConnectionClosed once
        the connection is over (after the messages that came before its end)."""
        if self._messages:
            messages = list(self._messages)
            self._messages.clear()
            return messages
        while True:
            if self.closed is not None:
                raise ConnectionClosed(self.closed)
            messages = await self._read()
            if messages:
                return messages

    async def get_message(self) -> str | bytes:
        """The next message (one at a time; see :meth:`receive_messages`)."""
        while not self._messages:
            if self.closed is not None:
                raise ConnectionClosed(self.closed)
            self._messages.extend(await self._read())
        return self._messages.popleft()

    async def _read(self) -> list[str | bytes]:
        """One read from the socket, through the protocol; answers owed to the peer are written."""
        return self._handle(await self._receive_events())

    async def _receive_events(self) -> list[Event]:
        """One read from the socket, as the protocol's events (ConnectionClosed when it broke)."""
        if self._reading:
            raise trio.BusyResourceError("another task is reading this connection")
        if self._socket_closed:
            raise ConnectionClosed(self.closed or CloseReason(ABNORMAL, "the connection is closed"))
        self._reading = True
        try:
            try:
                await trio.lowlevel.wait_readable(self._sock)
                data = self._sock.recv(RECEIVE_SIZE)
            except BlockingIOError:
                return []
            except (OSError, trio.ClosedResourceError) as exc:
                self._broken(exc)
                raise ConnectionClosed(self.closed or CloseReason(ABNORMAL, str(exc))) from None
            return self.protocol.receive(data)
        finally:
            self._reading = False

    def _handle(self, events: list[Event]) -> list[str | bytes]:
        messages: list[str | bytes] = []
        for event in events:
            if isinstance(event, MessageReceived):
                messages.append(event.data)
            elif isinstance(event, PongReceived):
                answered = self._pings.pop(event.payload, None)
                if answered is not None:
                    answered.set()
            elif isinstance(event, Closed):
                self._set_closed(CloseReason(event.code, event.reason))
                self._close_received.set()
        self._write_owed()
        return messages

    def _write_owed(self) -> None:
        owed = self.protocol.outgoing
        if owed and not self._socket_closed:
            data = bytes(owed)
            owed.clear()
            try:
                self.write(data)
            except ConnectionClosed:
                pass

    # -- closing ----------------------------------------------------------------------------------
    async def aclose(self, code: int = 1000, reason: str = "") -> None:
        """Close: send a close frame, wait (at most CLOSE_WAIT) for the peer's, close the socket."""
        try:
            if self.closed is None and self.protocol.open and not self._socket_closed:
                self.write(self.protocol.close(code, reason))
                self._set_closed(CloseReason(code, reason))
                with trio.move_on_after(CLOSE_WAIT):
                    await self._flush()
                    while not self._close_received.is_set() and not self._socket_closed:
                        if self._reading:  # the reading task sees the peer's close frame
                            await self._close_received.wait()
                        else:
                            await self._read()
            else:
                with trio.move_on_after(CLOSE_WAIT):
                    await self._flush()  # a close reply still queued
        except ConnectionClosed:
            pass
        finally:
            self._set_closed(CloseReason(code, reason))
            self.abort()

    def _set_closed(self, reason: CloseReason) -> None:
        if self.closed is None:
            self.closed = reason
            for answered in self._pings.values():
                answered.set()

    def _broken(self, exc: BaseException) -> None:
        code = getattr(exc, "errno", None)
        if isinstance(code, int):
            what = errno.errorcode.get(code, str(exc))
        else:
            what = str(exc) or type(exc).__name__
        self._set_closed(CloseReason(ABNORMAL, f"connection broken: {what}"))
        self.abort()

    def close_now(self, code: int, reason: str) -> None:
        """Close without waiting: the close frame if the kernel takes it at once, then the socket."""
        if not self._socket_closed and self.protocol.open and not self._out:
            try:
                self.write(self.protocol.close(code, reason))
            except ConnectionClosed:
                pass
        self._set_closed(CloseReason(code, reason))
        self.abort()

    def abort(self) -> None:
        """Close the socket now (tasks waiting on it wake with ClosedResourceError)."""
        if self._socket_closed:
            return
        self._socket_closed = True
        self._set_closed(CloseReason(ABNORMAL, "connection aborted"))
        self._out.clear()
        self._drained.set()
        self._has_out.set()
        self._close_received.set()
        trio.lowlevel.notify_closing(self._sock)
        self._sock.close()


class WebSocketRequest:
    """An upgrade request the handler answers: :meth:`accept` or :meth:`reject`."""

    def __init__(
        self, connection: WebSocketConnection, target: str, headers: list[tuple[bytes, bytes]]
    ) -> None:
        self._connection = connection
        self.path = target
        self.headers = headers
        self.answered = False

    @property
    def remote(self) -> Peer:
        return self._connection.remote

    async def accept(self) -> WebSocketConnection:
        self.answered = True
        connection = self._connection
        connection.path, connection.headers = self.path, self.headers
        connection.protocol.accept()
        connection._write_owed()
        connection._messages.extend(connection._handle(connection.protocol.receive_early()))
        await trio.lowlevel.checkpoint()
        return connection

    async def reject(self, status: int, *, body: bytes = b"") -> None:
        self.answered = True
        connection = self._connection
        connection.protocol.reject(status, body)
        connection._write_owed()
        connection._set_closed(CloseReason(ABNORMAL, f"upgrade refused with {status}"))
        with trio.move_on_after(CLOSE_WAIT):
            await connection._flush()


Handler = Callable[[WebSocketRequest], Awaitable[None]]


@dataclass(frozen=True, slots=True)
class Listening:
    """What :func:`serve_websockets` reports once it listens."""

    host: str
    port: int


async def serve_websockets(
    handler: Handler,
    host: str,
    port: int,
    *,
    max_message_size: int,
    reuse_port: bool = False,
    handshake_timeout: float = HANDSHAKE_TIMEOUT,
    send_timeout: float = SEND_TIMEOUT,
    task_status: trio.TaskStatus[Listening] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``host:port`` and run ``handler`` for each upgrade request, each connection in its
    own task of this function's nursery; cancelling it ends every connection."""
    listener = _listening_socket(host, port, reuse_port)
    try:
        bound = listener.getsockname()
        async with trio.open_nursery() as nursery:
            task_status.started(Listening(str(bound[0]), int(bound[1])))
            while True:
                await trio.lowlevel.wait_readable(listener)
                for _ in range(BACKLOG):  # every connection waiting, then poll again
                    try:
                        sock, address = listener.accept()
                    except BlockingIOError:
                        break
                    except OSError as exc:  # EMFILE and friends: log, back off, go on serving
                        log.warning("accept failed: %s", exc)
                        await trio.sleep(0.1)
                        break
                    nursery.start_soon(
                        _connection, handler, sock, address, max_message_size, handshake_timeout, send_timeout
                    )
    finally:
        trio.lowlevel.notify_closing(listener)
        listener.close()


async def _connection(
    handler: Handler,
    sock: socket.socket,
    address: Any,
    max_message_size: int,
    handshake_timeout: float,
    send_timeout: float,
) -> None:
    sock.setblocking(False)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if hasattr(socket, "TCP_NOTSENT_LOWAT"):  # as trio's SocketStream: the kernel queues at most
        with contextlib.suppress(OSError):  # 16 KiB not yet sent; the rest waits here, coalescing
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, NOTSENT_LOWAT)
    host, port = (str(address[0]), int(address[1])) if isinstance(address, tuple) else (str(address), 0)
    connection = WebSocketConnection(
        sock, Peer(host, port), max_message_size=max_message_size, send_timeout=send_timeout
    )
    try:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(connection.drain)
            request = None
            with trio.move_on_after(handshake_timeout):
                request = await _request(connection)
            if request is not None:
                await handler(request)
                if not request.answered:
                    await request.reject(500, body=b"the server did not answer this request")
            nursery.cancel_scope.cancel()
    except ConnectionClosed:
        pass
    finally:
        connection.abort()


async def _request(connection: WebSocketConnection) -> WebSocketRequest | None:
    """Read until the upgrade request is complete (or the connection ends)."""
    while connection.protocol.closed is None:
        try:
            events = await connection._receive_events()
        except ConnectionClosed:
            return None
        connection._write_owed()
        for event in events:
            if isinstance(event, RequestReceived):
                return WebSocketRequest(connection, event.target, event.headers)
    with trio.move_on_after(CLOSE_WAIT):  # a 400 for a broken request
        await connection._flush()
    return None


def _listening_socket(host: str, port: int, reuse_port: bool) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if reuse_port:  # the kernel spreads connections over every process on this address and port
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
