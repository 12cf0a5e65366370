"""Tick and K-line series: alignment, gap bars, ids, bounds and patches."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from qaex.core.kline import KlineSeries, TickSeries, trading_day_start_ns

CST = timezone(timedelta(hours=8))
S = 1_000_000_000
MINUTE = 60 * S
DAY = 86_400 * S


def cst(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> int:
    """Epoch ns of a local (UTC+8) wall-clock time."""
    return int(datetime(year, month, day, hour, minute, second, tzinfo=CST).timestamp()) * S


MON_0900 = cst(2025, 11, 24, 9, 0)  # a Monday


def bars(series: KlineSeries) -> dict[str, dict[str, int | float]]:
    return series.window(series.first_id, series.last_id)


# -- alignment --------------------------------------------------------------------------------------
def test_three_second_bars_start_on_multiples_of_three_seconds() -> None:
    series = KlineSeries("SHFE.cu2601", 3 * S)
    series.on_trade(100.0, 1, MON_0900 + 4 * S + 500, open_interest=10)
    series.on_trade(101.0, 2, MON_0900 + 5 * S, open_interest=12)
    series.on_trade(102.0, 1, MON_0900 + 6 * S, open_interest=13)
    assert bars(series) == {
        "0": {"datetime": MON_0900 + 3 * S, "open": 100.0, "high": 101.0, "low": 100.0, "close": 101.0,
              "volume": 3, "open_oi": 10, "close_oi": 12},
        "1": {"datetime": MON_0900 + 6 * S, "open": 102.0, "high": 102.0, "low": 102.0, "close": 102.0,
              "volume": 1, "open_oi": 12, "close_oi": 13},
    }  # fmt: skip


def test_minute_bars_aggregate_open_high_low_close_volume() -> None:
    series = KlineSeries("SHFE.cu2601", MINUTE)
    for offset, price in [(1, 50.0), (20, 53.0), (40, 49.0), (59, 51.0)]:
        series.on_trade(price, 2, MON_0900 + offset * S, open_interest=100 + offset)
    bar = series.get(0)
    assert bar is not None
    assert [bar[key] for key in ("datetime", "open", "high", "low", "close")] == [MON_0900, 50, 53, 49, 51]
    assert (bar["volume"], bar["open_oi"], bar["close_oi"]) == (8, 101, 159)


def test_hour_bars_start_on_the_local_hour() -> None:
    series = KlineSeries("SHFE.cu2601", 3600 * S)
    assert series.bar_start(cst(2025, 11, 24, 10, 59, 59)) == cst(2025, 11, 24, 10, 0)


def test_day_bar_is_stamped_with_the_trading_day_midnight() -> None:
    series = KlineSeries("SHFE.cu2601", DAY)
    series.on_trade(100.0, 1, cst(2025, 11, 24, 14, 0), open_interest=1)
    assert series.get(0)["datetime"] == cst(2025, 11, 24)  # type: ignore[index]


def test_night_session_belongs_to_the_next_trading_day() -> None:
    series = KlineSeries("SHFE.cu2601", DAY)
    series.on_trade(100.0, 1, cst(2025, 11, 24, 21, 30), open_interest=1)
    series.on_trade(101.0, 1, cst(2025, 11, 25, 9, 30), open_interest=2)
    assert len(series) == 1
    assert series.get(0)["datetime"] == cst(2025, 11, 25)  # type: ignore[index]


def test_friday_night_belongs_to_monday() -> None:
    assert trading_day_start_ns(cst(2025, 11, 28, 21, 0)) == cst(2025, 12, 1)
    assert trading_day_start_ns(cst(2025, 11, 29, 1, 0)) == cst(2025, 12, 1)


def test_day_gap_bars_skip_weekends() -> None:
    series = KlineSeries("SHFE.cu2601", DAY)
    series.on_trade(100.0, 1, cst(2025, 11, 27, 10, 0), open_interest=1)  # Thursday
    series.on_time(cst(2025, 12, 1, 10, 0))  # Monday
    thursday, friday, monday = cst(2025, 11, 27), cst(2025, 11, 28), cst(2025, 12, 1)
    assert [bar["datetime"] for bar in bars(series).values()] == [thursday, friday, monday]


def test_week_bars_start_on_monday() -> None:
    series = KlineSeries("SHFE.cu2601", 7 * DAY)
    assert series.bar_start(cst(2025, 11, 27, 10, 0)) == cst(2025, 11, 24)


@pytest.mark.parametrize("duration_ns", [0, -S, S // 2, DAY + 3600 * S])
def test_durations_that_are_not_whole_seconds_or_whole_days_are_refused(duration_ns: int) -> None:
    with pytest.raises(ValueError):
        KlineSeries("SHFE.cu2601", duration_ns)


# -- the timer and gap bars -------------------------------------------------------------------------
def test_no_bars_before_the_first_trade() -> None:
    series = KlineSeries("SHFE.cu2601", MINUTE)
    series.on_time(MON_0900 + 10 * MINUTE)
    assert series.last_id == -1
    assert series.take_patch() is None


def test_timer_opens_flat_gap_bars_carrying_the_previous_close() -> None:
    series = KlineSeries("SHFE.cu2601", MINUTE)
    series.on_trade(50.0, 1, MON_0900, open_interest=10)
    series.on_trade(52.0, 1, MON_0900 + 30 * S, open_interest=11)
    series.on_time(MON_0900 + 3 * MINUTE + S)
    assert series.last_id == 3
    flat = {"open": 52.0, "high": 52.0, "low": 52.0, "close": 52.0, "volume": 0}
    flat |= {"open_oi": 11, "close_oi": 11}
    for bar_id in (1, 2, 3):
        assert series.get(bar_id) == {"datetime": MON_0900 + bar_id * MINUTE, **flat}


def test_timer_inside_the_current_bar_changes_nothing() -> None:
    series = KlineSeries("SHFE.cu2601", MINUTE)
    series.on_trade(50.0, 1, MON_0900, open_interest=10)
    series.take_patch()
    series.on_time(MON_0900 + 59 * S)
    assert series.take_patch() is None


def test_first_trade_in_a_gap_bar_sets_its_open() -> None:
    series = KlineSeries("SHFE.cu2601", MINUTE)
    series.on_trade(50.0, 1, MON_0900, open_interest=10)
    series.on_time(MON_0900 + MINUTE)
    series.on_trade(55.0, 2, MON_0900 + MINUTE + S, open_interest=12)
    bar = series.get(1)
    assert bar is not None
    assert (bar["open"], bar["high"], bar["low"], bar["close"], bar["volume"]) == (55.0, 55.0, 55.0, 55.0, 2)
    assert (bar["open_oi"], bar["close_oi"]) == (10, 12)


def test_trade_after_a_silent_period_fills_the_gap() -> None:
    series = KlineSeries("SHFE.cu2601", MINUTE)
    series.on_trade(50.0, 1, MON_0900, open_interest=10)
    series.on_trade(60.0, 1, MON_0900 + 5 * MINUTE, open_interest=11)
    assert series.last_id == 5
    assert [bar["close"] for bar in bars(series).values()] == [50.0] * 5 + [60.0]


def test_late_trade_goes_into_the_newest_bar_not_a_closed_one() -> None:
    series = KlineSeries("SHFE.cu2601", MINUTE)
    series.on_trade(50.0, 1, MON_0900, open_interest=10)
    series.on_trade(51.0, 1, MON_0900 + MINUTE, open_interest=11)
    series.on_trade(49.0, 1, MON_0900 + 30 * S, open_interest=12)
    assert series.get(0)["close"] == 50.0  # type: ignore[index]
    assert series.get(1)["low"] == 49.0  # type: ignore[index]


# -- ids, bounds, patches ---------------------------------------------------------------------------
def test_ids_are_contiguous_from_zero() -> None:
    series = KlineSeries("SHFE.cu2601", 3 * S)
    for step in range(10):
        series.on_trade(100.0 + step, 1, MON_0900 + step * 3 * S, open_interest=step)
    assert list(bars(series)) == [str(i) for i in range(10)]
    assert (series.first_id, series.last_id) == (0, 9)


def test_closed_bars_never_change() -> None:
    series = KlineSeries("SHFE.cu2601", MINUTE)
    series.on_trade(50.0, 1, MON_0900, open_interest=10)
    series.on_trade(51.0, 1, MON_0900 + MINUTE, open_interest=11)
    closed = series.get(0)
    for step in range(1, 100):
        series.on_trade(40.0 + step % 30, 1, MON_0900 + MINUTE + step * S, open_interest=11 + step)
    assert series.get(0) == closed


def test_history_is_bounded_and_ids_keep_increasing() -> None:
    series = KlineSeries("SHFE.cu2601", S, max_len=5)
    for step in range(12):
        series.on_trade(100.0, 1, MON_0900 + step * S, open_interest=1)
    assert len(series) == 5
    assert (series.first_id, series.last_id) == (7, 11)
    assert series.get(6) is None
    assert list(bars(series)) == ["7", "8", "9", "10", "11"]


def test_a_gap_longer_than_the_history_costs_only_max_len_bars() -> None:
    series = KlineSeries("SHFE.cu2601", S, max_len=5)
    series.on_trade(100.0, 1, MON_0900, open_interest=1)
    series.on_time(MON_0900 + 2 * DAY)
    assert series.last_id == 2 * 86_400
    assert len(series) == 5
    assert series.get(series.last_id)["datetime"] == MON_0900 + 2 * DAY  # type: ignore[index]
    assert series.get(series.first_id)["datetime"] == MON_0900 + 2 * DAY - 4 * S  # type: ignore[index]


def test_take_patch_carries_changed_bars_and_last_id() -> None:
    series = KlineSeries("SHFE.cu2601", MINUTE)
    series.on_trade(50.0, 1, MON_0900, open_interest=10)
    series.take_patch()
    series.on_trade(51.0, 1, MON_0900 + 10 * S, open_interest=11)
    series.on_trade(52.0, 1, MON_0900 + MINUTE, open_interest=12)
    patch = series.take_patch()
    assert patch is not None
    body = patch["klines"]["SHFE.cu2601"]["60000000000"]
    assert body["last_id"] == 1
    assert set(body["data"]) == {"0", "1"}
    assert body["data"]["0"]["close"] == 51.0
    assert series.take_patch() is None


def test_patch_bars_are_copies_that_later_trades_do_not_touch() -> None:
    series = KlineSeries("SHFE.cu2601", MINUTE)
    series.on_trade(50.0, 1, MON_0900, open_interest=10)
    patch = series.take_patch()
    series.on_trade(51.0, 1, MON_0900 + S, open_interest=11)
    assert patch is not None
    assert patch["klines"]["SHFE.cu2601"]["60000000000"]["data"]["0"]["close"] == 50.0


def test_window_clips_to_kept_bars() -> None:
    series = KlineSeries("SHFE.cu2601", S, max_len=3)
    for step in range(6):
        series.on_trade(100.0, 1, MON_0900 + step * S, open_interest=1)
    assert list(series.window(0, 100)) == ["3", "4", "5"]
    assert series.window(10, 20) == {}


def test_lower_bound_and_find_by_datetime() -> None:
    series = KlineSeries("SHFE.cu2601", MINUTE)
    for step in (0, 1, 2):
        series.on_trade(100.0, 1, MON_0900 + step * MINUTE, open_interest=1)
    assert series.lower_bound(MON_0900 + 30 * S) == 1
    assert series.lower_bound(MON_0900 + MINUTE) == 1
    assert series.lower_bound(MON_0900 + 10 * MINUTE) == 3
    assert series.find(MON_0900 + MINUTE) == 1
    assert series.find(MON_0900 + 30 * S) is None


# -- ticks ------------------------------------------------------------------------------------------
def tick(ts_ns: int, price: float, volume: int) -> dict[str, int | float]:
    return {"datetime": ts_ns, "last_price": price, "volume": volume}


def test_ticks_are_numbered_from_zero_and_patched_under_ticks() -> None:
    series = TickSeries("SHFE.cu2601")
    assert series.append(tick(MON_0900, 100.0, 1)) == 0
    assert series.append(tick(MON_0900 + 1, 101.0, 2)) == 1
    data = {"0": tick(MON_0900, 100.0, 1), "1": tick(MON_0900 + 1, 101.0, 2)}
    assert series.take_patch() == {"ticks": {"SHFE.cu2601": {"last_id": 1, "data": data}}}
    assert series.take_patch() is None


def test_tick_history_is_bounded() -> None:
    series = TickSeries("SHFE.cu2601", max_len=2)
    for step in range(5):
        series.append(tick(MON_0900 + step, 100.0, step))
    assert (series.first_id, series.last_id) == (3, 4)
    patch = series.take_patch()
    assert patch is not None
    assert set(patch["ticks"]["SHFE.cu2601"]["data"]) == {"3", "4"}
