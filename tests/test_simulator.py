"""The liquidity simulator: a lone user can trade at once, the ladder stays sane, a seed reproduces it."""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
import trio
from conftest import launch, open_user, records_of, wait_ready

from qaex.core.commands import OpenAccount
from qaex.core.engine import Engine
from qaex.core.instruments import InstrumentRegistry
from qaex.core.orders import InsertOrder
from qaex.exchange.exchange import Exchange
from qaex.exchange.market import MarketData
from qaex.exchange.recovery import open_journal, recover
from qaex.exchange.simulator import BACKOFF_FIRST, BACKOFF_MAX, MAKER, TAKER, Ladder, LiquiditySimulator

S = 1_000_000_000
T0 = 1_763_946_000 * S  # 2025-11-24 09:00 UTC+8


def wall_clock() -> int:
    return T0 + round(trio.current_time() * S)


@asynccontextmanager
async def simulated(
    seed: int = 7, symbols: list[str] | None = None, data_dir: Path | None = None, journal: bool = True
) -> AsyncIterator[Exchange]:
    """An exchange with market data and a running simulator (its accounts opened without a password hash
    in a thread, which would let trio's mock clock jump while it runs).

    With ``data_dir`` the engine is first recovered from the journal there, as the server does
    (qaex.app.build_exchange), so a second ``simulated`` on the directory is a restart. The exchange
    then journals there too, unless ``journal`` is False: the journal writes in a thread, and while it
    runs trio's mock clock jumps, so a journaled run's timing in mock seconds means little.
    """
    if data_dir is None:
        engine = Engine()
        exchange = Exchange(engine, clock=wall_clock, market=MarketData(engine, clock=wall_clock))
    else:
        command_log = None
        if journal:
            command_log, recovered = open_journal(data_dir, Engine, fsync=False)
        else:
            recovered = recover(data_dir, Engine)
        engine = recovered.engine
        exchange = Exchange(
            engine, journal=command_log, clock=wall_clock, market=MarketData(engine, clock=wall_clock)
        )
        exchange.router.resume_after(recovered.last_ts)
        exchange.seed_from_engine()
    async with trio.open_nursery() as nursery:
        await nursery.start(exchange.run)
        for user_id in (MAKER, TAKER, "lone"):
            if user_id not in engine.users:  # after a restart the journal already holds them
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


# -- the supervisor boundary: restarts and failures never end the exchange (issue #13) ----------------------
def order_number(order_id: str, instrument_id: str) -> int | None:
    """42 for the simulator's ``cu2601.42`` and ``cu2601.42t`` (any suffix), None for other ids."""
    prefix = f"{instrument_id}."
    if not order_id.startswith(prefix):
        return None
    rest = order_id.removeprefix(prefix)
    digits = rest[: len(rest) - len(rest.lstrip("0123456789"))]
    return int(digits) if digits else None


def refused(exchange: Exchange) -> list[str]:
    """The simulator's orders the exchange turned down (self-trade, limits...): there should be none."""
    return [
        f"{order.order_id}: {order.last_msg}"
        for user_id in (MAKER, TAKER)
        for order in exchange.engine.users[user_id].orders.values()
        if order.status == "FINISHED" and not order.exchange_order_id
    ]


async def lone_user_trades_everything(exchange: Exchange, tag: str) -> None:
    for number, symbol in enumerate(exchange.engine.instruments):
        bought = await exchange.insert_order(market_order(symbol, "BUY", f"{tag}b{number}"))
        sold = await exchange.insert_order(market_order(symbol, "SELL", f"{tag}s{number}"))
        assert bought["volume_left"] == 0 and sold["volume_left"] == 0, (symbol, bought, sold)


@pytest.fixture
def simulator_log() -> Iterator[list[logging.LogRecord]]:
    """What ``qaex.simulator`` logs."""
    with records_of("qaex.simulator") as records:
        yield records


@pytest.mark.parametrize("seed", [1, 2, 3])
async def test_a_restart_with_todays_taker_orders_trades_on(
    autojump_clock: trio.abc.Clock, tmp_path: Path, seed: int
) -> None:
    """The taker's ids (``{instrument}.{N}t``) come from the ladder's counter too; a restart that took
    up only the maker's ids issued one of them again, and the duplicate-id RiskError ended the server."""
    async with simulated(seed, data_dir=tmp_path) as exchange:
        await trio.sleep(20)
        simulator = exchange.simulator
        for ladder in simulator.ladders.values():
            for _ in range(5):  # stopped right after a few taker orders, before the maker refilled:
                await simulator._supervised(ladder, simulator._take)  # the taker holds the day's highest ids
    # The restart: recovered from the journal (and not journaling, so that mock time is steady).
    async with simulated(seed, data_dir=tmp_path, journal=False) as exchange:
        engine = exchange.engine
        before = {user_id: set(engine.users[user_id].orders) for user_id in (MAKER, TAKER)}
        assert any(order_id.endswith("t") for order_id in before[TAKER])
        for symbol, ladder in exchange.simulator.ladders.items():
            numbers = [
                number
                for ids in before.values()
                for order_id in ids
                if (number := order_number(order_id, ladder.instrument.instrument_id)) is not None
            ]
            assert numbers and ladder.next_id > max(numbers), symbol
        await trio.sleep(60)  # a simulator error would end this nursery (and the server) here
        orders = {user_id: engine.users[user_id].orders for user_id in before}
        new = {
            user_id: [order for order_id, order in orders[user_id].items() if order_id not in ids]
            for user_id, ids in before.items()
        }
        assert any(order.volume_left < order.volume_orign for order in new[TAKER])  # the taker trades on
        assert {order.symbol for order in new[MAKER]} == set(engine.instruments)  # the maker quotes on
        assert refused(exchange) == []
        await lone_user_trades_everything(exchange, "after")


