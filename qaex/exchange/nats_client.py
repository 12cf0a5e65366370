"""A thin trio NATS client over the sans-IO protocol object (qaex.protocol.nats).

nats-py is asyncio-only, so qaex carries this client the way it carries wsproto-style pumps: the
protocol object parses and encodes, this module moves bytes.

- ``run`` (started with ``nursery.start``) connects, and once connected reports started; it then
  keeps the connection: on a loss it fails the pending requests (:class:`ConnectionLost`), waits
  ``reconnect_wait`` and connects again (also to the next URL of ``urls``), re-sending every live
  subscription with its sid. ``connected`` is a trio.Event-like flag; ``generation`` counts
  connections, and ``on_connect`` callbacks run after each (re)connection's resubscribe, so a user
  of the client (the gateway) can resync what it may have missed.
- ``publish`` never waits: it appends to one outgoing buffer that the writer task sends in one
  write per batch (everything published since its last write). The buffer is bounded
  (``max_pending_bytes``): past the bound, or while disconnected, a publish is dropped and counted
  (``dropped``) — the core must never wait on the broker; subscribers see the gap in the sequence
  numbers and resynchronize.
- ``subscribe`` returns a :class:`Subscription`: a bounded queue of messages (``max_pending``) read
  with ``async for`` or ``receive``; a message that finds it full is dropped and counted (again a gap).
- ``request`` publishes with a reply subject under the client's inbox (one wildcard subscription
  for all requests) and waits for the first answer, ``within`` seconds at most
  (:class:`RequestTimeout`; :class:`NoResponders` when the server says nobody listens);
  ``request_many`` takes the answers that come in several messages (a snapshot in parts).
- keepalive: a PING every ``ping_interval``; ``max_outstanding_pings`` unanswered ones mean a dead
  connection (closed and reconnected). The server's PINGs get a PONG.
"""

from __future__ import annotations

import heapq
import itertools
import logging
import math
import secrets
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import trio

from qaex.protocol import nats
from qaex.protocol.nats import Err, Info, Msg, NatsParser, NatsProtocolError, Ping, Pong

log = logging.getLogger("qaex.nats")

DEFAULT_MAX_PENDING_BYTES = 64 << 20
DEFAULT_MAX_PENDING_MSGS = 65_536
MAX_ANSWERS = 4096
"""Answers of one request_many buffered before its task takes them (a snapshot's parts come in a burst)."""


class NatsError(Exception):
    pass


class ConnectionLost(NatsError):
    """The connection went away before the answer came (the outcome of a command is unknown)."""


class NotConnected(NatsError):
    pass


class RequestTimeout(NatsError):
    pass


class NoResponders(NatsError):
    pass


def parse_url(url: str) -> tuple[str, int]:
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    if parts.scheme not in ("nats", "tcp"):
        raise ValueError(f"not a nats:// URL: {url!r}")
    return parts.hostname or "127.0.0.1", parts.port or 4222


def redacted(url: str) -> str:
    """The URL without its credentials, for logs."""
    host, port = parse_url(url)
    return f"nats://{host}:{port}"


def url_credentials(url: str) -> dict[str, str]:
    """CONNECT's credentials from ``nats://user:password@host`` or ``nats://token@host``."""
    parts = urlsplit(url if "://" in url else f"nats://{url}")
    if parts.username is None:
        return {}
    user, password = unquote(parts.username), unquote(parts.password or "")
    return {"user": user, "pass": password} if parts.password is not None else {"auth_token": user}


_CONNECTION_FAILURES = (
    OSError,
    NatsError,
    NatsProtocolError,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
)


def _split_failure(exc: BaseException) -> tuple[BaseException | None, BaseException | None]:
    """(the part of `exc` that is a lost or refused connection, the rest to re-raise)."""
    if isinstance(exc, BaseExceptionGroup):
        return exc.split(_CONNECTION_FAILURES)
    if isinstance(exc, _CONNECTION_FAILURES):
        return exc, None
    return None, exc


