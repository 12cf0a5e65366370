"""Charts (set_chart) and ``/ws`` notifications through a DIFF gateway, in one process: a core (Exchange,
MarketData, BrokerCore, its own DIFF listener) and a gateway (RemoteExchange, its DIFF listener) talking
over a real nats-server started for each test; real WebSocket clients on both listeners.

A chart through the gateway must end exactly as the same chart on the core (the trees are compared),
after trades too; a series the gateway no longer holds lapses on the core; a lost ``k.*`` patch makes
the gateway fetch the series again.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import trio
from conftest import NatsServer
from trio_websocket import open_websocket_url

from qaex.api.diff_server import DIFF_PATH, DiffServer
from qaex.api.notify_ws import NOTIFY_PATH
from qaex.client import DiffClient
from qaex.core.engine import Engine
from qaex.core.orders import InsertOrder
from qaex.exchange.broker_core import BrokerCore
from qaex.exchange.exchange import Exchange
from qaex.exchange.market import MarketData
from qaex.exchange.nats_client import NatsClient
from qaex.exchange.remote import RemoteExchange
from qaex.exchange.remote_market import RemoteMarket
from qaex.protocol import broker as wire

CU, AU = "SHFE.cu2601", "SHFE.au2602"
S = 1_000_000_000
EXCHANGE_ID = "ch"
PASSWORD = "a-long-password-1"


async def cancellable(
    run: Callable[..., Awaitable[None]], *, task_status: trio.TaskStatus[trio.CancelScope]
) -> None:
    """Run a service under a cancel scope of its own, handed out once the service started."""
    with trio.CancelScope() as scope:
        async with trio.open_nursery() as nursery:
            await nursery.start(run)
            task_status.started(scope)


@dataclass
class Scaleout:
    exchange: Exchange
    core: BrokerCore
    remote: RemoteExchange
    core_url: str
    gateway_url: str
    nursery: trio.Nursery
    core_scope: trio.CancelScope
    broker_url: str
    orders: int = 0

    async def restart_core(self) -> None:
        """A new BrokerCore on the same exchange (as after a restart that recovered the journal):
        a new epoch for the gateway."""
        self.core_scope.cancel()
        self.core = BrokerCore(self.exchange, NatsClient(self.broker_url, name="core2"), EXCHANGE_ID)
        self.core_scope = await self.nursery.start(cancellable, self.core.run)

    @property
    def charts(self) -> Any:
        assert isinstance(self.remote.market, RemoteMarket)
        return self.remote.market.charts

    async def trade(self, symbol: str, price: float, volume: int = 1) -> None:
        exchange_id, instrument_id = symbol.split(".")
        for user, direction in (("alice", "SELL"), ("bob", "BUY")):
            self.orders += 1
            await self.exchange.insert_order(
                InsertOrder(
                    user_id=user, order_id=f"o{self.orders}", exchange_id=exchange_id,
                    instrument_id=instrument_id, direction=direction, offset="OPEN",  # type: ignore[arg-type]
                    volume=volume, limit_price=price,
                )
            )  # fmt: skip


@asynccontextmanager
async def scaleout(
    broker: NatsServer, *, hold_lapse: float = wire.HOLD_LAPSE, max_held: int = wire.MAX_HELD
) -> AsyncIterator[Scaleout]:
    engine = Engine()
    exchange = Exchange(engine, market=MarketData(engine))
    async with trio.open_nursery() as nursery:
        await nursery.start(exchange.run)
        for user in ("alice", "bob"):
            await exchange.open_account(user, PASSWORD, init_cash=1e9)
        core = BrokerCore(
            exchange,
            NatsClient(broker.url, name="core"),
            EXCHANGE_ID,
            hold_lapse=hold_lapse,
            max_held=max_held,
        )
        core_scope = await nursery.start(cancellable, core.run)
        core_listener = await nursery.start(DiffServer(exchange).serve, "127.0.0.1", 0)
        remote = RemoteExchange(NatsClient(broker.url, name="gateway"), EXCHANGE_ID)
        assert isinstance(remote.market, RemoteMarket)
        remote.market.charts.hold_renew = min(wire.HOLD_RENEW, hold_lapse / 4)
        await nursery.start(remote.run)
        gateway_listener = await nursery.start(DiffServer(remote).serve, "127.0.0.1", 0)
        yield Scaleout(
            exchange,
            core,
            remote,
            f"ws://127.0.0.1:{core_listener.port}{DIFF_PATH}",
            f"ws://127.0.0.1:{gateway_listener.port}{DIFF_PATH}",
            nursery,
            core_scope,
            broker.url,
        )
        nursery.cancel_scope.cancel()


async def until(condition: Callable[[], bool], within: float) -> None:
    deadline = trio.current_time() + within
    while not condition():
        assert trio.current_time() < deadline, f"not within {within} s"
        await trio.sleep(0.05)


def market_view(client: DiffClient) -> dict[str, Any]:
    return {key: client.tree.get(key) for key in ("charts", "klines", "ticks")}


async def converge(a: DiffClient, b: DiffClient, within: float = 10.0) -> None:
    """Wait until both hold the same charts, K-lines and ticks; show the difference if they never do."""
    deadline = trio.current_time() + within
    while not (a.tree.get("charts") and market_view(a) == market_view(b)):
        if trio.current_time() > deadline:
            assert market_view(a) == market_view(b)
        await trio.sleep(0.05)


CHARTS = [
    {"chart_id": "minute", "ins_list": CU, "duration": 60 * S, "view_width": 200},
    {"chart_id": "five_s", "ins_list": CU, "duration": 5 * S, "view_width": 50},  # held for the gateway
    {"chart_id": "ticks", "ins_list": CU, "duration": 0, "view_width": 30},
    {"chart_id": "pair", "ins_list": f"{CU},{AU}", "duration": 60 * S, "view_width": 20},
    {"chart_id": "left", "ins_list": CU, "duration": 0, "view_width": 3, "left_kline_id": 1},
]


async def test_charts_through_a_gateway_equal_the_cores_and_follow_trades(nats_server: NatsServer) -> None:
    async with scaleout(nats_server) as venue:
        for price in (86000.0, 86010.0, 86020.0):
            await venue.trade(CU, price)
        await venue.trade(AU, 600.0)
        async with DiffClient.connect(venue.gateway_url) as gw, DiffClient.connect(venue.core_url) as core:
            for chart in CHARTS:
                for client in (gw, core):
                    await client.send({"aid": "set_chart", **chart})
            await gw.wait_for(lambda c: len(c.tree.get("charts", {})) == len(CHARTS))
            assert all(chart["ready"] for chart in gw.tree["charts"].values())
            await converge(gw, core)
            assert gw.tree["ticks"][CU]["last_id"] == 2 and len(gw.tree["ticks"][CU]["data"]) == 3
            assert gw.tree["charts"]["left"]["left_id"] == 1
            # trades move the bars, the ticks and the windows on both
            for price in (86030.0, 86040.0):
                await venue.trade(CU, price)
            await venue.trade(AU, 601.0)
            await gw.wait_for(lambda c: c.tree["ticks"][CU]["last_id"] == 4)
            await converge(gw, core)
            minute = gw.tree["klines"][CU][str(60 * S)]
            assert minute["data"][str(minute["last_id"])]["close"] == 86040.0
            assert gw.tree["charts"]["ticks"]["right_id"] == 4
            assert gw.tree["charts"]["left"]["right_id"] == 3  # grew to its width, then stays
            # one mirror per series on the gateway, shared by its charts; the core holds each series
            assert set(venue.charts.mirrors) == {(CU, 60 * S), (CU, 5 * S), (CU, 0), (AU, 60 * S)}
            assert (CU, 5 * S) in venue.exchange.market.klines  # type: ignore[union-attr]
            # a deleted chart, refusals with the core's notifies
            for client in (gw, core):
                await client.send({"aid": "set_chart", "chart_id": "left", "ins_list": "", "duration": 0})
                await client.send({"aid": "set_chart", "chart_id": "bad", "ins_list": "SHFE.nope",
                                   "duration": 60 * S, "view_width": 5})  # fmt: skip
                await client.send({"aid": "set_chart", "chart_id": "odd", "ins_list": CU,
                                   "duration": 36 * 3600 * S, "view_width": 5})  # fmt: skip
            for client in (gw, core):
                await client.wait_for(
                    lambda c: len([n for n in c.notifies if n.get("level") == "ERROR"]) == 2
                )
            # the same texts (the unknown symbol comes later on the gateway: the core answers it)
            assert sorted(n["content"] for n in gw.notifies) == sorted(n["content"] for n in core.notifies)
            await gw.wait_for(lambda c: "left" not in c.tree["charts"])
            await converge(gw, core)


async def test_a_200_bar_history_chart_equals_the_cores(nats_server: NatsServer) -> None:
    """Bars made by the bar timer (flat bars every 5 s), fetched whole: the window is the core's."""
    async with scaleout(nats_server) as venue:
        await venue.trade(CU, 86000.0)
        market = venue.exchange.market
        assert market is not None
        await until(lambda: market.ticks[CU].last_id >= 0, 5)  # the trade's batch reached the market
        series_key = (CU, 5 * S)
        market.hold_series(series_key)  # a series the core keeps meanwhile
        series = market.klines[series_key]
        for _ in range(1, 240):  # 240 bars, without waiting 20 minutes
            series.on_time(series.last_datetime() + 5 * S)  # type: ignore[operator]
        await venue.trade(CU, 86050.0)
        assert series.last_id >= 200
        chart = {"chart_id": "k", "ins_list": CU, "duration": 5 * S, "view_width": 200}
        async with DiffClient.connect(venue.gateway_url) as gw, DiffClient.connect(venue.core_url) as core:
            for client in (gw, core):
                await client.send({"aid": "set_chart", **chart})
            await gw.wait_for(lambda c: "k" in c.tree.get("charts", {}))
            await converge(gw, core)
            body = gw.tree["klines"][CU][str(5 * S)]
            assert len(body["data"]) == 200 and body["last_id"] == series.last_id


