"""A DIFF gateway whose fan-out is saturated still forwards orders promptly and keeps its sessions.

A real nats-server, a core and a ``qaex gateway`` process (tests/test_broker_gateway.py's
deployment); in this process, SESSIONS lean DIFF sessions on the gateway, subscribed to a quote
that a maker on the core changes continuously, peeking the moment each rtn_data arrives (no
decoding: the gateway, not the clients, is the bottleneck). Then a taker on the gateway sends
orders one at a time.

The measure is relative, so it holds on a slow or loaded machine: an order's round trip through the
saturated gateway (insert_order in, to the core over the broker, the order's patch back) must take
less than a quarter of the time between two rtn_data of a market-data session (the median of each). When every session's
writer sends as soon as its peek arrives, all of them share each scheduler pass, and an order, which
crosses several passes, takes a large part of an interval (measured before SendGate: 41 ms and 467 ms
against intervals of 703 ms and 937 ms). With the writers taking turns (qaex.exchange.pacing.SendGate)
a pass is short and the order crosses the gateway in a few (measured: 9-17 ms against 500-1,350 ms).
"""

from __future__ import annotations

import math
import statistics
import time

import trio
from conftest import open_user
from test_broker_gateway import CU, Deployment, deployment  # noqa: F401 - the fixture
from trio_websocket import ConnectionClosed, open_websocket_url

from qaex.client import DiffClient

SESSIONS = 400
PEEK = '{"aid":"peek_message"}'
SUBSCRIBE = '{"aid":"subscribe_quote","ins_list":"%s"}' % CU  # noqa: UP031
ORDERS = 20


class Sessions:
    """The market-data sessions: when each got each rtn_data, and how each ended."""

    def __init__(self) -> None:
        self.frames: list[list[float]] = []
        self.closed: list[str] = []
        self.connected = 0
        self.all_connected = trio.Event()

    async def one(self, url: str, stop: trio.Event) -> None:
        times: list[float] = []
        self.frames.append(times)
        try:
            async with open_websocket_url(url, max_message_size=1 << 24) as ws:
                await ws.send_message(PEEK)
                await ws.send_message(SUBSCRIBE)
                self.connected += 1
                if self.connected == SESSIONS:
                    self.all_connected.set()
                while not stop.is_set():
                    with trio.move_on_after(1.0):
                        await ws.get_message()
                        times.append(trio.current_time())
                        await ws.send_message(PEEK)
        except ConnectionClosed as exc:
            self.closed.append(str(exc.reason))

    def median_interval(self, since: float, until: float) -> float:
        """The median over sessions of the time between two rtn_data from `since` to `until` (the
        window over the number received in it; a session that got none: infinite)."""
        window = until - since
        return statistics.median(
            window / n if (n := sum(since <= t <= until for t in times)) else math.inf
            for times in self.frames
        )


async def churn_quote(maker: DiffClient, stop: trio.Event) -> None:
    """Insert and cancel one resting buy after another: every step changes the quote's book."""
    for i in range(100_000):
        if stop.is_set():
            return
        await maker.insert_order(f"c{i}", CU, "BUY", "OPEN", 1, 80000.0 + 10 * (i % 50))
        await trio.sleep(0.01)
        await maker.cancel_order(f"c{i}")
        await trio.sleep(0.01)


async def test_orders_cross_a_saturated_gateway_within_a_quarter_of_a_market_data_interval(
    deployment: Deployment,  # noqa: F811 - the fixture imported above
) -> None:
    maker_user, taker_user = open_user(deployment.core), open_user(deployment.core)
    sessions, stop = Sessions(), trio.Event()
    latencies: list[float] = []
    async with (
        DiffClient.connect(deployment.core.diff_url) as maker,
        DiffClient.connect(deployment.gateway.diff_url) as taker,
        trio.open_nursery() as nursery,
    ):
        assert await maker.login(maker_user.user_id, maker_user.password)
        assert await taker.login(taker_user.user_id, taker_user.password)
        for _ in range(SESSIONS):
            nursery.start_soon(sessions.one, deployment.gateway.diff_url, stop)
        with trio.fail_after(120):
            await sessions.all_connected.wait()
        nursery.start_soon(churn_quote, maker, stop)
        await trio.sleep(3.0)  # the fan-out saturates
        since = trio.current_time()
        with trio.fail_after(120):
            for k in range(ORDERS):
                sent = time.monotonic()
                await taker.insert_order(f"t{k}", CU, "BUY", "OPEN", 1, 80000.0)
                await taker.wait_for(lambda c, k=k: c.order(f"t{k}").get("status") == "ALIVE", within=60)
                latencies.append(time.monotonic() - sent)
        interval = sessions.median_interval(since, trio.current_time())
        stop.set()
    order = statistics.median(latencies)
    print(
        f"order round trip median {order * 1e3:.1f} ms; market-data interval median {interval * 1e3:.1f} ms"
    )
    assert not sessions.closed, sessions.closed[:5]
    assert order < interval / 4, (order, interval)
