"""Market data over real DIFF WebSocket connections.

Most tests run the DIFF server in-process on 127.0.0.1 (real sockets, trio-websocket's client) under
trio's MockClock with autojump, so bars close in "minutes" without sleeping: the market's wall clock is
derived from ``trio.current_time()``. The last tests use the real server subprocess (tests/conftest.py)
for the HTTP market routes.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
import trio
from conftest import Server, open_user
from trio_websocket import WebSocketConnection, open_websocket_url

from qaex.api.diff_server import DIFF_PATH, DiffServer
from qaex.core.commands import OpenAccount
from qaex.core.engine import Engine
from qaex.core.orders import InsertOrder
from qaex.core.patch import merge_patch
from qaex.exchange.exchange import Exchange
from qaex.exchange.market import MarketData
from qaex.protocol.session import MAX_SHARED_PENDING

S = 1_000_000_000
MINUTE = 60 * S
T0 = 1_763_946_000 * S  # 2025-11-24 09:00 UTC+8, a Monday
CU = "SHFE.cu2601"


def wall_clock() -> int:
    """Epoch ns that advance with trio's (mock) clock, for the router and the market alike."""
    return T0 + round(trio.current_time() * S)


class Venue:
    """An in-process exchange with market data and a DIFF listener, plus two traders."""

    def __init__(self, exchange: Exchange, url: str) -> None:
        self.exchange = exchange
        self.url = url
        self._order_ids = 0

    async def order(self, user: str, direction: str, price: float, volume: int = 1) -> dict[str, Any]:
        self._order_ids += 1
        return await self.exchange.insert_order(
            InsertOrder(
                user_id=user, order_id=f"o{self._order_ids}", exchange_id="SHFE", instrument_id="cu2601",
                direction=direction, offset="OPEN", volume=volume, limit_price=price,  # type: ignore[arg-type]
            )
        )  # fmt: skip

    async def trade(self, price: float, volume: int = 1) -> None:
        await self.order("alice", "SELL", price, volume)
        await self.order("bob", "BUY", price, volume)


@asynccontextmanager
async def venue() -> AsyncIterator[Venue]:
    engine = Engine()
    exchange = Exchange(engine, clock=wall_clock, market=MarketData(engine, clock=wall_clock))
    async with trio.open_nursery() as nursery:
        await nursery.start(exchange.run)
        server = await nursery.start(DiffServer(exchange).serve, "127.0.0.1", 0)
        for user in ("alice", "bob"):  # not open_account: a password hash in a thread lets the mock clock run
            await exchange.router.execute(OpenAccount(ts=0, user_id=user, password_hash="-", init_cash=1e9))
        yield Venue(exchange, f"ws://127.0.0.1:{server.port}{DIFF_PATH}")
        nursery.cancel_scope.cancel()