async def test_a_lost_series_patch_makes_the_gateway_fetch_the_series_again(nats_server: NatsServer) -> None:
    async with scaleout(nats_server) as venue:
        await venue.trade(CU, 86000.0)
        async with DiffClient.connect(venue.gateway_url) as gw, DiffClient.connect(venue.core_url) as core:
            for client in (gw, core):
                await client.send({"aid": "set_chart", "chart_id": "t", "ins_list": CU, "duration": 0,
                                   "view_width": 10})  # fmt: skip
            await converge(gw, core)
            fetched = venue.charts.fetched
            venue.core._series_seq.next(wire.series_name((CU, 0)))  # one patch "lost" on the way
            await venue.trade(CU, 86010.0)
            await venue.trade(CU, 86020.0)
            await gw.wait_for(lambda c: c.tree["ticks"][CU]["last_id"] == 2)
            assert venue.charts.fetched == fetched + 1
            await converge(gw, core)


async def test_a_series_no_gateway_holds_lapses_on_the_core(nats_server: NatsServer) -> None:
    async with scaleout(nats_server, hold_lapse=2.0, max_held=2) as venue:
        market = venue.exchange.market
        assert market is not None
        await venue.trade(CU, 86000.0)
        key = (CU, 7 * S)
        async with DiffClient.connect(venue.gateway_url) as gw:
            await gw.send(
                {"aid": "set_chart", "chart_id": "c", "ins_list": CU, "duration": 7 * S, "view_width": 5}
            )
            await gw.wait_for(lambda c: "c" in c.tree.get("charts", {}))
            assert key in venue.core.holds and key in market.klines
            await trio.sleep(3.0)  # past the lapse: renewed by the gateway meanwhile
            assert key in venue.core.holds and key in market.klines
            # the core's bound: a third series is refused, with a notify
            await gw.send(
                {"aid": "set_chart", "chart_id": "d", "ins_list": CU, "duration": 9 * S, "view_width": 5}
            )
            await gw.send(
                {"aid": "set_chart", "chart_id": "e", "ins_list": CU, "duration": 11 * S, "view_width": 5}
            )
            note = await gw.wait_for(
                lambda c: next((n for n in c.notifies if n.get("level") == "ERROR"), None)
            )
            assert "holds 2 series" in note["content"]
            assert len(venue.core.holds) == 2
            await gw.send({"aid": "set_chart", "chart_id": "c", "ins_list": "", "duration": 0})
            await gw.wait_for(lambda c: "c" not in c.tree["charts"])
            assert key not in venue.charts.mirrors  # dropped on the gateway at once
            await until(lambda: key not in market.klines, 6)  # lapsed on the core: the series is gone
            assert key not in venue.core.holds


