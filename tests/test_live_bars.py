"""Live bars kept across a restart: the pure rules (qaex.core.live_bars), the files (LiveBarStore) and
the task that writes them (LiveBarKeeper), in process. The real server's restart is
tests/test_live_bars_server.py."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import pytest
import trio
from conftest import pinned_instruments
from hypothesis import given, settings
from hypothesis import strategies as st

from qaex.core.history import BarColumns, ContractHistory
from qaex.core.kline import KlineSeries
from qaex.core.live_bars import (
    LiveBarPlan,
    compaction_limit,
    continue_history,
    kept_text,
    parse_kept,
    read_limit,
)
from qaex.core.market import MarketState
from qaex.exchange.live_bars import LiveBarKeeper, LiveBarStore

MINUTE = 60_000_000_000
DAY = 86_400 * 10**9
BASE = 1_796_000_000_000_000_000 // DAY * DAY + 16 * 3600 * 10**9 + 9 * 3600 * 10**9  # 01:00 UTC: 09:00 China
SYMBOL = "SHFE.rb2601"


def columns(starts: list[int], price: float = 100.0, volume: int = 5) -> BarColumns:
    bars = BarColumns()
    for i, start in enumerate(starts):
        bars.append(start, price + i, price + i + 1, price + i - 1, price + i, volume, 10, 10 + i)
    return bars


def datetimes(bars: BarColumns) -> list[int]:
    return list(bars.datetime)


# -- reading a kept file -------------------------------------------------------------------------------
def test_a_kept_file_round_trips() -> None:
    bars = columns([BASE + i * MINUTE for i in range(5)])
    kept = parse_kept(kept_text(SYMBOL, bars, 2, header=True), "f.csv", SYMBOL)
    assert kept.bars == bars and kept.rows == 5 and kept.skipped == 0


def test_a_torn_last_line_and_bad_rows_are_skipped_and_reported() -> None:
    good = columns([BASE + i * MINUTE for i in range(4)])
    lines = kept_text(SYMBOL, good, 2, header=True).splitlines()
    hostile = [
        lines[0],
        lines[1],
        "garbage,,,",
        lines[2].replace(",10,", ",-3,", 1),  # a negative open interest
        lines[2],
        lines[1],  # older than the row before
        "x" * 10_000,
        lines[3],
        "\x00\xff\ufffd",
        lines[4][:17],  # torn: no line end
    ]
    kept = parse_kept("\n".join(hostile), "f.csv", SYMBOL)
    assert datetimes(kept.bars) == datetimes(good)[:3]
    assert kept.skipped == 6
    assert len(kept.problems) == 5  # at most MAX_PROBLEMS texts; all are counted
    torn = parse_kept("\n".join([lines[0], lines[1], lines[2][:30]]), "f.csv", SYMBOL)
    assert torn.skipped == 1 and "torn last line" in torn.problems[0] and len(torn.bars) == 1


def test_a_bar_written_again_replaces_the_row_before() -> None:
    first = columns([BASE, BASE + MINUTE])
    again = columns([BASE + MINUTE], price=300.0)
    text = kept_text(SYMBOL, first, 2, header=True) + kept_text(SYMBOL, again, 2, header=False)
    kept = parse_kept(text, "f.csv", SYMBOL)
    assert datetimes(kept.bars) == [BASE, BASE + MINUTE] and kept.bars.close[1] == 300.0


def test_a_file_of_another_symbol_is_skipped_whole() -> None:
    text = kept_text("SHFE.cu2601", columns([BASE]), 2, header=True)
    kept = parse_kept(text, "f.csv", SYMBOL)
    assert not len(kept.bars) and kept.skipped == 1


@settings(max_examples=80, deadline=None)
@given(count=st.integers(0, 30), cut=st.floats(0.0, 1.0))
def test_a_file_cut_at_any_byte_gives_exactly_the_rows_written_whole(count: int, cut: float) -> None:
    bars = columns([BASE + i * MINUTE for i in range(count)])
    text = kept_text(SYMBOL, bars, 2, header=True)
    at = int(len(text) * cut)
    kept = parse_kept(text[:at], "f.csv", SYMBOL)
    whole = text[:at].count("\n") - 1  # the header's line end is the first
    assert datetimes(kept.bars) == datetimes(bars)[: max(whole, 0)]


@settings(max_examples=200, deadline=None)
@given(
    flips=st.lists(st.tuples(st.floats(0.0, 1.0), st.sampled_from(list(",.-0123456789\n\r eE+naif#N/A\x00"))),
                   max_size=12),
    noise=st.text(max_size=200),
)  # fmt: skip
def test_a_damaged_file_never_raises_and_keeps_only_valid_increasing_bars(
    flips: list[tuple[float, str]], noise: str
) -> None:
    text = list(kept_text(SYMBOL, columns([BASE + i * MINUTE for i in range(8)]), 2, header=True) + noise)
    for at, char in flips:
        text[min(int(at * len(text)), len(text) - 1)] = char
    kept = parse_kept("".join(text), "f.csv", SYMBOL)
    times = datetimes(kept.bars)
    assert times == sorted(set(times))
    for bar in kept.bars.bars():
        assert bar["high"] >= max(bar["open"], bar["close"]) and bar["low"] <= min(bar["open"], bar["close"])
        assert min(bar["volume"], bar["open_oi"], bar["close_oi"]) >= 0


# -- joining onto history ------------------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(
    history=st.lists(st.integers(0, 200), max_size=40, unique=True),
    kept=st.lists(st.integers(0, 260), max_size=40, unique=True),
)
def test_kept_bars_continue_history_with_no_gap_overlap_or_duplicate(
    history: list[int], kept: list[int]
) -> None:
    old = columns([BASE + m * MINUTE for m in sorted(history)], price=100.0)
    new = columns([BASE + m * MINUTE for m in sorted(kept)], price=500.0)
    joined = continue_history(old, new)
    times = datetimes(joined)
    assert times == sorted(set(times))  # no overlap, no duplicates
    if not history:
        assert joined == new
        return
    last = BASE + max(history) * MINUTE
    after = [t for t in datetimes(new) if t >= last]
    assert times == [t for t in datetimes(old) if t < last or (t == last and last not in after)] + after
    # history where it is, the kept bars from its last one on (no gap): the one at its end replaces it
    for index, at in enumerate(times):
        assert joined.close[index] >= (500.0 if at in after else 0.0)
        if at not in after:
            assert joined.close[index] < 500.0


# -- what is appended when -----------------------------------------------------------------------------
def trade(series: KlineSeries, price: float, at: int) -> None:
    series.on_trade(price, 1, at, 100)


def test_the_plan_hands_out_finished_bars_once_and_the_bar_in_progress_at_a_final_flush() -> None:
    series = KlineSeries(SYMBOL, MINUTE)
    series.attach_history(columns([BASE - 10 * MINUTE, BASE - MINUTE]))
    plan = LiveBarPlan()
    key = (SYMBOL, MINUTE)
    assert not len(plan.take(key, series, BASE + 5 * MINUTE))  # not kept yet
    last = series.get(series.last_id)
    plan.begin(key, last)
    trade(series, 101.0, BASE + 5)
    assert not len(plan.take(key, series, BASE + 30 * 10**9))  # in progress
    trade(series, 102.0, BASE + MINUTE + 5)
    first = plan.take(key, series, BASE + MINUTE + 10)
    assert datetimes(first) == [BASE]
    plan.written(key, first)
    assert not len(plan.take(key, series, BASE + MINUTE + 20))
    final = plan.take(key, series, BASE + MINUTE + 30, final=True)
    assert datetimes(final) == [BASE + MINUTE]
    plan.written(key, final)
    trade(series, 103.0, BASE + MINUTE + 40)  # the bar in progress changed after it was written
    again = plan.take(key, series, BASE + 2 * MINUTE + 1)
    assert datetimes(again) == [BASE + MINUTE] and again.close[0] == 103.0
    plan.written(key, again)
    series.on_time(BASE + 4 * MINUTE)  # gap bars are bars too
    assert datetimes(plan.take(key, series, BASE + 5 * MINUTE)) == [BASE + 2 * MINUTE, BASE + 3 * MINUTE,
                                                                   BASE + 4 * MINUTE]  # fmt: skip


def test_a_kept_bar_and_the_new_runs_first_trades_in_the_same_minute_are_one_bar() -> None:
    series = KlineSeries(SYMBOL, MINUTE)
    trade(series, 90.0, BASE + 50 * 10**9)  # the new run traded before the history was attached
    kept = columns([BASE - MINUTE, BASE])  # the old run's bar of this minute, written at its shutdown
    series.attach_history(kept)
    bar = series.get(series.last_id)
    assert bar is not None and series.last_id == 1
    assert bar["open"] == kept.open[1] and bar["close"] == 90.0
    assert bar["volume"] == kept.volume[1] + 1 and bar["low"] == 90.0


def test_a_trade_in_the_kept_last_bar_makes_the_series_live() -> None:
    series = KlineSeries(SYMBOL, MINUTE)
    series.attach_history(columns([BASE - MINUTE, BASE]))  # the old run's bar of this minute, kept
    assert series.resuming
    trade(series, 90.0, BASE + 50 * 10**9)  # the new run trades in the same minute
    assert series.last_id == 1 and series.get(1)["volume"] == 6 and not series.resuming
    series.on_time(BASE + 4 * MINUTE)  # running on: gap bars, as for any live series
    times = [series.get(i)["datetime"] for i in range(2, series.last_id + 1)]  # type: ignore[index]
    assert times == [BASE + n * MINUTE for n in (1, 2, 3, 4)]


@settings(max_examples=120, deadline=None)
@given(
    steps=st.lists(
        st.tuples(
            st.integers(0, 150),  # seconds on
            st.sampled_from(["trade", "timer", "flush", "final", "nothing"]),
            st.integers(0, 20),  # price offset
        ),
        max_size=50,
    )
)
def test_the_kept_rows_are_the_series_as_of_the_last_flush(steps: list[tuple[int, str, int]]) -> None:
    """Whatever the trades, timer ticks and flushes, a file of the appended rows reads back as exactly
    the bars the series held at its last flush (finished ones; all at a final flush), after history."""
    history = columns([BASE - 3 * MINUTE, BASE - MINUTE])
    series = KlineSeries(SYMBOL, MINUTE)
    series.attach_history(history)
    plan = LiveBarPlan()
    key = (SYMBOL, MINUTE)
    plan.begin(key, history.bar(len(history) - 1))
    text = kept_text(SYMBOL, BarColumns(), 2, header=True)
    expected: list[dict[str, Any]] = []
    in_progress: int | None = None
    now = BASE
    for seconds, action, offset in steps:
        now += seconds * 10**9
        if action == "trade":
            trade(series, 100.0 + offset, now)
        elif action == "timer":
            series.on_time(now)
        elif action in ("flush", "final"):
            bars = plan.take(key, series, now, final=action == "final")
            text += kept_text(SYMBOL, bars, 2, header=False)
            plan.written(key, bars)
            expected = list(series.window(series.lower_bound(BASE), series.last_id).values())
            in_progress = None
            if action == "flush" and expected and series.bar_start(now) <= expected[-1]["datetime"]:
                in_progress = expected.pop()["datetime"]
    kept = parse_kept(text, "f.csv", SYMBOL)
    assert kept.skipped == 0
    written = list(kept.bars.bars())
    assert written[: len(expected)] == expected
    # and at most the bar in progress, as an earlier final flush wrote it
    assert written[len(expected) :] in ([], [next((b for b in written if b["datetime"] == in_progress), {})])
    joined = continue_history(history, kept.bars)
    assert datetimes(joined) == datetimes(history) + [bar["datetime"] for bar in written]


# -- the files -----------------------------------------------------------------------------------------
def history_of(minutes: BarColumns, days: BarColumns | None = None) -> ContractHistory:
    return ContractHistory(SYMBOL, minutes, days if days is not None else BarColumns(), [], [])


def test_the_store_appends_after_a_torn_line_and_joins_onto_history(tmp_path: Path) -> None:
    store = LiveBarStore(tmp_path, keep=100)
    store.append(SYMBOL, 60, columns([BASE, BASE + MINUTE]), 2)
    path = store.path(SYMBOL, 60)
    with open(path, "a") as file:
        file.write("1796000,17960")  # kill -9 in the middle of a row
    store.append(SYMBOL, 60, columns([BASE + 2 * MINUTE], price=200.0), 2)
    history = history_of(columns([BASE - 2 * MINUTE, BASE - MINUTE, BASE]))
    joined = LiveBarStore(tmp_path, keep=100).join(history)
    assert datetimes(joined.minutes) == [
        BASE - 2 * MINUTE,
        BASE - MINUTE,
        BASE,
        BASE + MINUTE,
        BASE + 2 * MINUTE,
    ]
    assert joined.minutes.close[-1] == 200.0
    assert not len(joined.days)


def test_a_file_past_its_limit_is_compacted_to_the_newest_bars(tmp_path: Path) -> None:
    store = LiveBarStore(tmp_path, keep=10)
    for i in range(compaction_limit(10) + 1):
        store.append(SYMBOL, 60, columns([BASE + i * MINUTE]), 2)
    assert store.compacted == 1
    kept = LiveBarStore(tmp_path, keep=10).load(SYMBOL, 60)
    assert datetimes(kept) == [BASE + i * MINUTE for i in range(compaction_limit(10) + 1 - 10, 14)]
    assert store.path(SYMBOL, 60).read_text().startswith("datetime,")


def test_a_hostile_file_is_read_bounded_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    store = LiveBarStore(tmp_path, keep=10)
    path = store.path(SYMBOL, 60)
    good = kept_text(SYMBOL, columns([BASE + i * MINUTE for i in range(3)]), 2, header=False)
    path.write_bytes(os.urandom(5_000_000) + b"\n" + good.encode())
    with caplog.at_level(logging.WARNING, "qaex.market.live"):
        assert datetimes(store.load(SYMBOL, 60)) == [BASE + i * MINUTE for i in range(3)]
    assert read_limit(10) < 10_000  # what was read: the tail, not 5 MB
    assert "rows skipped" in caplog.text
    os.mkfifo(store.path(SYMBOL, 86400))  # a reader would block forever on a FIFO
    assert not len(store.load(SYMBOL, 86400))
    with pytest.raises(OSError):
        store.append(SYMBOL, 86400, columns([BASE]), 2)
    store.path("SHFE.cu2601", 60).mkdir()
    assert not len(store.load("SHFE.cu2601", 60))


# -- the task ------------------------------------------------------------------------------------------
class Clock:
    def __init__(self, now: int) -> None:
        self.now = now

    def __call__(self) -> int:
        return self.now


def keeper_on(tmp_path: Path, clock: Clock) -> tuple[LiveBarKeeper, MarketState]:
    state = MarketState(pinned_instruments(), with_history=True)
    state.list_instrument(SYMBOL, clock.now)
    history = history_of(columns([BASE - 2 * MINUTE, BASE - MINUTE]), columns([BASE - DAY]))
    state.attach_history(SYMBOL, history)
    keeper = LiveBarKeeper(LiveBarStore(tmp_path, keep=100), state, clock=clock)
    keeper.started(SYMBOL, history)
    return keeper, state


def bar_times(path: Path) -> list[int]:
    return [int(line.split(",")[1]) for line in path.read_text().splitlines()[1:]]


async def test_the_keeper_writes_finished_bars_and_the_rest_at_shutdown(tmp_path: Path) -> None:
    clock = Clock(BASE + 10)
    keeper, state = keeper_on(tmp_path, clock)
    series = state.klines[(SYMBOL, MINUTE)]
    trade(series, 101.0, BASE + 10)
    trade(series, 102.0, BASE + MINUTE + 10)
    trade(state.klines[(SYMBOL, DAY)], 102.0, BASE + MINUTE + 10)
    clock.now = BASE + MINUTE + 20
    await keeper.flush()
    minutes = keeper.store.path(SYMBOL, 60)
    assert bar_times(minutes) == [BASE]
    days = keeper.store.path(SYMBOL, 86400)
    assert len(bar_times(days)) == 1  # the day bar in progress, as of now
    trade(state.klines[(SYMBOL, DAY)], 103.0, BASE + MINUTE + 30)
    await keeper.flush()
    await keeper.flush()
    assert len(days.read_text().splitlines()) == 3  # written again once: it changed
    async with trio.open_nursery() as nursery:
        await nursery.start(keeper.run)
        nursery.cancel_scope.cancel()  # SIGTERM: the shielded flush writes the bars in progress
    assert bar_times(minutes) == [BASE, BASE + MINUTE]
    assert len(set(bar_times(days))) == 1
    # A restart: history with the kept bars after it, the new run's bars after those.
    joined = keeper.store.join(history_of(columns([BASE - 2 * MINUTE, BASE - MINUTE]), columns([BASE - DAY])))
    assert datetimes(joined.minutes) == [BASE - 2 * MINUTE, BASE - MINUTE, BASE, BASE + MINUTE]
    assert joined.minutes.close[-1] == 102.0


async def test_a_settlement_flushes_the_day_bar_at_once(tmp_path: Path) -> None:
    clock = Clock(BASE + 10)
    keeper, state = keeper_on(tmp_path, clock)
    day: Any = state.klines[(SYMBOL, DAY)]
    trade(day, 101.0, BASE + 10)
    trade(state.klines[(SYMBOL, MINUTE)], 101.0, BASE + 10)
    days = keeper.store.path(SYMBOL, 86400)
    with trio.move_on_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(keeper.run)
            keeper.settled()
            for _ in range(500):
                if days.exists():
                    break
                await trio.sleep(0.01)
            nursery.cancel_scope.cancel()
    assert len(bar_times(days)) == 1 and keeper.flushes >= 1
    assert bar_times(keeper.store.path(SYMBOL, 60)) == [BASE]  # the minute in progress too


def test_the_market_service_joins_kept_bars_at_attach_and_skips_a_hostile_file(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from qaex.core.engine import Engine
    from qaex.exchange.history import HistoryStore
    from qaex.exchange.market import MarketData

    engine = Engine(pinned_instruments())
    clock = Clock(BASE + 30 * 10**9)
    history_store = HistoryStore(tmp_path / "history")
    live = LiveBarStore(tmp_path / "history" / "live", keep=10_000)
    kept = columns([BASE - 2 * MINUTE, BASE - MINUTE])  # a run before this one (after history's end)
    live.path(SYMBOL, 60).write_text(kept_text(SYMBOL, kept, 0, header=True) + "not,a,bar\n" + "1796,17")
    live.path(SYMBOL, 86400).write_bytes(os.urandom(50_000))
    market = MarketData(engine, clock=clock, history_store=history_store, live_bars=live)
    with caplog.at_level(logging.WARNING, "qaex.market.live"):
        series = trio.run(market.kline_history, SYMBOL, MINUTE)  # a client asks first: loaded at once
    assert "rows skipped" in caplog.text
    window = list(series.window(series.first_id, series.last_id).values())
    assert [bar["datetime"] for bar in window[-2:]] == datetimes(kept)
    assert window[-3]["datetime"] < BASE - 2 * MINUTE  # history's last bar, then the kept ones
    assert market.keeper is not None and market.keeper.plan.keeping((SYMBOL, MINUTE))
    day = market.klines[(SYMBOL, DAY)]
    assert len(day) == 250  # history's days: the noise was skipped
