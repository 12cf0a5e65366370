"""The sans-IO market core (qaex.core.market) driven by plain calls: engine batches in, patches out.

No trio and no sessions: the engine produces batches, MarketState folds them, and the tests read what
``take_changes`` hands out.
"""

from __future__ import annotations

import itertools
import math
import pickle
from typing import Any

import msgspec
import pytest

from qaex.core.book import OrderBook
from qaex.core.commands import Cancel, Insert, OpenAccount, Settle, UpsertInstrument
from qaex.core.engine import Batch, Engine
from qaex.core.kline import NS_PER_DAY
from qaex.core.market import (
    KEPT_DURATIONS_NS,
    NOTIFY_BAD_CHART,
    NOTIFY_BAD_INSTRUMENT,
    ChartRefused,
    MarketState,
)
from qaex.core.orders import InsertOrder
from qaex.core.quote import DEPTH_LEVELS

S = 1_000_000_000
MINUTE = 60 * S
T0 = 1_763_946_000 * S  # 2025-11-24 09:00 UTC+8, a Monday
CU, AU = "SHFE.cu2601", "SHFE.au2602"


class Desk:
    """An engine and a MarketState fed with its batches, as MarketData feeds it."""

    def __init__(self) -> None:
        self.now = T0
        self.engine = Engine()
        self.state = MarketState(self.engine.instruments)
        for symbol in self.engine.instruments:
            self.state.list_instrument(symbol, self.now)
        self._ids = itertools.count(1)
        for user in ("alice", "bob"):
            self.engine.apply(OpenAccount(ts=T0, user_id=user, password_hash="x", init_cash=1e9))
        self.engine.flush()

    def insert(self, user: str, direction: str, price: float, volume: int = 1, symbol: str = CU) -> str:
        exchange_id, instrument_id = symbol.split(".")
        order_id = f"o{next(self._ids)}"
        request = InsertOrder(
            user_id=user, order_id=order_id, exchange_id=exchange_id, instrument_id=instrument_id,
            direction=direction, offset="OPEN", volume=volume, limit_price=price,  # type: ignore[arg-type]
        )  # fmt: skip
        self.now += S // 1000
        self.engine.apply(Insert(ts=self.now, order=request))
        return order_id

    def flush(self) -> Batch:
        batch = self.engine.flush()
        self.state.apply(batch, self.now)
        return batch

    def trade(self, price: float, volume: int = 1, symbol: str = CU) -> None:
        self.insert("alice", "SELL", price, volume, symbol)
        self.insert("bob", "BUY", price, volume, symbol)
        self.flush()

    def quote_changes(self) -> dict[str, dict[str, Any]]:
        return {symbol: patch["quotes"][symbol] for symbol, patch in self.state.take_changes().quotes}


@pytest.fixture
def desk() -> Desk:
    return Desk()


def levels(quote: dict[str, Any], side: str) -> list[tuple[Any, int]]:
    return [(quote[f"{side}_price{n}"], quote[f"{side}_volume{n}"]) for n in range(1, 6)]


# -- the depth the batch carries ------------------------------------------------------------------------
def test_a_batch_carries_the_best_levels_of_each_changed_book_at_flush_time(desk: Desk) -> None:
    for step in range(7):
        desk.insert("alice", "SELL", 86100.0 + 10 * step)
    first = desk.insert("bob", "BUY", 85900.0, 2)
    desk.engine.apply(Cancel(ts=desk.now + 1, user_id="bob", order_id=first))
    desk.insert("bob", "BUY", 85800.0, 3)
    batch = desk.engine.flush()
    assert batch.depth_changed == {CU} and set(batch.depth) == {CU}
    bids, asks = batch.depth[CU]
    tick = desk.engine.instruments[CU].price_tick
    assert [(round(p * tick), v) for p, v in bids] == [(85800, 3)]  # the cancelled bid is gone
    assert len(asks) == DEPTH_LEVELS and [v for _, v in asks] == [1] * DEPTH_LEVELS
    assert desk.engine.flush().depth == {}  # nothing changed since