async def test_ws_notifications_through_a_gateway(nats_server: NatsServer) -> None:
    async with scaleout(nats_server) as venue:
        url = venue.gateway_url.replace(DIFF_PATH, NOTIFY_PATH)
        async with open_websocket_url(url) as ws:
            await ws.send_message(json.dumps({"token": "x"}))  # no tokens on a gateway: req_login only
            assert json.loads(await ws.get_message())["code"] == "unauthorized"
        async with open_websocket_url(url) as ws:
            await ws.send_message(json.dumps({"aid": "req_login", "user_name": "alice", "password": "wrong"}))
            assert json.loads(await ws.get_message())["code"] == "bad_credentials"
        async with open_websocket_url(url) as ws:
            await ws.send_message(
                json.dumps({"aid": "req_login", "user_name": "alice", "password": PASSWORD})
            )
            assert json.loads(await ws.get_message())["type"] == "ready"
            assert "alice" in venue.remote.feeds  # followed for the notification connection alone
            await venue.trade(CU, 86000.0)
            events = []
            with trio.fail_after(10):
                while not any(e["type"] == "trade" for e in events):
                    events.append(json.loads(await ws.get_message()))
            trade = next(e for e in events if e["type"] == "trade")
            assert (trade["instrument_id"], trade["price"], trade["volume"]) == (CU, 86000.0, 1)
        await until(lambda: "alice" not in venue.remote.feeds, 5)  # gone with the connection