async def test_a_step_that_raises_is_logged_backed_off_and_retried(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch, simulator_log: list[logging.LogRecord]
) -> None:
    async with simulated() as exchange:
        simulator = exchange.simulator
        ladder = simulator.ladders["SHFE.cu2601"]
        forget = simulator._forget_finished
        failures = 7
        attempts: list[float] = []

        def broken(which: Ladder) -> None:  # called at the start of every step
            nonlocal failures
            if which is ladder and failures:
                failures -= 1
                attempts.append(trio.current_time())
                raise RuntimeError("simulated bug")
            forget(which)

        monkeypatch.setattr(simulator, "_forget_finished", broken)
        await trio.sleep(120)
        # Each failed step waited longer than the last before the next try, up to BACKOFF_MAX.
        gaps = [later - earlier for earlier, later in itertools.pairwise(attempts)]
        assert len(attempts) == 7
        assert gaps == pytest.approx([min(BACKOFF_FIRST * 2**k, BACKOFF_MAX) for k in range(6)])
        # Logged, but not seven tracebacks: the first in full, the repeats counted.
        errors = [record for record in simulator_log if record.levelno >= logging.ERROR]
        assert 1 <= len(errors) < 7
        assert errors[0].exc_info is not None and "simulated bug" in str(errors[0].exc_info[1])
        assert any("recovered" in record.getMessage() for record in simulator_log)
        # The ladder went on after the last failure, and so did everyone else.
        assert ladder.failures == 0
        late = [
            order
            for order in exchange.engine.users[MAKER].orders.values()
            if order.symbol == "SHFE.cu2601" and order.insert_date_time > wall_clock() - 30 * S
        ]
        assert late
        assert refused(exchange) == []
        await lone_user_trades_everything(exchange, "up")


@pytest.mark.parametrize("broken", ["_ladder", "_reconcile"])
async def test_a_start_up_that_raises_is_retried(
    autojump_clock: trio.abc.Clock,
    monkeypatch: pytest.MonkeyPatch,
    simulator_log: list[logging.LogRecord],
    broken: str,
) -> None:
    """Building a ladder (outside the ladders' loops: the whole start-up is retried) or putting one up
    for the first time (that ladder retries) fails once: the exchange starts all the same."""
    original = getattr(LiquiditySimulator, broken)
    failed: list[str] = []

    def fail_once(argument: object) -> None:
        if not failed:
            failed.append(repr(argument))
            raise RuntimeError(f"{broken} failed")

    if broken == "_ladder":

        def build(self: LiquiditySimulator, symbol: str) -> Ladder:
            fail_once(symbol)
            ladder: Ladder = original(self, symbol)
            return ladder

        monkeypatch.setattr(LiquiditySimulator, broken, build)
    else:

        async def put_up(self: LiquiditySimulator, ladder: Ladder) -> None:
            fail_once(ladder.instrument.symbol)
            await original(self, ladder)

        monkeypatch.setattr(LiquiditySimulator, broken, put_up)
    async with simulated() as exchange:
        await trio.sleep(BACKOFF_FIRST + 5)
        assert failed
        errors = [record for record in simulator_log if record.levelno >= logging.ERROR]
        assert len(errors) == 1 and f"{broken} failed" in errors[0].getMessage()
        for symbol, book in exchange.engine.books.items():
            assert book.best_bid() is not None and book.best_ask() is not None, symbol
        assert refused(exchange) == []
        await lone_user_trades_everything(exchange, "up")


async def test_an_order_whose_answer_was_lost_is_found_again(
    autojump_clock: trio.abc.Clock, monkeypatch: pytest.MonkeyPatch, simulator_log: list[logging.LogRecord]
) -> None:
    """The insert went through but the simulator never heard back: the re-sync from the engine finds the
    order, so the ladder neither doubles a level nor lets an order it forgot meet its other side."""
    async with simulated() as exchange:
        simulator = exchange.simulator
        insert = exchange.insert_order
        lost: list[str] = []

        async def answer_lost(request: InsertOrder) -> dict[str, object]:
            order = await insert(request)
            if request.user_id == MAKER and request.instrument_id == "cu2601" and not lost:
                lost.append(request.order_id)
                raise RuntimeError("answer lost")
            return order

        monkeypatch.setattr(exchange, "insert_order", answer_lost)
        await trio.sleep(90)
        assert lost
        assert any(record.levelno >= logging.ERROR for record in simulator_log)
        ladder = simulator.ladders["SHFE.cu2601"]
        alive = {
            order_id: (order.is_buy, ladder.instrument.to_ticks(order.limit_price))
            for order_id, order in exchange.engine.users[MAKER].orders.items()
            if order.symbol == "SHFE.cu2601" and order.status == "ALIVE"
        }
        assert alive.items() <= ladder.live.items()  # it knows every order it has in the book...
        assert len(set(alive.values())) == len(alive)  # ...and keeps one per level
        assert refused(exchange) == []
        await lone_user_trades_everything(exchange, "up")


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
