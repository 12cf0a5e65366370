"""The daily settlement schedule, and the exchange running it on time."""

from __future__ import annotations

import datetime as dt

import pytest
import trio
import trio.testing

from qaex.core.calendar import CHINA_TZ, default_holiday_calendar, next_settlement, parse_clock_time
from qaex.core.commands import Insert, OpenAccount
from qaex.core.engine import Engine
from qaex.core.orders import InsertOrder
from qaex.exchange.exchange import Exchange


def ns(year: int, month: int, day: int, hour: int, minute: int) -> int:
    return int(dt.datetime(year, month, day, hour, minute, tzinfo=CHINA_TZ).timestamp()) * 1_000_000_000


def test_clock_times_parse_and_bad_ones_name_the_text() -> None:
    assert parse_clock_time("15:30") == dt.time(15, 30)
    for bad in ("25:00", "1530", "x:y"):
        with pytest.raises(ValueError, match=bad.split(":")[0]):
            parse_clock_time(bad)


def test_next_settlement_is_today_before_the_time_and_tomorrow_after_it() -> None:
    at = dt.time(15, 30)
    # 2026-11-26 is a Thursday.
    assert next_settlement(ns(2026, 11, 26, 9, 0), at) == ns(2026, 11, 26, 15, 30)
    assert next_settlement(ns(2026, 11, 26, 15, 30), at) == ns(2026, 11, 27, 15, 30)
    assert next_settlement(ns(2026, 11, 26, 21, 0), at) == ns(2026, 11, 27, 15, 30)


def test_next_settlement_skips_the_weekend() -> None:
    at = dt.time(15, 30)
    assert next_settlement(ns(2026, 11, 27, 16, 0), at) == ns(2026, 11, 30, 15, 30)  # Friday -> Monday
    assert next_settlement(ns(2026, 11, 28, 10, 0), at) == ns(2026, 11, 30, 15, 30)  # Saturday


def test_with_a_holiday_calendar_the_settlement_skips_closures() -> None:
    at, holidays = dt.time(15, 30), default_holiday_calendar()
    # 2026-09-30 is the last trading day before National Day (10-01 .. 10-07).
    assert next_settlement(ns(2026, 9, 30, 16, 0), at, holidays) == ns(2026, 10, 8, 15, 30)
    assert next_settlement(ns(2026, 9, 30, 16, 0), at) == ns(2026, 10, 1, 15, 30)  # weekdays only
    assert next_settlement(ns(2026, 9, 30, 9, 0), at, holidays) == ns(2026, 9, 30, 15, 30)


async def test_the_exchange_settles_every_weekday_at_the_configured_time(
    autojump_clock: trio.testing.MockClock,
) -> None:
    start = ns(2026, 11, 26, 14, 0)  # Thursday 14:00 China time

    def wall_clock() -> int:
        return start + int(trio.current_time() * 1e9)

    async with trio.open_nursery() as nursery:
        exchange = Exchange(Engine(), clock=wall_clock, settle_at=dt.time(15, 30), mark_interval=3600)
        await nursery.start(exchange.run)
        # Not open_account: its scrypt runs in a thread, and the autojump clock would race ahead.
        await exchange.router.execute(
            lambda ts: OpenAccount(ts=ts, user_id="a", password_hash="x", init_cash=1e6)
        )
        await exchange.router.execute(
            lambda ts: Insert(
                ts=ts,
                order=InsertOrder(
                    user_id="a", order_id="o1", exchange_id="SHFE", instrument_id="rb2601",
                    direction="BUY", offset="OPEN", volume=1, limit_price=3000.0,
                ),
            )
        )  # fmt: skip
        day = exchange.engine.trading_day
        assert day == "20261126"
        await trio.sleep(3600 + 1800 + 1)  # past 15:30
        assert exchange.engine.trading_day > day
        assert exchange.engine.users["a"].orders == {}  # the resting order expired with the day
        second = exchange.engine.trading_day
        await trio.sleep(24 * 3600)  # Friday 15:30
        assert exchange.engine.trading_day > second
        nursery.cancel_scope.cancel()
