"""Replay (QAEX_MARKET_REPLAY): the market maker follows recorded bars, then walks again.

A recorded run of minutes replayed 60 times faster under trio's mock clock: the quote follows the
recording within a couple of ticks, a user's market order fills near the recorded price, and when the
recording ends the maker goes back to its random walk from the last price.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from qaex.core.commands import OpenAccount
from qaex.core.engine import Engine
from qaex.core.history import BarColumns, to_csv
from qaex.core.orders import InsertOrder
from qaex.core.replay import track_from_bars
from qaex.exchange.exchange import Exchange
from qaex.exchange.history import ImportRefused, load_replay
from qaex.exchange.market import MarketData
from qaex.exchange.simulator import MAKER, TAKER, LiquiditySimulator

S = 1_000_000_000
MINUTE = 60 * S
T0 = 1_763_946_000 * S  # 2025-11-24 09:00 UTC+8, a Monday
CU = "SHFE.cu2601"


def wall_clock() -> int:
    return T0 + round(trio.current_time() * S)


def recording(start: float, bars: int = 20, step: float = 20.0) -> BarColumns:
    """Rising minute bars: each opens where the last closed and closes two ticks (2 × 10) higher."""
    columns = BarColumns()
    price = start
    for index in range(bars):
        columns.append(T0 - 3600 * S + index * MINUTE, price, price + step, price, price + step, 10, 100, 100)
        price += step
    return columns


def test_a_track_plays_open_low_high_close_then_ends() -> None:
    bars = BarColumns()
    bars.append(0, 100.0, 104.0, 98.0, 103.0, 1, 0, 0)  # rising: low before high
    bars.append(MINUTE, 103.0, 105.0, 101.0, 102.0, 1, 0, 0)  # falling: high before low
    track = track_from_bars(bars)
    quarter = MINUTE // 4
    assert [track.price_at(k * quarter) for k in range(8)] == [100, 98, 104, 103, 103, 105, 101, 102]
    assert track.price_at(7 * quarter + 1) is None  # ended


def test_recordings_load_from_files_and_directories(tmp_path: Path) -> None:
    (tmp_path / "cu.csv").write_text(to_csv(CU, recording(86000.0), 0))
    assert list(load_replay(str(tmp_path))) == [CU]
    assert list(load_replay(str(tmp_path / "cu.csv"))) == [CU]
    (tmp_path / "again.csv").write_text(to_csv(CU, recording(86000.0), 0))
    with pytest.raises(ImportRefused, match=r"a second recording of SHFE\.cu2601"):
        load_replay(str(tmp_path))


async def test_the_market_maker_follows_the_recording_then_walks(autojump_clock: trio.abc.Clock) -> None:
    engine = Engine()
    exchange = Exchange(engine, clock=wall_clock, market=MarketData(engine, clock=wall_clock))
    start = engine.instruments[CU].pre_settlement
    track = track_from_bars(recording(start))
    tick = engine.instruments[CU].price_tick
    async with trio.open_nursery() as nursery:
        await nursery.start(exchange.run)
        for user_id in (MAKER, TAKER, "lone"):
            await exchange.router.execute(
                OpenAccount(ts=0, user_id=user_id, password_hash="-", init_cash=1e8)
            )
        simulator = LiquiditySimulator(
            exchange, seed=3, symbols=[CU], interval=0.25, replay={CU: track}, replay_speed=60.0
        )
        exchange.simulator = simulator
        await nursery.start(simulator.run)
        began = simulator.ladders[CU].replay_start
        close, far = 0, 0
        for _ in range(70):  # 17.5 s of the 20 s recording
            await trio.sleep(0.25)
            recorded = track.price_at((trio.current_time() - began) * 60 * S)
            assert recorded is not None
            assert exchange.market is not None
            bid = exchange.market.quotes[CU].full()["bid_price1"]
            if abs(bid - recorded) <= 3 * tick:
                close += 1
            else:
                far += 1
        assert close >= 0.9 * (close + far), (close, far)
        # A market order fills near the recorded price.
        recorded = track.price_at((trio.current_time() - began) * 60 * S)
        assert recorded is not None
        order = await exchange.insert_order(
            InsertOrder(
                user_id="lone",
                order_id="m1",
                exchange_id="SHFE",
                instrument_id="cu2601",
                direction="BUY",
                offset="OPEN",
                volume=1,
                price_type="ANY",
                time_condition="IOC",
            )
        )
        assert order["volume_left"] == 0, order
        trade_price = engine.last_price[CU]
        assert abs(trade_price - recorded) <= 4 * tick, (trade_price, recorded)
        # After the recording: the walk again, from where the recording ended.
        await trio.sleep(5)
        ladder = simulator.ladders[CU]
        assert ladder.track is None
        assert abs(ladder.reference * tick - (start + 20 * 20.0)) <= 40 * tick
        nursery.cancel_scope.cancel()
