"""The liquidity simulator: a lone user can trade at once, the ladder stays sane, a seed reproduces it."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio
from conftest import launch, open_user, wait_ready

from qaex.core.commands import OpenAccount
from qaex.core.engine import Engine
from qaex.core.instruments import InstrumentRegistry
from qaex.core.orders import InsertOrder
from qaex.exchange.exchange import Exchange
from qaex.exchange.market import MarketData
from qaex.exchange.simulator import MAKER, TAKER, Ladder, LiquiditySimulator

S = 1_000_000_000
T0 = 1_763_946_000 * S  # 2025-11-24 09:00 UTC+8


def wall_clock() -> int:
    return T0 + round(trio.current_time() * S)


@asynccontextmanager
async def simulated(seed: int = 7, symbols: list[str] | None = None) -> AsyncIterator[Exchange]:
    """An exchange with market data and a running simulator (its accounts opened without a password hash
    in a thread, which would let trio's mock clock jump while it runs)."""
    engine = Engine()
    exchange = Exchange(engine, clock=wall_clock, market=MarketData(engine, clock=wall_clock))
    async with trio.open_nursery() as nursery:
        await nursery.start(exchange.run)
        for user_id in (MAKER, TAKER, "lone"):
            await exchange.router.execute(
                OpenAccount(ts=0, user_id=user_id, password_hash="-", init_cash=1e8)
            )
        exchange.simulator = LiquiditySimulator(exchange, seed=seed, symbols=symbols)
        await nursery.start(exchange.simulator.run)
        yield exchange
        nursery.cancel_scope.cancel()


def market_order(symbol: str, direction: str, order_id: str, offset: str = "OPEN") -> InsertOrder:
    exchange_id, instrument_id = symbol.split(".")
    return InsertOrder(
        user_id="lone", order_id=order_id, exchange_id=exchange_id, instrument_id=instrument_id,
        direction=direction, offset=offset, volume=1, price_type="ANY", time_condition="IOC",  # type: ignore[arg-type]
    )  # fmt: skip


# -- the ladder alone ------------------------------------------------------------------------------------
@pytest.mark.parametrize("symbol", list(InstrumentRegistry()))
def test_the_ladder_walks_within_the_limits_and_never_crosses(symbol: str) -> None:
    instrument = InstrumentRegistry()[symbol]
    ladder = Ladder(instrument, random.Random(1), levels=5, max_lots=3)
    ladder.reference = round(instrument.pre_settlement / instrument.price_tick)
    for _ in range(5000):
        ladder.walk()
        cancels, inserts = ladder.plan()
        for order_id in cancels:
            del ladder.live[order_id]
        for buy, price, lots in inserts:
            assert 1 <= lots <= 3
            assert instrument.lower_limit_ticks <= price <= instrument.upper_limit_ticks
            ladder.live[ladder.new_order_id()] = (buy, price)
        bids = [price for buy, price in ladder.live.values() if buy]
        asks = [price for buy, price in ladder.live.values() if not buy]
        assert len(bids) == len(asks) == 5
        assert max(bids) < min(asks)


def test_a_ladder_squeezed_by_limits_still_fits() -> None:
    instrument = InstrumentRegistry()["SHFE.cu2601"]
    ladder = Ladder(instrument, random.Random(1), levels=5, max_lots=3)
    ladder.reference = instrument.upper_limit_ticks + 100
    ladder.clamp()
    assert max(price for _, price in ladder.desired()) == instrument.upper_limit_ticks


# -- the running simulator -------------------------------------------------------------------------------
async def test_a_lone_user_can_buy_and_sell_every_builtin_contract_at_once(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with simulated() as exchange:
        for number, symbol in enumerate(exchange.engine.instruments):
            bought = await exchange.insert_order(market_order(symbol, "BUY", f"b{number}"))
            sold = await exchange.insert_order(market_order(symbol, "SELL", f"s{number}"))
            assert bought["volume_left"] == 0 and sold["volume_left"] == 0, (symbol, bought, sold)


async def test_a_contract_listed_while_running_gets_a_ladder(autojump_clock: trio.abc.Clock) -> None:
    async with simulated() as exchange:
        spec = {
            "exchange_id": "SHFE", "instrument_id": "zn2601", "product_id": "zn", "instrument_name": "沪锌2601",
            "price_tick": 5.0, "volume_multiple": 5, "margin_ratio_long": 0.1, "margin_ratio_short": 0.1,
            "pre_settlement": 22000.0,
        }  # fmt: skip
        await exchange.upsert_instrument(spec)
        await trio.sleep(5)  # a few steps of the new ladder
        bought = await exchange.insert_order(market_order("SHFE.zn2601", "BUY", "zn-b"))
        sold = await exchange.insert_order(market_order("SHFE.zn2601", "SELL", "zn-s"))
        assert bought["volume_left"] == 0 and sold["volume_left"] == 0
        await exchange.upsert_instrument({**spec, "limit_ratio": 0.1})  # an update: still one ladder
        assert len(exchange.simulator.ladders) == len(exchange.engine.instruments)


async def test_a_symbols_list_limits_the_ladders_also_for_contracts_listed_later(
    autojump_clock: trio.abc.Clock,
) -> None:
    zinc = {
        "exchange_id": "SHFE", "instrument_id": "zn2601", "product_id": "zn", "instrument_name": "沪锌2601",
        "price_tick": 5.0, "volume_multiple": 5, "margin_ratio_long": 0.1, "margin_ratio_short": 0.1,
        "pre_settlement": 22000.0,
    }  # fmt: skip
    lead = {**zinc, "instrument_id": "pb2601", "product_id": "pb", "instrument_name": "沪铅2601"}
    async with simulated(symbols=["SHFE.rb2601", "SHFE.zn2601"]) as exchange:
        assert set(exchange.simulator.ladders) == {"SHFE.rb2601"}  # zn2601 does not exist yet
        await exchange.upsert_instrument(zinc)
        await exchange.upsert_instrument(lead)
        await trio.sleep(5)
        assert set(exchange.simulator.ladders) == {"SHFE.rb2601", "SHFE.zn2601"}
        assert exchange.engine.books["SHFE.pb2601"].best_bid() is None  # left to the users
        assert exchange.engine.books["SHFE.zn2601"].best_bid() is not None


async def test_charts_move_with_no_user_and_quotes_stay_within_limits(autojump_clock: trio.abc.Clock) -> None:
    async with simulated() as exchange:
        engine = exchange.engine
        market = exchange.market
        for _ in range(60):
            await trio.sleep(5)
            for symbol, instrument in engine.instruments.items():
                book = engine.books[symbol]
                bid, ask = book.best_bid(), book.best_ask()
                assert bid is not None and ask is not None and bid < ask
                assert instrument.lower_limit_ticks <= bid and ask <= instrument.upper_limit_ticks
        for symbol in engine.instruments:
            assert market.quotes[symbol].volume > 0, symbol
            assert market.klines[(symbol, 60 * S)].last_id >= 3, symbol  # five minutes of 1-minute bars
        refused = [
            order.last_msg
            for user_id in (MAKER, TAKER)
            for order in engine.users[user_id].orders.values()
            if order.status == "FINISHED" and not order.exchange_order_id
        ]
        assert refused == []  # never a self-trade (or any other) rejection
        orders = len(engine.users[MAKER].orders) + len(engine.users[TAKER].orders)
        assert orders / len(engine.instruments) / 300 <= 2.0  # a modest pace: at most 2 orders/s each


async def run_for(seed: int, seconds: float) -> dict[str, list[tuple[str, str, float, int]]]:
    async with simulated(seed) as exchange:
        await trio.sleep(seconds)
        sent: dict[str, list[tuple[str, str, float, int]]] = {}
        for user_id in (MAKER, TAKER):
            for order in exchange.engine.users[user_id].orders.values():
                sent.setdefault(order.symbol, []).append(
                    (order.order_id, order.direction, order.limit_price, order.volume_orign)
                )
        return {symbol: sorted(orders) for symbol, orders in sent.items()}


async def test_a_seed_reproduces_every_instruments_orders(autojump_clock: trio.abc.Clock) -> None:
    first = await run_for(11, 120)
    assert first == await run_for(11, 120)
    assert first != await run_for(12, 120)


async def test_the_simulators_accounts_get_no_patches(autojump_clock: trio.abc.Clock) -> None:
    async with simulated() as exchange:
        await trio.sleep(30)
        assert exchange.engine.users[MAKER].orders  # it did trade...
        for user_id in (MAKER, TAKER):  # ...but its trees got nothing after the account was opened
            assert exchange.snapshots.trees[user_id]["orders"] == {}


# -- the real server -------------------------------------------------------------------------------------
def test_the_server_runs_the_simulator_by_default(tmp_path: Path) -> None:
    server = launch(tmp_path, extra_env={"QAEX_MARKET_MAKER": "1", "QAEX_SEED": "7"})
    try:
        wait_ready(server)
        user = open_user(server)
        instruments = httpx.get(server.http_url + "/api/market/instruments").json()["instruments"]
        for symbol in instruments:
            for direction in ("BUY", "SELL"):
                answer = user.post(
                    "/api/order/submit",
                    {"instrument_id": symbol, "direction": direction, "offset": "OPEN", "volume": 1,
                     "order_type": "MARKET"},
                )  # fmt: skip
                assert answer.status_code == 200, answer.text
                assert answer.json()["volume_left"] == 0, answer.text
    finally:
        assert server.stop() == 0, server.log()
