"""Server-Sent Events for ``GET /api/events``: the per-event notification stream over plain HTTP.

The route (qaex.api.http) authenticates and subscribes; :func:`sse_body` is the response body: a
``ready`` event, a ``gap`` event if the ``Last-Event-ID`` asked for is no longer held, then one SSE
event per notification with ``id:`` (``<epoch>-<seq>``, qaex.protocol.notifications) and a comment
every :data:`KEEPALIVE_SECONDS` when nothing happens (so that proxies keep the stream and a dead
client is noticed). A subscriber the hub cuts off gets a last ``{"type": "closed", "reason": ...}``
event when it can still be sent.

A client that stops reading leaves hypercorn stuck in a send, outside the body's generator, where
nothing in the view can reach it. :class:`CuttableStreams`, an ASGI middleware, runs each
``/api/events`` request in a cancel scope the subscriber gets (``scope["qaex.stream"]``), so that a
cut-off consumer's request ends and its connection is closed, and it unsubscribes when the request
ends whatever happened.

On shutdown hypercorn gives open requests its graceful timeout (3 s by default) and then cancels
them; the hub cuts off every subscriber when the exchange stops.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import trio

from qaex.exchange.notifications import READ_LIMIT, Subscriber, SubscriberClosed
from qaex.protocol import notifications as events

EVENTS_PATH = "/api/events"
KEEPALIVE_SECONDS = 15.0

Scope = MutableMapping[str, Any]


class StreamHandle:
    """What the middleware shares with the route: the request's cancel scope and its subscriber."""

    def __init__(self) -> None:
        self.scope = trio.CancelScope()
        self.subscriber: Subscriber | None = None

    def attach(self, subscriber: Subscriber) -> None:
        self.subscriber = subscriber
        subscriber.scope = self.scope


class CuttableStreams:
    """ASGI middleware: ``/api/events`` requests run in a cancel scope their subscriber can cancel."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope.get("type") != "http" or scope.get("path") != EVENTS_PATH:
            await self.app(scope, receive, send)
            return
        handle = StreamHandle()
        scope["qaex.stream"] = handle
        try:
            with handle.scope:
                await self.app(scope, receive, send)
        finally:
            if handle.subscriber is not None:
                handle.subscriber.close()


async def sse_body(
    subscriber: Subscriber,
    gap: events.Gap | None,
    asked: str | None,
    *,
    max_events: int = 0,
    seconds: float = 0.0,
) -> AsyncIterator[bytes]:
    """The stream; `max_events` and `seconds` (0: none) end it early, for scripts and the fuzzer."""
    deadline = trio.current_time() + seconds if seconds > 0 else float("inf")
    sent = 0
    try:
        yield b"retry: 2000\n" + events.sse_event(
            None, events.encode(events.ready_event(subscriber.user_id, time.time_ns()))
        )
        if gap is not None:
            yield events.sse_event(None, events.encode(events.gap_event(gap, asked)))
        while not (max_events and sent >= max_events):
            left = deadline - trio.current_time()
            if left <= 0:
                return
            limit = max_events - sent if max_events else READ_LIMIT
            batch = await subscriber.wait_or_timeout(min(KEEPALIVE_SECONDS, left), min(limit, READ_LIMIT))
            if not batch:
                yield b": keep-alive\n\n"
                continue
            sent += len(batch)
            yield b"".join(events.sse_event(event_id, data) for event_id, data in batch)
    except SubscriberClosed as exc:
        yield events.sse_event(None, events.encode({"type": "closed", "reason": str(exc)}))
    finally:
        subscriber.close()