class Subscription:
    """Messages of one subscription, bounded: what does not fit is dropped and counted."""

    def __init__(
        self,
        client: NatsClient,
        sid: str,
        subject: str,
        queue: str | None,
        max_pending: int,
        callback: Callable[[Msg], None] | None = None,
    ) -> None:
        self.client = client
        self.sid = sid
        self.subject = subject
        self.queue = queue
        self.max_pending = max_pending
        self.dropped = 0
        self.closed = False
        self._messages: deque[Msg] = deque()
        self._waiter: trio.Event | None = None
        self.callback = callback  # set: messages are handed to it in the reader task, not queued

    def _deliver(self, message: Msg) -> None:
        if self.callback is not None:
            self.callback(message)
            return
        if len(self._messages) >= self.max_pending:
            self.dropped += 1
            return
        self._messages.append(message)
        if self._waiter is not None:
            self._waiter.set()

    def receive_nowait(self) -> Msg | None:
        return self._messages.popleft() if self._messages else None

    async def receive(self) -> Msg:
        while not self._messages:
            if self.closed:
                raise trio.EndOfChannel
            self._waiter = trio.Event()
            await self._waiter.wait()
            self._waiter = None
        await trio.lowlevel.checkpoint_if_cancelled()
        return self._messages.popleft()

    def __aiter__(self) -> AsyncIterator[Msg]:
        return self._iterate()

    async def _iterate(self) -> AsyncIterator[Msg]:
        while True:
            try:
                yield await self.receive()
            except trio.EndOfChannel:
                return

    def unsubscribe(self) -> None:
        self.client.unsubscribe(self)