def test_flush_renders_each_changed_book_once_per_batch(desk: Desk, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    depth = OrderBook.depth

    def counting(book: OrderBook, count: int) -> Any:
        calls.append(book.symbol)
        return depth(book, count)

    monkeypatch.setattr(OrderBook, "depth", counting)
    for step in range(50):
        instrument = desk.engine.instruments[CU if step % 2 else AU]
        price = instrument.pre_settlement + instrument.price_tick * (step % 5)
        desk.insert("alice", "SELL", price, symbol=instrument.symbol)
    desk.engine.flush()
    assert sorted(calls) == [AU, CU]


def test_the_quote_shows_the_batchs_depth_not_the_engines_later_books(desk: Desk) -> None:
    desk.insert("alice", "SELL", 86100.0, 2)
    batch = desk.engine.flush()
    desk.insert("alice", "SELL", 86050.0, 5)  # the engine moves on; its batch is not flushed yet
    desk.state.apply(batch, desk.now)
    quote = desk.quote_changes()[CU]
    assert (quote["ask_price1"], quote["ask_volume1"]) == (86100.0, 2)
    desk.flush()
    quote = desk.quote_changes()[CU]
    assert (quote["ask_price1"], quote["ask_volume1"]) == (86050.0, 5)


def test_the_starting_state_comes_from_the_arguments() -> None:
    engine = Engine()
    state = MarketState(engine.instruments)
    tick = engine.instruments[CU].price_tick
    state.list_instrument(
        CU, T0, last_price=86000.0, open_interest=12, depth=([(round(85990 / tick), 4)], [])
    )
    quote = state.quotes[CU].full()
    assert (quote["last_price"], quote["open_interest"]) == (86000.0, 12)
    (price1, volume1), (price2, volume2) = levels(quote, "bid")[:2]
    assert (price1, volume1, volume2) == (85990.0, 4, 0) and math.isnan(price2)  # DIFF sends "-"
    assert state.take_changes().quotes == []  # the starting state is the baseline, not a change


# -- patches ------------------------------------------------------------------------------------------
def test_a_quote_changed_many_times_between_takes_is_one_patch(desk: Desk) -> None:
    for step in range(100):
        desk.insert("alice", "SELL", 87000.0 + 10 * (step % 10))
        desk.flush()
    changes = desk.state.take_changes()
    assert [symbol for symbol, _ in changes.quotes] == [CU]
    assert desk.state.quote_patches_built == 1
    assert not desk.state.take_changes()


def test_a_trade_changes_the_quote_the_ticks_and_every_kept_kline_series(desk: Desk) -> None:
    desk.trade(86000.0, 3)
    changes = desk.state.take_changes()
    (_, quote_patch), *_ = changes.quotes
    quote = quote_patch["quotes"][CU]
    assert (quote["last_price"], quote["volume"], quote["open_interest"]) == (86000.0, 3, 180_003)
    assert sorted(key for key, _ in changes.series) == sorted(
        [(CU, 0), *((CU, d) for d in KEPT_DURATIONS_NS)]
    )
    ticks = dict(changes.series)[(CU, 0)]["ticks"][CU]
    assert ticks["last_id"] == 0 and ticks["data"]["0"]["last_price"] == 86000.0
    bar = dict(changes.series)[(CU, MINUTE)]["klines"][CU][str(MINUTE)]["data"]["0"]
    assert (bar["open"], bar["close"], bar["volume"]) == (86000.0, 86000.0, 3)


def test_quote_times_never_go_back(desk: Desk) -> None:
    desk.trade(86000.0)
    stamped = desk.state.quotes[CU].datetime_ns
    desk.insert("alice", "SELL", 86100.0)
    desk.state.apply(desk.engine.flush(), T0 - MINUTE)  # a wall clock that stepped back
    assert desk.state.quotes[CU].datetime_ns == stamped


def test_advance_time_opens_gap_bars_and_the_boundary_is_the_next_minute(desk: Desk) -> None:
    desk.trade(86000.0)
    desk.state.take_changes()
    assert desk.state.next_bar_boundary(T0 + 10 * S) == T0 + MINUTE
    desk.state.advance_time(T0 + 2 * MINUTE + 1)
    changes = dict(desk.state.take_changes().series)
    minute = changes[(CU, MINUTE)]["klines"][CU][str(MINUTE)]
    assert minute["last_id"] == 2 and minute["data"]["2"]["volume"] == 0
    assert (AU, MINUTE) not in changes  # no trade yet: no bars to carry


# -- instruments ------------------------------------------------------------------------------------------
def test_a_settlement_starts_a_new_trading_day_and_resends_the_contract_fields(desk: Desk) -> None:
    desk.trade(86500.0, 2)
    desk.state.take_changes()
    desk.engine.apply(Settle(ts=desk.now, prices={CU: 86400.0}, trading_day=""))
    desk.flush()
    changes = desk.state.take_changes()
    assert changes.static is not None
    assert changes.static["quotes"][CU]["pre_settlement"] == 86400.0
    assert set(changes.static["quotes"]) == set(desk.engine.instruments)
    quote = dict(changes.quotes)[CU]["quotes"][CU]
    assert (quote["pre_close"], quote["volume"]) == (86500.0, 0) and math.isnan(quote["highest"])
    assert desk.state.quotes[CU].open_interest == desk.engine.open_interest[CU]


def test_a_contract_listed_in_a_batch_is_queued_for_every_session(desk: Desk) -> None:
    static = desk.state.static_patch()
    spec = dict(msgspec.to_builtins(desk.engine.instruments[CU]))
    spec.update(instrument_id="cu2699", instrument_name="沪铜2699")
    desk.engine.apply(UpsertInstrument(ts=desk.now + 1, spec=spec))
    desk.insert("alice", "SELL", 86100.0, symbol="SHFE.cu2699")
    desk.flush()
    changes = desk.state.take_changes()
    assert changes.static is not None and set(changes.static["quotes"]) == {"SHFE.cu2699"}
    assert desk.state.static_patch() is not static and "SHFE.cu2699" in desk.state.static_patch()["quotes"]
    assert desk.state.quotes["SHFE.cu2699"].asks[0] == (86100.0, 1)


# -- charts ---------------------------------------------------------------------------------------------
def chart_message(chart_id: str = "c1", ins_list: str = CU, duration: int = MINUTE, **fields: Any) -> Any:
    return {"aid": "set_chart", "chart_id": chart_id, "ins_list": ins_list, "duration": duration,
            "view_width": 10} | fields  # fmt: skip


def test_a_chart_of_a_new_duration_is_filled_from_history_and_dropped_with_its_last_chart(desk: Desk) -> None:
    for minute in range(10):
        desk.now = T0 + minute * MINUTE
        desk.trade(86000.0 + 10 * minute, 2)
    first = desk.state.open_chart(chart_message(duration=5 * MINUTE), desk.now)
    second = desk.state.open_chart(chart_message("c2", duration=5 * MINUTE), desk.now)
    bars = desk.state.chart_patch(first)["klines"][CU][str(5 * MINUTE)]["data"]
    assert [bars[i]["volume"] for i in ("0", "1")] == [10, 10]
    desk.state.close_chart(first)
    assert (CU, 5 * MINUTE) in desk.state.klines
    desk.state.close_chart(second)
    assert (CU, 5 * MINUTE) not in desk.state.klines
    kept = desk.state.open_chart(chart_message(), desk.now)
    desk.state.close_chart(kept)
    assert (CU, MINUTE) in desk.state.klines  # kept series stay


def test_a_chart_window_follows_new_bars(desk: Desk) -> None:
    desk.trade(86000.0)
    chart = desk.state.open_chart(chart_message(view_width=2), desk.now)
    assert desk.state.chart_patch(chart)["charts"]["c1"]["right_id"] == 0
    desk.state.advance_time(T0 + 3 * MINUTE)
    desk.state.take_changes()
    moves = desk.state.chart_moves(chart)
    assert moves is not None
    assert (moves["charts"]["c1"]["left_id"], moves["charts"]["c1"]["right_id"]) == (2, 3)
    assert desk.state.chart_moves(chart) is None


@pytest.mark.parametrize(
    ("message", "code"),
    [
        (chart_message(ins_list="SHFE.nope"), NOTIFY_BAD_INSTRUMENT),
        (chart_message(duration=2 * NS_PER_DAY + S), NOTIFY_BAD_CHART),
        (chart_message(view_width=0), NOTIFY_BAD_CHART),
    ],
)
def test_a_chart_the_market_cannot_serve_is_refused_and_leaves_no_series(
    desk: Desk, message: dict[str, Any], code: int
) -> None:
    before = set(desk.state.klines)
    with pytest.raises(ChartRefused) as refused:
        desk.state.open_chart(message, desk.now)
    assert refused.value.code == code and refused.value.message
    assert set(desk.state.klines) == before


def test_kline_history_builds_a_series_it_does_not_keep(desk: Desk) -> None:
    desk.trade(86000.0)
    series = desk.state.kline_history(CU, 3 * S, desk.now)
    assert series.last_id >= 0 and (CU, 3 * S) not in desk.state.klines
    assert desk.state.kline_history(CU, MINUTE, desk.now) is desk.state.klines[(CU, MINUTE)]
    with pytest.raises(ValueError):
        desk.state.kline_history(CU, NS_PER_DAY + S, desk.now)


# -- the batch seam ------------------------------------------------------------------------------------
def test_a_batch_pickles_and_one_pickled_with_the_old_field_names_loads(desk: Desk) -> None:
    desk.insert("alice", "SELL", 86100.0)
    batch = desk.engine.flush()
    assert pickle.loads(pickle.dumps(batch)) == batch
    old = Batch.__new__(Batch)
    old.__setstate__((None, {"books": {CU}, "instruments": {AU}, "settled": True, "last_seq": 7}))
    assert (old.depth_changed, old.instruments_changed, old.settled, old.last_seq) == ({CU}, {AU}, True, 7)
    assert (old.depth, old.users, old.market_trades) == ({}, {}, [])