async def test_a_chart_set_again_keeps_its_series_mirrored(nats_server: NatsServer) -> None:
    """TqSdk sets a chart id again with another width (multi-symbol serials, its downloader): the
    series stays mirrored, nothing is fetched again, and the new window is the core's."""
    async with scaleout(nats_server) as venue:
        for price in (86000.0, 86010.0, 86020.0):
            await venue.trade(CU, price)
        async with DiffClient.connect(venue.gateway_url) as gw, DiffClient.connect(venue.core_url) as core:
            for width in (10, 2):
                for client in (gw, core):
                    await client.send({"aid": "set_chart", "chart_id": "t", "ins_list": CU, "duration": 0,
                                       "view_width": width})  # fmt: skip
                await gw.wait_for(
                    lambda c, width=width: (
                        c.tree.get("charts", {}).get("t", {}).get("state", {}).get("view_width") == width
                    )
                )
                await converge(gw, core)
            assert gw.tree["charts"]["t"]["left_id"] == 1
            assert venue.charts.fetched == 1


async def test_charts_on_a_gateway_catch_up_after_the_broker_restarts(nats_server: NatsServer) -> None:
    async with scaleout(nats_server) as venue:
        await venue.trade(CU, 86000.0)
        async with DiffClient.connect(venue.gateway_url) as gw, DiffClient.connect(venue.core_url) as core:
            for client in (gw, core):
                await client.send({"aid": "set_chart", "chart_id": "t", "ins_list": CU, "duration": 0,
                                   "view_width": 10})  # fmt: skip
            await converge(gw, core)
            await trio.to_thread.run_sync(nats_server.stop)
            await venue.trade(CU, 86010.0)  # while the broker is away: the gateway misses it
            await core.wait_for(lambda c: c.tree["ticks"][CU]["last_id"] == 1)
            await trio.to_thread.run_sync(nats_server.start)
            await gw.wait_for(lambda c: c.tree["ticks"][CU]["last_id"] == 1, within=20)  # fetched again
            await converge(gw, core)
            await venue.trade(CU, 86020.0)  # and followed again
            await gw.wait_for(lambda c: c.tree["ticks"][CU]["last_id"] == 2)
            await converge(gw, core)


async def test_a_new_core_epoch_fetches_the_gateways_series_again(nats_server: NatsServer) -> None:
    async with scaleout(nats_server) as venue:
        await venue.trade(CU, 86000.0)
        async with DiffClient.connect(venue.gateway_url) as gw, DiffClient.connect(venue.core_url) as core:
            for client in (gw, core):
                await client.send({"aid": "set_chart", "chart_id": "m", "ins_list": CU, "duration": 60 * S,
                                   "view_width": 10})  # fmt: skip
            await converge(gw, core)
            fetched = venue.charts.fetched
            await venue.restart_core()
            await until(lambda: venue.charts.fetched > fetched, 10)  # the new epoch's heartbeat
            await venue.trade(CU, 86030.0)
            await gw.wait_for(lambda c: c.tree["klines"][CU][str(60 * S)]["data"][str(
                c.tree["klines"][CU][str(60 * S)]["last_id"])]["close"] == 86030.0)  # fmt: skip
            await converge(gw, core)
