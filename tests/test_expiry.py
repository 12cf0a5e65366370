"""A contract's life: listed by the product calendar, traded, settled at the day's VWAP, expired on its
last trading day (orders refused, positions closed out in cash), delisted, and the next month listed;
a restart after weeks off catches up day by day; and a journal replay of it all ends in the same state.

The exchange runs in-process on a clock the test sets (the wall clock is injected), with the real
journal on a temp dir.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from qaex.core import commands
from qaex.core.calendar import CHINA_TZ, default_holiday_calendar
from qaex.core.engine import Engine
from qaex.core.instruments import InstrumentRegistry
from qaex.core.listing import ProductListing, listing_update
from qaex.core.notify_codes import NOTIFY_CONTRACT_EXPIRED
from qaex.core.orders import InsertOrder
from qaex.core.products import PRODUCTS
from qaex.exchange.exchange import Exchange
from qaex.exchange.recovery import open_journal

CALENDAR = default_holiday_calendar()
RB = PRODUCTS["rb"]


def china(year: int, month: int, day: int, hour: int = 10, minute: int = 0) -> int:
    return int(dt.datetime(year, month, day, hour, minute, tzinfo=CHINA_TZ).timestamp()) * 1_000_000_000


class Clock:
    """The exchange's wall clock; each reading moves 1 µs on, as a real clock would between commands."""

    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        self.now += 1000
        return self.now


async def run_exchange(
    data_dir: Path, clock: Clock, body: Callable[[Exchange], Awaitable[None]], *, products: Any = (RB,)
) -> Exchange:
    journal, recovered = open_journal(data_dir, lambda: Engine(InstrumentRegistry([])))
    exchange = Exchange(
        recovered.engine,
        journal=journal,
        clock=clock,
        listing=ProductListing(list(products), CALENDAR),
        settle_at=dt.time(18, 0),
    )
    exchange.router.resume_after(recovered.last_ts)
    exchange.seed_from_engine()
    async with trio.open_nursery() as nursery:
        await nursery.start(exchange.run)
        await body(exchange)
        nursery.cancel_scope.cancel()
    return exchange


def order(
    user: str, order_id: str, direction: str, offset: str, price: float, volume: int = 2
) -> InsertOrder:
    return InsertOrder(
        user_id=user,
        order_id=order_id,
        exchange_id="SHFE",
        instrument_id="rb2612",
        direction=direction,
        offset=offset,
        volume=volume,
        price_type="LIMIT",
        limit_price=price,
    )


def test_the_listing_on_2026_12_02_is_what_shfe_lists() -> None:
    update = listing_update({}, [RB], "20261202", CALENDAR)
    assert [i.instrument_id for i in update.new] == [f"rb2{m}" for m in ("612",)] + [
        f"rb27{m:02d}" for m in range(1, 12)
    ]
    assert update.new[0].last_trading_day == "20261215"
    assert not update.delist


async def test_a_position_in_the_front_month_is_closed_out_in_cash_when_it_expires(tmp_path: Path) -> None:
    clock = Clock(china(2026, 12, 2, 10))  # a Wednesday; rb2612's last trading day is Tuesday 15 Dec
    seen: dict[str, Any] = {}

    async def body(exchange: Exchange) -> None:
        engine = exchange.engine
        assert engine.trading_day == "20261202"
        assert "SHFE.rb2612" in engine.instruments and "SHFE.rb2711" in engine.instruments
        for user in ("alice", "bob"):
            await exchange.open_account(user, "a-long-password")
        pre = engine.instruments["SHFE.rb2612"].pre_settlement
        # Two trades at different prices: the day's settlement is their VWAP, on the tick grid.
        await exchange.insert_order(order("bob", "s1", "SELL", "OPEN", pre, 1))
        await exchange.insert_order(order("alice", "b1", "BUY", "OPEN", pre, 1))
        await exchange.insert_order(order("bob", "s2", "SELL", "OPEN", pre + 3, 3))
        await exchange.insert_order(order("alice", "b2", "BUY", "OPEN", pre + 3, 3))
        vwap = round((pre * 1 + (pre + 3) * 3) / 4)
        prices = await exchange.settle()
        assert prices["SHFE.rb2612"] == vwap
        assert prices["SHFE.rb2701"] == engine.instruments["SHFE.rb2701"].pre_settlement  # nothing traded
        assert engine.trading_day == "20261203"
        # Day by day up to and across the last trading day.
        while engine.trading_day != "20261215":
            await exchange.settle()
        alice = engine.users["alice"].account
        assert alice.positions["SHFE.rb2612"].volume_long == 4 and alice.margin > 0
        await exchange.insert_order(order("alice", "late", "BUY", "OPEN", vwap, 1))  # still trading today
        await exchange.cancel_order("alice", "late")
        balance_before = alice.balance
        await exchange.settle()  # settles 15 Dec: rb2612 expires, rb2712 is listed
        assert engine.trading_day == "20261216"
        expired = engine.instruments["SHFE.rb2612"]
        assert expired.expired
        position = alice.positions["SHFE.rb2612"]
        assert (position.volume_long, position.volume_short, position.margin) == (0, 0, 0.0)
        assert alice.margin == 0.0 and alice.balance == balance_before  # cash close-out at the settle price
        assert alice.available == alice.balance
        assert engine.users["bob"].account.positions["SHFE.rb2612"].volume_short == 0
        assert engine.open_interest["SHFE.rb2612"] == 0
        assert "SHFE.rb2712" in engine.instruments
        listed = engine.instruments["SHFE.rb2712"]
        assert listed.pre_open_interest == 0
        assert listed.pre_settlement == engine.instruments["SHFE.rb2711"].pre_settlement  # its neighbour
        refused = await exchange.insert_order(order("alice", "after", "BUY", "OPEN", vwap, 1))
        assert refused["status"] == "FINISHED" and "已到期" in refused["last_msg"]
        # Kept listed (expired: true) for keep_expired_days, then delisted with the flat positions.
        while "SHFE.rb2612" in engine.instruments:
            await exchange.settle()
        assert engine.trading_day == "20261223"  # the first trading day more than 7 days after 15 Dec
        assert "SHFE.rb2612" not in alice.positions
        seen["digest"] = engine.state_digest()
        seen["seq"] = engine.seq

    await run_exchange(tmp_path, clock, body)
    # The journal replays to exactly the same state, whatever the listing code would decide now.
    _, recovered = open_journal(tmp_path, lambda: Engine(InstrumentRegistry([])))
    assert recovered.engine.seq == seen["seq"]
    assert recovered.engine.state_digest() == seen["digest"]


