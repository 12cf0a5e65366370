"""Replay (QAEX_MARKET_REPLAY): the market maker follows recorded bars or ticks, then walks again.

Recordings replayed faster than real time under trio's mock clock: the quote's best bid is within two
ticks of the recorded price after at least 90 % of the recorded changes, a user's market order fills
near the recorded price, a replay with one file and seed trades and quotes exactly alike twice, and when
the recording ends the maker goes back to its random walk from the last price.

Resumption: the simulator reports how far the replay has played (every REPLAY_KEEP_EVERY seconds and
when it stops); a simulator given those positions goes on from there, and one whose recording had ended
walks from the last price. The keeper of ``replay.json`` (qaex.exchange.replay_keeper) gives them back
for the same recording and speed only, and ignores a damaged file with a WARNING.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import trio
import trio.testing

from qaex.core.commands import OpenAccount
from qaex.core.engine import Engine
from qaex.core.history import BarColumns, HistoryFileError, to_csv
from qaex.core.orders import InsertOrder
from qaex.core.replay import MAX_TICK_GAP_NS, RESUME_GAP_NS, ReplayTrack, track_from_bars, track_from_ticks
from qaex.core.tick_file import TickColumns, tick_fields, ticks_to_csv
from qaex.exchange import replay_keeper
from qaex.exchange.exchange import Exchange
from qaex.exchange.history import ImportRefused, load_replay
from qaex.exchange.market import MarketData
from qaex.exchange.replay_keeper import FILE_NAME, ReplayKeeper
from qaex.exchange.simulator import MAKER, REPLAY_KEEP_EVERY, REPLAY_STEP_MIN, TAKER, LiquiditySimulator

S = 1_000_000_000
MINUTE = 60 * S
T0 = 1_763_946_000 * S  # 2025-11-24 09:00 UTC+8, a Monday
CU = "SHFE.cu2601"
CU_TICK = 10.0


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


def tick_recording(start: float, count: int = 160, seed: int = 5) -> TickColumns:
    """Ticks every 0.5 s (a 5-minute break in the middle), the price moving 0-3 ticks at a time."""
    rng = random.Random(seed)
    ticks = TickColumns(5)
    price, volume, ns = start, 0, T0
    for index in range(count):
        ns += 600 * S if index == count // 2 else S // 2
        price += CU_TICK * rng.choice([-3, -2, -1, 0, 0, 1, 2, 3])
        volume += rng.randint(0, 8)
        values = {name: (3.0 if kind == "count" else price) for name, kind in tick_fields(5)}
        values.update(last_price=price, volume=volume, open_interest=5000)
        ticks.append(ns, values)
    return ticks


def test_a_track_plays_open_low_high_close_then_ends() -> None:
    bars = BarColumns()
    bars.append(0, 100.0, 104.0, 98.0, 103.0, 1, 0, 0)  # rising: low before high
    bars.append(MINUTE, 103.0, 105.0, 101.0, 102.0, 1, 0, 0)  # falling: high before low
    track = track_from_bars(bars)
    quarter = MINUTE // 4
    assert [track.price_at(k * quarter) for k in range(8)] == [100, 98, 104, 103, 103, 105, 101, 102]
    assert track.price_at(7 * quarter + 1) is None  # ended
    assert track.next_change(0) == quarter and track.next_change(7 * quarter) is None


def test_a_tick_track_plays_each_price_change_and_shortens_breaks() -> None:
    ticks = TickColumns(1)
    for ns, price in [
        (0, 100.0),
        (S, 100.0),
        (2 * S, 101.0),
        (2 * S + MAX_TICK_GAP_NS + 1, 99.0),
        (3 * S + MAX_TICK_GAP_NS, 99.0),
    ]:
        values = {name: (1.0 if kind == "count" else price) for name, kind in tick_fields(1)}
        ticks.append(ns, values)
    ticks.append(
        4 * S + MAX_TICK_GAP_NS,
        {name: float("nan") if kind != "count" else 1.0 for name, kind in tick_fields(1)},
    )
    track = track_from_ticks(ticks)
    resumed = 2 * S + RESUME_GAP_NS
    assert track == ReplayTrack((0, 2 * S, resumed, resumed + S - 1), (100.0, 101.0, 99.0, 99.0))
    assert track.price_at(2 * S - 1) == 100.0 and track.price_at(resumed) == 99.0
    assert track.price_at(resumed + S) is None  # the tick without a last price does not prolong it


def test_recordings_load_from_files_and_directories_bars_and_ticks(tmp_path: Path) -> None:
    (tmp_path / "cu.csv").write_text(to_csv(CU, recording(86000.0), 0))
    (tmp_path / "rb.csv").write_text(ticks_to_csv("SHFE.rb2601", tick_recording(3500.0), 0))
    tracks = load_replay(str(tmp_path))
    assert sorted(tracks) == [CU, "SHFE.rb2601"]
    assert tracks["SHFE.rb2601"] == track_from_ticks(tick_recording(3500.0))
    assert list(load_replay(str(tmp_path / "cu.csv"))) == [CU]
    (tmp_path / "again.csv").write_text(ticks_to_csv(CU, tick_recording(86000.0), 0))
    with pytest.raises(ImportRefused, match=r"a second recording of SHFE\.cu2601"):
        load_replay(str(tmp_path))
    bad = tmp_path / "bad" / "cu.csv"
    bad.parent.mkdir()
    bad.write_text(ticks_to_csv(CU, tick_recording(86000.0), 0).replace("5000,", "-1,", 1))
    with pytest.raises(HistoryFileError, match=r"cu\.csv:2: column SHFE\.cu2601\.open_interest"):
        load_replay(str(bad))


@dataclass
class Run:
    began: float = 0.0
    samples: list[tuple[float, float, float]] = field(default_factory=list)  # (offset, recorded, bid)
    trades: list[tuple[str, str, float, int]] = field(default_factory=list)  # user, direction, price, lots
    fill: tuple[float, float] | None = None  # the user's market order: (trade price, recorded)
    after_end: int | None = None  # the ladder's reference (ticks) after the recording, walking again


async def replay(track: ReplayTrack, speed: float, *, market_order: bool, seed: int = 3) -> Run:
    """Replay ``track`` on cu2601 (mock clock): sample the best bid after each recorded change (half
    way to the next one, at least REPLAY_STEP_MIN after it), then send a market order, then wait for
    the end of the recording."""
    engine = Engine()
    exchange = Exchange(engine, clock=wall_clock, market=MarketData(engine, clock=wall_clock))
    run = Run()
    async with trio.open_nursery() as nursery:
        await nursery.start(exchange.run)
        for user_id in (MAKER, TAKER, "lone"):
            await exchange.router.execute(
                OpenAccount(ts=0, user_id=user_id, password_hash="-", init_cash=1e8)
            )
        simulator = LiquiditySimulator(
            exchange, seed=seed, symbols=[CU], interval=0.25, replay={CU: track}, replay_speed=speed
        )
        exchange.simulator = simulator
        await nursery.start(simulator.run)
        assert exchange.market is not None
        run.began = began = simulator.ladders[CU].replay_start
        offsets = track.offsets
        for index in range(len(offsets) - 2):  # the last point only marks the end
            due = began + offsets[index] / speed / S
            following = began + offsets[index + 1] / speed / S
            at = max(due + REPLAY_STEP_MIN + 0.01, (due + following) / 2)
            if at >= following:
                continue  # changes closer than the maker's bounded rate: it skips to the latest
            await trio.sleep_until(at)
            bid = exchange.market.quotes[CU].full()["bid_price1"]
            run.samples.append((offsets[index], track.prices[index], bid))
        if market_order:
            recorded = track.price_at((trio.current_time() - began) * speed * S)
            assert recorded is not None
            order = await exchange.insert_order(
                InsertOrder(
                    user_id="lone", order_id="m1", exchange_id="SHFE", instrument_id="cu2601",
                    direction="BUY", offset="OPEN", volume=1, price_type="ANY", time_condition="IOC",
                )
            )  # fmt: skip
            assert order["volume_left"] == 0, order
            run.fill = (engine.last_price[CU], recorded)
        await trio.sleep_until(began + track.length_ns / speed / S + 5)
        ladder = simulator.ladders[CU]
        assert ladder.track is None
        run.after_end = ladder.reference
        run.trades = [
            (user_id, trade.direction, trade.price, trade.volume)
            for user_id in (MAKER, TAKER)
            for trade in sorted(engine.users[user_id].trades.values(), key=lambda t: t.seqno)
        ]
        nursery.cancel_scope.cancel()
    return run


def assert_follows(run: Run, changes: int) -> None:
    close = sum(abs(bid - recorded) <= 2 * CU_TICK for _, recorded, bid in run.samples)
    assert len(run.samples) >= 0.9 * changes, (len(run.samples), changes)
    assert close >= 0.9 * len(run.samples), (close, len(run.samples), run.samples)


async def test_the_market_maker_follows_recorded_bars_then_walks(autojump_clock: trio.abc.Clock) -> None:
    start = Engine().instruments[CU].pre_settlement
    track = track_from_bars(recording(start))
    run = await replay(track, 60.0, market_order=True)
    assert_follows(run, len(track.offsets) - 2)
    assert run.fill is not None and abs(run.fill[0] - run.fill[1]) <= 2 * CU_TICK, run.fill
    assert run.after_end is not None and abs(run.after_end * CU_TICK - (start + 20 * 20.0)) <= 40 * CU_TICK
    assert {user for user, *_ in run.trades} == {MAKER, TAKER}  # normal trades, both accounts


async def test_the_market_maker_follows_recorded_ticks_then_walks(autojump_clock: trio.abc.Clock) -> None:
    start = Engine().instruments[CU].pre_settlement
    ticks = tick_recording(start)
    track = track_from_ticks(ticks)
    run = await replay(track, 2.0, market_order=True)
    assert len(track.offsets) > 100
    assert_follows(run, len(track.offsets) - 2)
    assert run.fill is not None and abs(run.fill[0] - run.fill[1]) <= 2 * CU_TICK, run.fill
    assert run.after_end is not None
    assert abs(run.after_end * CU_TICK - track.prices[-1]) <= 40 * CU_TICK  # the walk from the last price


def test_a_replay_is_deterministic_for_a_file_and_seed() -> None:
    start = Engine().instruments[CU].pre_settlement
    track = track_from_ticks(tick_recording(start, count=80))

    def once(seed: int) -> Run:
        return trio.run(
            lambda: replay(track, 2.0, market_order=False, seed=seed),
            clock=trio.testing.MockClock(autojump_threshold=0),
        )

    first, second = once(3), once(3)
    assert first.trades and first.samples
    assert (first.trades, first.samples, first.after_end) == (second.trades, second.samples, second.after_end)
    assert once(4).trades != first.trades  # the seed matters (the taker's choices)


@dataclass
class Played:
    reference: int  # the ladder's reference (ticks) when it was put up
    replaying: bool  # whether it was put up following the recording
    reports: list[dict[str, int]]  # on_replay_progress, in order


async def play_for(
    track: ReplayTrack,
    speed: float,
    seconds: float,
    replay_from: dict[str, int],
    last_price: float | None = None,
) -> Played:
    """Run the simulator on cu2601 for ``seconds`` (mock clock), resuming at ``replay_from``, then stop."""
    engine = Engine()
    if last_price is not None:
        engine.last_price[CU] = last_price  # what the journal brings back: the last trade's price
    exchange = Exchange(engine, clock=wall_clock, market=MarketData(engine, clock=wall_clock))
    reports: list[dict[str, int]] = []
    async with trio.open_nursery() as nursery:
        await nursery.start(exchange.run)
        for user_id in (MAKER, TAKER):
            await exchange.router.execute(
                OpenAccount(ts=0, user_id=user_id, password_hash="-", init_cash=1e8)
            )
        simulator = LiquiditySimulator(
            exchange, seed=3, symbols=[CU], interval=0.25, replay={CU: track}, replay_speed=speed,
            replay_from=replay_from, on_replay_progress=reports.append,
        )  # fmt: skip
        exchange.simulator = simulator
        await nursery.start(simulator.run)
        ladder = simulator.ladders[CU]
        played = Played(ladder.reference, ladder.track is not None, reports)
        await trio.sleep(seconds)
        nursery.cancel_scope.cancel()
    return played


async def test_a_replay_goes_on_where_the_kept_position_is(autojump_clock: trio.abc.Clock) -> None:
    start = Engine().instruments[CU].pre_settlement
    track = track_from_bars(recording(start))  # 20 minutes recorded, 20 s at 60x
    first = await play_for(track, 60.0, 8.0, {})
    assert first.replaying and first.reference * CU_TICK == start
    assert len(first.reports) >= 8 / REPLAY_KEEP_EVERY  # every second, and at the stop
    kept = first.reports[-1][CU]
    assert abs(kept - 8 * 60 * S) <= 60 * S, kept  # 8 s at 60x: 8 recorded minutes
    resumed = await play_for(track, 60.0, 3.0, {CU: kept})
    recorded = track.price_at(kept)
    assert recorded is not None and recorded >= start + 6 * 20.0
    assert resumed.replaying and resumed.reference * CU_TICK == recorded  # not the recording's start
    assert [report[CU] for report in resumed.reports] == sorted(report[CU] for report in resumed.reports)
    assert abs(resumed.reports[-1][CU] - (kept + 3 * 60 * S)) <= 60 * S
    # A simulator that stops after the end reports it ended; the next start walks from the last price.
    ended = (await play_for(track, 60.0, 15.0, {CU: kept})).reports[-1][CU]
    assert ended == track.length_ns + 1
    walking = await play_for(track, 60.0, 1.0, {CU: ended}, last_price=start + 300.0)
    assert not walking.replaying and walking.reference * CU_TICK == start + 300.0
    assert walking.reports[-1] == {CU: ended}


class Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def replay_log() -> Iterator[Records]:
    """The records of the keeper's logger, on the logger object itself (not caplog's root handler, nor
    ``logging.getLogger``: importing tqsdk, as other test modules do, swaps in its own logger manager)."""
    logger = replay_keeper.log
    handler, level = Records(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def test_the_keeper_resumes_the_same_recording_and_speed_only(tmp_path: Path, replay_log: Records) -> None:
    track = track_from_bars(recording(86000.0))
    keeper = ReplayKeeper(tmp_path, {CU: track}, 4.0)
    assert keeper.load() == {}  # nothing kept yet
    keeper.save({CU: 5 * S})
    assert ReplayKeeper(tmp_path, {CU: track}, 4.0).load() == {CU: 5 * S}
    assert ReplayKeeper(tmp_path, {CU: track}, 2.0).load() == {}
    other = track_from_bars(recording(86010.0))
    assert ReplayKeeper(tmp_path, {CU: other}, 4.0).load() == {}
    fresh = [r.getMessage() for r in replay_log.records if r.levelno == logging.INFO]
    assert len(fresh) == 2 and all("starts from the beginning" in m for m in fresh), fresh
    assert "speed 2" in fresh[0] and "another recording" in fresh[1]


@pytest.mark.parametrize(
    "damage",
    [
        lambda raw: raw[: len(raw) // 2],  # torn
        lambda raw: raw.replace(b"5000000000", b"-5"),  # hostile
        lambda raw: b" " * (2 << 20) + raw,  # bounded: too large
        lambda raw: b"[" * 200_000,  # nested deep
    ],
)
def test_a_damaged_progress_file_is_ignored_with_a_warning(
    tmp_path: Path, replay_log: Records, damage: object
) -> None:
    track = track_from_bars(recording(86000.0))
    keeper = ReplayKeeper(tmp_path, {CU: track}, 4.0)
    keeper.save({CU: 5 * S})
    path = tmp_path / FILE_NAME
    assert callable(damage)
    path.write_bytes(damage(path.read_bytes()))
    assert keeper.load() == {}
    warnings = [r.getMessage() for r in replay_log.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "ignored" in warnings[0], warnings
    keeper.save({CU: 6 * S})  # the next save replaces it
    assert keeper.load() == {CU: 6 * S}