class NatsClient:
    def __init__(
        self,
        urls: str | Sequence[str],
        *,
        name: str = "qaex",
        ping_interval: float = 5.0,
        max_outstanding_pings: int = 2,
        reconnect_wait: float = 0.5,
        connect_timeout: float = 2.0,
        max_pending_bytes: int = DEFAULT_MAX_PENDING_BYTES,
        max_pending_msgs: int = DEFAULT_MAX_PENDING_MSGS,
        max_control_line: int = nats.DEFAULT_MAX_CONTROL_LINE,
    ) -> None:
        self.urls = [urls] if isinstance(urls, str) else list(urls)
        for url in self.urls:
            parse_url(url)
        self.name = name
        self.ping_interval = ping_interval
        self.max_outstanding_pings = max_outstanding_pings
        self.reconnect_wait = reconnect_wait
        self.connect_timeout = connect_timeout
        self.max_pending_bytes = max_pending_bytes
        self.max_pending_msgs = max_pending_msgs
        self.max_control_line = max_control_line
        self.server_info: dict[str, Any] = {}
        self.max_payload = nats.DEFAULT_MAX_PAYLOAD
        self.generation = 0  # connections made so far
        self.is_connected = False
        self.dropped = 0  # publishes dropped (buffer full or no connection)
        self.published = 0
        self.received = 0
        self.on_connect: list[Callable[[], None]] = []
        self.on_disconnect: list[Callable[[], None]] = []
        self._sids = itertools.count(1)
        self._subs: dict[str, Subscription] = {}
        self._out = bytearray()
        self._out_ready = trio.Event()
        self._connected_event = trio.Event()
        self._disconnected_event = trio.Event()
        self._pongs: deque[trio.Event] = deque()  # flush() waiters, in PING order
        self._pings_out = 0
        self._inbox = f"_INBOX.{secrets.token_hex(8)}"
        self._inbox_sub: Subscription | None = None
        self._requests: dict[str, trio.MemorySendChannel[Msg | BaseException]] = {}
        self._callbacks: dict[str, Callable[[Msg | BaseException], None]] = {}
        self._deadlines: list[tuple[float, str]] = []  # heap of (deadline, token) of _callbacks
        self._request_ids = itertools.count(1)
        self._stream: trio.SocketStream | None = None

    # -- lifetime ---------------------------------------------------------------------------------
    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Connect and keep connected until cancelled; started once the first connection is up."""
        started = False
        for attempt in itertools.count():
            url = self.urls[attempt % len(self.urls)]
            try:
                await self._connection(url, task_status if not started else None)
            except BaseException as exc:
                failure, rest = _split_failure(exc)
                if rest is not None:
                    raise
                while isinstance(failure, BaseExceptionGroup):
                    failure = failure.exceptions[0]
                log.warning("NATS connection to %s lost or refused: %r", redacted(url), failure)
            finally:
                started = started or self.generation > 0
                self._lost()
            await trio.sleep(self.reconnect_wait)

    def _lost(self) -> None:
        was = self.is_connected
        self.is_connected = False
        if self._connected_event.is_set():
            # A new event only once per lost connection: a failed attempt must not replace the one
            # wait_connected() callers are waiting on (they would never wake).
            self._connected_event = trio.Event()
        self._disconnected_event.set()
        self._stream = None
        self._out.clear()
        self._pings_out = 0
        for waiter in self._pongs:
            waiter.set()  # flush() waiters see is_connected False and raise
        self._pongs.clear()
        for reply in list(self._requests.values()):
            try:
                reply.send_nowait(ConnectionLost("connection to the broker lost"))
            except (trio.WouldBlock, trio.BrokenResourceError):
                pass
        callbacks, self._callbacks = self._callbacks, {}
        self._deadlines.clear()
        for answer in callbacks.values():
            answer(ConnectionLost("connection to the broker lost"))
        if was:
            for callback in self.on_disconnect:
                callback()

    async def _connection(self, url: str, task_status: trio.TaskStatus[None] | None) -> None:
        host, port = parse_url(url)
        parser = NatsParser("client", max_control_line=self.max_control_line)
        with trio.fail_after(self.connect_timeout):
            stream = await trio.open_tcp_stream(host, port)
            try:
                info = await self._read_info(stream, parser)
            except BaseException:
                with trio.CancelScope(shield=True):
                    await stream.aclose()
                raise
        async with stream:
            self.server_info = info
            self.max_payload = parser.max_payload = int(info.get("max_payload", nats.DEFAULT_MAX_PAYLOAD))
            hello = bytearray(
                nats.connect(
                    {
                        "verbose": False,
                        "pedantic": False,
                        "lang": "python-trio",
                        "version": "qaex",
                        "name": self.name,
                        "protocol": 1,
                        "headers": True,
                        "no_responders": True,
                        **url_credentials(url),
                    }
                )
            )
            if self._inbox_sub is None:
                self._inbox_sub = Subscription(self, "0", f"{self._inbox}.*", None, 1)
            hello += nats.sub(self._inbox_sub.subject, self._inbox_sub.sid)
            for subscription in self._subs.values():
                hello += nats.sub(subscription.subject, subscription.sid, subscription.queue)
            hello += nats.PING
            await stream.send_all(bytes(hello))
            # The server answers the PING after it applied CONNECT and the SUBs (or -ERR first).
            with trio.fail_after(self.connect_timeout):
                while True:
                    event = await self._read_event(stream, parser)
                    if isinstance(event, Pong):
                        break
                    if isinstance(event, Err):
                        raise NatsError(f"broker refused the connection: {event.message}")
                    if isinstance(event, Ping):
                        await stream.send_all(nats.PONG)
            self._stream = stream
            self.is_connected = True
            self.generation += 1
            self._out.clear()
            self._connected_event.set()
            self._disconnected_event = trio.Event()
            log.info(
                "NATS connected to %s:%d (%s, connection %d)",
                host,
                port,
                info.get("server_id", "?"),
                self.generation,
            )
            for callback in self.on_connect:
                callback()
            if task_status is not None:
                task_status.started()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._writer, stream)
                nursery.start_soon(self._pinger)
                nursery.start_soon(self._expire_callbacks)
                await self._reader(stream, parser)
                nursery.cancel_scope.cancel()

    async def _read_info(self, stream: trio.SocketStream, parser: NatsParser) -> dict[str, Any]:
        event = await self._read_event(stream, parser)
        if not isinstance(event, Info):
            raise NatsError(f"expected INFO, got {event!r}")
        return event.info

    @staticmethod
    async def _read_event(stream: trio.SocketStream, parser: NatsParser) -> nats.Event:
        while (event := parser.next_event()) is None:
            data = await stream.receive_some(65536)
            if not data:
                raise ConnectionLost("the broker closed the connection")
            parser.receive_data(data)
        return event

    async def _reader(self, stream: trio.SocketStream, parser: NatsParser) -> None:
        while True:
            data = await stream.receive_some(1 << 18)
            if not data:
                raise ConnectionLost("the broker closed the connection")
            parser.receive_data(data)
            while (event := parser.next_event()) is not None:
                if isinstance(event, Msg):
                    self.received += 1
                    self._dispatch(event)
                elif isinstance(event, Ping):
                    self._write(nats.PONG)
                elif isinstance(event, Pong):
                    self._pings_out = 0
                    if self._pongs:
                        self._pongs.popleft().set()
                elif isinstance(event, Err):
                    log.warning("NATS -ERR: %s", event.message)
                    if "permissions violation" not in event.message.lower():
                        raise NatsError(event.message)  # the server closes the connection after these
                elif isinstance(event, Info):
                    self.server_info.update(event.info)  # cluster updates

    def _dispatch(self, message: Msg) -> None:
        if message.sid == "0":
            token = message.subject.rsplit(".", 1)[-1]
            callback = self._callbacks.pop(token, None)
            if callback is not None:
                callback(
                    NoResponders(f"nobody answers on {message.subject}") if message.status == 503 else message
                )
                return
            reply = self._requests.get(token)  # request_many takes it out when it has its answers
            if reply is not None:
                answer: Msg | BaseException = message
                if message.status == 503:
                    answer = NoResponders(f"nobody answers on {message.subject}")
                try:
                    reply.send_nowait(answer)
                except (trio.WouldBlock, trio.BrokenResourceError):
                    pass
            return
        subscription = self._subs.get(message.sid)
        if subscription is not None:
            subscription._deliver(message)

    async def _writer(self, stream: trio.SocketStream) -> None:
        while True:
            await self._out_ready.wait()
            self._out_ready = trio.Event()
            if self._out:
                data = bytes(self._out)  # everything published since the last write: one write
                self._out.clear()
                await stream.send_all(data)

    async def _pinger(self) -> None:
        while True:
            await trio.sleep(self.ping_interval)
            if self._pings_out >= self.max_outstanding_pings:
                raise ConnectionLost(f"{self._pings_out} PINGs unanswered: a stale connection")
            self._pings_out += 1
            self._write(nats.PING)

    async def _expire_callbacks(self) -> None:
        """Requests made with request_callback that got no answer in time: RequestTimeout."""
        while True:
            await trio.sleep(0.1)
            now = trio.current_time()
            deadlines = self._deadlines
            while deadlines and deadlines[0][0] <= now:
                _, token = heapq.heappop(deadlines)
                callback = self._callbacks.pop(token, None)
                if callback is not None:
                    callback(RequestTimeout("no answer in time"))

    def _write(self, data: bytes) -> None:
        self._out += data
        self._out_ready.set()

    # -- API --------------------------------------------------------------------------------------
    async def wait_connected(self) -> None:
        await self._connected_event.wait()

    async def wait_disconnected(self) -> None:
        """Return once the current connection is lost (at once while not connected)."""
        if self.is_connected:
            await self._disconnected_event.wait()
        else:
            await trio.lowlevel.checkpoint()

    def publish(
        self,
        subject: str,
        payload: bytes,
        reply: str | None = None,
        headers: Sequence[tuple[str, str]] | None = None,
    ) -> bool:
        """Queue one message for the next write; False (and counted in `dropped`) when it cannot go."""
        if len(payload) > self.max_payload:
            raise ValueError(
                f"payload of {len(payload)} bytes exceeds the broker's max_payload {self.max_payload}"
            )
        if not self.is_connected or len(self._out) + len(payload) > self.max_pending_bytes:
            self.dropped += 1
            return False
        self._write(nats.pub(subject, payload, reply, None if headers is None else tuple(headers)))
        self.published += 1
        return True

    def subscribe(
        self,
        subject: str,
        queue: str | None = None,
        *,
        max_pending: int | None = None,
        callback: Callable[[Msg], None] | None = None,
    ) -> Subscription:
        """Subscribe; messages queue on the Subscription, or with `callback` go to it at once (it must
        not block: it runs in the reader task)."""
        sid = str(next(self._sids))
        subscription = Subscription(self, sid, subject, queue, max_pending or self.max_pending_msgs, callback)
        self._subs[sid] = subscription
        if self.is_connected:
            self._write(nats.sub(subject, sid, queue))
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if self._subs.pop(subscription.sid, None) is not None and self.is_connected:
            self._write(nats.unsub(subscription.sid))
        subscription.closed = True
        if subscription._waiter is not None:
            subscription._waiter.set()

    async def flush(self, within: float = 5.0) -> None:
        """Wait until the broker has processed everything written so far (a PING/PONG round trip)."""
        if not self.is_connected:
            raise NotConnected("not connected to the broker")
        waiter = trio.Event()
        self._pongs.append(waiter)
        self._write(nats.PING)
        with trio.fail_after(within):
            await waiter.wait()
        if not self.is_connected:
            raise ConnectionLost("connection to the broker lost")

    def request_callback(
        self,
        subject: str,
        payload: bytes,
        callback: Callable[[Msg | BaseException], None],
        within: float = 5.0,
    ) -> None:
        """Send a request without waiting: `callback` gets the answer, or the error (RequestTimeout,
        NoResponders, ConnectionLost); NotConnected is raised at once when there is no connection."""
        if not self.is_connected:
            raise NotConnected("not connected to the broker")
        token = f"c{next(self._request_ids)}"
        if not self.publish(subject, payload, f"{self._inbox}.{token}"):
            raise NotConnected("the broker connection cannot take the request now")
        self._callbacks[token] = callback
        heapq.heappush(self._deadlines, (trio.current_time() + within, token))

    async def request(
        self,
        subject: str,
        payload: bytes,
        within: float = 5.0,
        headers: Sequence[tuple[str, str]] | None = None,
    ) -> Msg:
        """The first answer to a request on `subject`, waited for `within` seconds at most."""
        [answer] = await self.request_many(subject, payload, lambda _: True, within, headers)
        return answer

    async def request_many(
        self,
        subject: str,
        payload: bytes,
        last: Callable[[Msg], bool],
        within: float = 5.0,
        headers: Sequence[tuple[str, str]] | None = None,
    ) -> list[Msg]:
        """The answers to one request, in order, up to the first for which `last` is true (an answer
        in several messages), all within `within` seconds (:class:`RequestTimeout`); at most
        MAX_ANSWERS are kept waiting (beyond, answers are dropped and the request times out)."""
        if not self.is_connected:
            raise NotConnected("not connected to the broker")
        token = str(next(self._request_ids))
        send, receive = trio.open_memory_channel[Msg | BaseException](MAX_ANSWERS)
        self._requests[token] = send
        answers: list[Msg] = []
        try:
            if not self.publish(subject, payload, f"{self._inbox}.{token}", headers):
                raise NotConnected("the broker connection cannot take the request now")
            with trio.move_on_after(within if math.isfinite(within) else math.inf):
                while True:
                    answer = await receive.receive()
                    if isinstance(answer, BaseException):
                        raise answer
                    answers.append(answer)
                    if last(answer):
                        return answers
            raise RequestTimeout(f"no answer on {subject} within {within} s")
        finally:
            self._requests.pop(token, None)