class DiffClient:
    """A DIFF client over a real WebSocket: keeps a merged tree like TqSdk."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.tree: dict[str, Any] = {}

    async def send(self, **message: Any) -> None:
        await self.ws.send_message(json.dumps(message))

    async def rtn_data(self) -> list[dict[str, Any]]:
        """Peek, and apply the next rtn_data."""
        await self.send(aid="peek_message")
        while True:
            message = json.loads(await self.ws.get_message())
            if message["aid"] == "rtn_data":
                for patch in message["data"]:
                    merge_patch(self.tree, patch)
                data: list[dict[str, Any]] = message["data"]
                return data

    async def until(self, condition: Callable[[dict[str, Any]], bool], seconds: float = 600) -> None:
        """Peek until ``condition(tree)`` holds (mock seconds: the clock jumps while everyone waits)."""
        with trio.fail_after(seconds):
            while not condition(self.tree):
                await self.rtn_data()

    def quote(self) -> dict[str, Any]:
        quote: dict[str, Any] = self.tree.get("quotes", {}).get(CU, {})
        return quote

    def bars(self, duration: int = MINUTE) -> dict[str, Any]:
        bars: dict[str, Any] = self.tree.get("klines", {}).get(CU, {}).get(str(duration), {})
        return bars


@asynccontextmanager
async def connect(url: str) -> AsyncIterator[DiffClient]:
    async with open_websocket_url(url) as ws:
        assert json.loads(await ws.get_message())["aid"] == "rtn_brokers"
        client = DiffClient(ws)
        await client.rtn_data()  # the first answer: mdhis_more_data and every contract's static fields
        yield client


# -- quotes ----------------------------------------------------------------------------------------------
async def test_the_first_rtn_data_lists_every_contract_with_its_tick(autojump_clock: trio.abc.Clock) -> None:
    async with venue() as market, connect(market.url) as client:
        assert client.tree["mdhis_more_data"] is False
        engine = market.exchange.engine
        series = {f"KQ.m@{product}" for product in engine.main_contracts}  # one main-contract series each
        assert set(client.tree["quotes"]) == set(engine.instruments) | series
        assert client.quote()["price_tick"] == 10.0


async def test_subscribe_quote_gets_the_full_quote_then_trades_move_it(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with venue() as market, connect(market.url) as client:
        await client.send(aid="subscribe_quote", ins_list=CU)
        await client.until(lambda tree: "datetime" in tree["quotes"][CU])
        assert client.tree["ins_list"] == CU
        for field in ("last_price", "ask_price5", "bid_volume5", "upper_limit", "margin", "trading_time"):
            assert field in client.quote()
        for level in range(5):
            await market.order("alice", "SELL", 86100.0 + 10 * level, 2)
            await market.order("bob", "BUY", 85900.0 - 10 * level, 1)
        await market.trade(86050.0, 3)
        await client.until(lambda tree: tree["quotes"][CU]["volume"] == 3)
        quote = client.quote()
        assert quote["last_price"] == 86050.0
        assert [quote[f"ask_price{n}"] for n in range(1, 6)] == [86100.0 + 10 * n for n in range(5)]
        assert [quote[f"bid_price{n}"] for n in range(1, 6)] == [85900.0 - 10 * n for n in range(5)]
        assert quote["datetime"].startswith("2025-11-24 09:00:")


async def test_subscribers_at_every_pace_end_with_the_quote_a_new_subscriber_gets(
    autojump_clock: trio.abc.Clock,
) -> None:
    """Quote patches are shared (encoded once per publish, DiffSession.push_shared): a subscriber
    that peeks after every trade, one that peeks once at the end (more shared patches pending than
    a session keeps as they are: merged), and one with private patches between the shared ones all
    hold what a fresh subscription's full quote says."""
    trades = 3 * MAX_SHARED_PENDING
    async with venue() as market, connect(market.url) as eager, connect(market.url) as lazy:
        async with connect(market.url) as busy:
            for client in (eager, lazy, busy):
                await client.send(aid="subscribe_quote", ins_list=CU)
                await client.until(lambda tree: "datetime" in tree["quotes"][CU])
            for n in range(trades):
                await market.trade(86000.0 + 10 * (n % 7))
                await eager.until(lambda tree, n=n: tree["quotes"][CU]["volume"] == n + 1)
                await busy.send(aid="ins_query", query_id=f"q{n}", query="")  # a private patch
                if n % 4 == 0:
                    await busy.rtn_data()
            for client in (eager, lazy, busy):
                await client.until(lambda tree: tree["quotes"][CU]["volume"] == trades)
            async with connect(market.url) as fresh:
                await fresh.send(aid="subscribe_quote", ins_list=CU)
                await fresh.until(lambda tree: "datetime" in tree["quotes"][CU])
                assert eager.quote() == lazy.quote() == busy.quote() == fresh.quote()
                assert fresh.quote()["volume"] == trades