async def test_the_expiry_notify_tells_the_holder_what_was_closed_out_at_what_price() -> None:
    engine = Engine(InstrumentRegistry(listing_update({}, [RB], "20261215", CALENDAR).new))
    ts = china(2026, 12, 15, 10)
    engine.apply(commands.UpsertInstrument(ts=ts, spec={"exchange_id": "SHFE", "instrument_id": "rb2612"}))
    for user in ("alice", "bob"):
        engine.apply(commands.OpenAccount(ts=ts, user_id=user, password_hash="x", init_cash=1e6))
    price = engine.instruments["SHFE.rb2612"].pre_settlement
    engine.apply(commands.Insert(ts=ts, order=order("bob", "s", "SELL", "OPEN", price)))
    engine.apply(commands.Insert(ts=ts, order=order("alice", "b", "BUY", "OPEN", price)))
    engine.flush()
    engine.apply(commands.Settle(ts=ts + 1, trading_day="20261216"))
    batch = engine.flush()
    (code, level, text) = batch.notifies["alice"][-1]
    assert (code, level) == (NOTIFY_CONTRACT_EXPIRED, "INFO")
    assert "SHFE.rb2612" in text and "多头 2 手" in text and str(price) in text
    assert "空头 2 手" in batch.notifies["bob"][-1][2]
    assert batch.users["alice"]["positions"]["SHFE.rb2612"]["volume_long"] == 0


async def test_a_restart_after_weeks_off_runs_every_settlement_in_between_then_lists_today(
    tmp_path: Path,
) -> None:
    clock = Clock(china(2026, 12, 2, 10))

    async def first_run(exchange: Exchange) -> None:
        await exchange.open_account("alice", "a-long-password")

    await run_exchange(tmp_path, clock, first_run)
    clock.now = china(2027, 1, 20, 10)  # seven weeks later, a Wednesday
    days: list[str] = []

    async def second_run(exchange: Exchange) -> None:
        engine = exchange.engine
        days.append(engine.trading_day)
        assert engine.trading_day == "20270120"
        live = sorted(s for s, i in engine.instruments.items() if not i.expired)
        assert live[0] == "SHFE.rb2701" or live[0] == "SHFE.rb2702"
        assert "SHFE.rb2612" not in engine.instruments  # expired 15 Dec, delisted a week later
        assert "SHFE.rb2712" in engine.instruments and "SHFE.rb2801" in engine.instruments

    await run_exchange(tmp_path, clock, second_run)
    assert days == ["20270120"]


async def test_a_saturday_start_is_on_mondays_trading_day() -> None:
    engine = Engine(InstrumentRegistry([]))
    exchange = Exchange(
        engine,
        clock=Clock(china(2026, 12, 5, 12)),  # Saturday noon
        listing=ProductListing([RB], CALENDAR),
        settle_at=dt.time(18, 0),
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(exchange.run)
        assert engine.trading_day == "20261207"
        assert "SHFE.rb2612" in engine.instruments
        nursery.cancel_scope.cancel()