async def test_unsubscribing_stops_the_quote_flow(autojump_clock: trio.abc.Clock) -> None:
    async with venue() as market, connect(market.url) as client:
        await client.send(aid="subscribe_quote", ins_list=CU)
        await client.until(lambda tree: "datetime" in tree["quotes"][CU])
        await client.send(aid="subscribe_quote", ins_list="")
        await client.until(lambda tree: tree["ins_list"] == "")
        await market.trade(86000.0)
        with trio.move_on_after(30):
            await client.rtn_data()
        assert client.quote()["volume"] == 0


async def test_an_unknown_symbol_gets_an_error_notify(autojump_clock: trio.abc.Clock) -> None:
    async with venue() as market, connect(market.url) as client:
        await client.send(aid="subscribe_quote", ins_list="SHFE.nope")
        await client.until(lambda tree: "notify" in tree)
        (note,) = client.tree["notify"].values()
        assert note["level"] == "ERROR" and note["code"] == 409


# -- charts ----------------------------------------------------------------------------------------------
async def test_set_chart_is_ready_with_its_bars_and_bars_close_on_time(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with venue() as market, connect(market.url) as client:
        await market.trade(86000.0)
        await trio.sleep(60)
        await market.trade(86010.0)
        await client.send(aid="set_chart", chart_id="c", ins_list=CU, duration=MINUTE, view_width=100)
        data = await client.rtn_data()
        answer = next(patch for patch in data if "charts" in patch)
        assert answer["charts"]["c"]["ready"] is True and "klines" in answer  # one rtn_data, as TqSdk needs
        assert client.bars()["last_id"] == 1
        assert client.tree["charts"]["c"]["right_id"] == 1
        # No trade for five minutes: the bar timer opens flat bars, and the window follows.
        await client.until(lambda tree: client.bars()["last_id"] >= 6)
        assert client.tree["charts"]["c"]["right_id"] == client.bars()["last_id"]
        flat = client.bars()["data"]["6"]
        assert (flat["open"], flat["close"], flat["volume"]) == (86010.0, 86010.0, 0)
        assert flat["datetime"] == T0 + 6 * MINUTE


async def test_left_kline_id_and_focus_windows(autojump_clock: trio.abc.Clock) -> None:
    async with venue() as market, connect(market.url) as client:
        for minute in range(10):
            await market.trade(86000.0 + 10 * minute)
            await trio.sleep(60)
        await client.send(
            aid="set_chart", chart_id="l", ins_list=CU, duration=MINUTE, view_width=3, left_kline_id=4
        )
        await client.send(
            aid="set_chart", chart_id="f", ins_list=CU, duration=MINUTE, view_width=4,
            focus_datetime=T0 + 7 * MINUTE, focus_position=4,
        )  # fmt: skip
        await client.until(lambda tree: {"l", "f"} <= set(tree.get("charts", {})))
        charts = client.tree["charts"]
        assert (charts["l"]["left_id"], charts["l"]["right_id"]) == (4, 6)
        assert (charts["f"]["left_id"], charts["f"]["right_id"]) == (3, 6)  # the 4 bars before 09:07
        assert {"3", "4", "5", "6"} <= set(client.bars()["data"])


async def test_a_deleted_chart_stops_its_bars(autojump_clock: trio.abc.Clock) -> None:
    async with venue() as market, connect(market.url) as client:
        await market.trade(86000.0)
        await client.send(aid="set_chart", chart_id="c", ins_list=CU, duration=3 * S, view_width=10)
        await client.until(lambda tree: "c" in tree.get("charts", {}))
        await client.send(aid="set_chart", chart_id="c", ins_list="", duration=3 * S, view_width=10)
        await client.until(lambda tree: "c" not in tree["charts"])
        last_id = client.bars(3 * S)["last_id"]
        with trio.move_on_after(30):  # ten 3-second bars would open if the chart were still fed
            while True:
                await client.rtn_data()
        assert client.bars(3 * S)["last_id"] == last_id


# -- HTTP routes on the real server ------------------------------------------------------------------------
def trade_over_http(server: Server, price: float) -> None:
    seller, buyer = open_user(server), open_user(server)
    for user, direction in ((seller, "SELL"), (buyer, "BUY")):
        answer = user.post(
            "/api/order/submit",
            {"instrument_id": CU, "direction": direction, "offset": "OPEN", "volume": 1, "price": price},
        )
        assert answer.status_code == 200, answer.text


def test_http_quote_is_the_full_diff_quote(server: Server, anonymous: httpx.Client) -> None:
    trade_over_http(server, 86020.0)
    quote = anonymous.get(f"/api/market/quote/{CU}").json()
    assert quote["last_price"] == 86020.0
    assert quote["price_tick"] == 10.0 and quote["ins_class"] == "FUTURE"
    assert "ask_price5" in quote and "trading_time" in quote and "bids" in quote
    assert quote["settlement"] is None  # NaN is null over HTTP (the "-" is for TqSdk)


def bar_after_one_lot(before: dict[str, Any] | None, price: float) -> dict[str, Any]:
    """The newest bar once a 1-lot trade at ``price`` is folded into ``before`` (None: a new bar)."""
    if before is None or before["volume"] == 0:  # the first trade of a bar sets all four prices
        return {"open": price, "high": price, "low": price, "close": price, "volume": 1}
    return {
        "open": before["open"],
        "high": max(before["high"], price),
        "low": min(before["low"], price),
        "close": price,
        "volume": before["volume"] + 1,
    }


def ohlcv(bar: dict[str, Any]) -> dict[str, Any]:
    return {field: bar[field] for field in ("open", "high", "low", "close", "volume")}


@pytest.mark.parametrize("duration", [60, 300])
def test_http_klines_fold_a_trade_into_the_newest_bar(
    server: Server, anonymous: httpx.Client, duration: int
) -> None:
    path = f"/api/market/klines/{CU}?duration={duration}&count=5"
    before = anonymous.get(path).json()  # the module's server is shared: earlier trades may be in the bar
    trade_over_http(server, 86030.0)
    after = anonymous.get(path).json()
    newest = after["klines"][-1]
    assert newest["id"] == after["last_id"]
    same_bar = bool(before["klines"]) and before["klines"][-1]["id"] == newest["id"]
    assert ohlcv(newest) == bar_after_one_lot(before["klines"][-1] if same_bar else None, 86030.0)


def test_http_ticks_end_with_the_trade(server: Server, anonymous: httpx.Client) -> None:
    path = f"/api/market/ticks/{CU}"
    before = anonymous.get(path, params={"count": 1}).json()
    trade_over_http(server, 86040.0)
    ticks = anonymous.get(path, params={"count": 2}).json()
    assert len(ticks["ticks"]) == (2 if before["ticks"] else 1)
    tick = ticks["ticks"][-1]
    assert tick["id"] == ticks["last_id"] == before["last_id"] + 1
    assert tick["last_price"] == 86040.0
    assert tick["volume"] == (before["ticks"][-1]["volume"] if before["ticks"] else 0) + 1  # the day's volume


@pytest.mark.parametrize(
    "path, status",
    [
        (f"/api/market/klines/{CU}?duration=0", 400),
        (f"/api/market/klines/{CU}?duration=90000", 400),
        (f"/api/market/klines/{CU}?count=0", 400),
        ("/api/market/klines/SHFE.nope", 404),
        ("/api/market/ticks/SHFE.nope", 404),
    ],
)
def test_http_market_routes_refuse_bad_input(anonymous: httpx.Client, path: str, status: int) -> None:
    assert anonymous.get(path).status_code == status


def test_market_routes_are_in_openapi(anonymous: httpx.Client) -> None:
    paths = anonymous.get("/openapi.json").json()["paths"]
    assert {"/api/market/klines/{symbol}", "/api/market/ticks/{symbol}"} <= set(paths)
