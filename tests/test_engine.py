"""The engine: orders through risk, book and accounts, driven by commands with explicit timestamps."""

from __future__ import annotations

import itertools
import math
from typing import Any

import pytest

from qaex.core import limits
from qaex.core.commands import (
    Cancel,
    Deposit,
    Insert,
    MarkToMarket,
    OpenAccount,
    SetSuspended,
    Settle,
    UpsertInstrument,
    Withdraw,
)
from qaex.core.engine import MAX_REJECTED_KEPT, Engine, trading_day_of
from qaex.core.errors import Conflict, NotFound, QaexError, RiskError
from qaex.core.orders import InsertOrder

T0 = 1_764_120_000_000_000_000  # 2025-11-26 09:20 China time
_clock = itertools.count(T0, 1_000_000)


def ts() -> int:
    return next(_clock)


def make_engine(*users: str, cash: float = 1_000_000.0, **kwargs: Any) -> Engine:
    engine = Engine(**kwargs)
    for user in users:
        engine.apply(OpenAccount(ts=ts(), user_id=user, password_hash="x", init_cash=cash))
    engine.flush()
    return engine


def order(
    engine: Engine,
    user: str,
    order_id: str,
    direction: str,
    volume: int,
    price: float | None = 86000.0,
    *,
    symbol: str = "SHFE.cu2601",
    offset: str = "OPEN",
    time_condition: str = "GFD",
    volume_condition: str = "ANY",
) -> Any:
    exchange_id, instrument_id = symbol.split(".")
    request = InsertOrder(
        user_id=user,
        order_id=order_id,
        exchange_id=exchange_id,
        instrument_id=instrument_id,
        direction=direction,  # type: ignore[arg-type]
        offset=offset,  # type: ignore[arg-type]
        volume=volume,
        price_type="LIMIT" if price is not None else "ANY",
        limit_price=price if price is not None else 0.0,
        time_condition="IOC" if price is None else time_condition,  # type: ignore[arg-type]
        volume_condition=volume_condition,  # type: ignore[arg-type]
    )
    return engine.apply(Insert(ts=ts(), order=request))


def test_resting_limit_order_is_alive_with_exchange_order_id_and_freezes_margin() -> None:
    engine = make_engine("a")
    o = order(engine, "a", "o1", "BUY", 2)
    assert o.status == "ALIVE" and o.exchange_order_id and o.volume_left == 2
    account = engine.users["a"].account
    assert account.frozen_margin == pytest.approx(2 * 86000 * 5 * 0.10)
    assert account.available == pytest.approx(
        account.balance - account.frozen_margin - account.frozen_commission
    )
    assert engine.books["SHFE.cu2601"].best_bid() == 8600


def test_crossing_orders_trade_at_the_resting_price_and_both_sides_get_trades() -> None:
    engine = make_engine("a", "b")
    order(engine, "a", "o1", "SELL", 3, 86000.0)
    taker = order(engine, "b", "o2", "BUY", 2, 86100.0)
    assert taker.status == "FINISHED" and taker.last_msg == "全部成交"
    (trade_b,) = engine.users["b"].trades.values()
    (trade_a,) = engine.users["a"].trades.values()
    assert trade_b.price == trade_a.price == 86000.0
    assert trade_a.volume == trade_b.volume == 2
    assert trade_a.exchange_trade_id == trade_b.exchange_trade_id
    assert trade_b.commission > 0
    maker = engine.users["a"].orders["o1"]
    assert maker.status == "ALIVE" and maker.volume_left == 1 and maker.last_msg == "部分成交"
    assert engine.users["b"].account.positions["SHFE.cu2601"].volume_long == 2
    assert engine.users["a"].account.positions["SHFE.cu2601"].volume_short == 2
    assert engine.last_price["SHFE.cu2601"] == 86000.0


def test_rejected_order_is_finished_without_exchange_order_id_and_notifies() -> None:
    engine = make_engine("a", cash=1000.0)
    o = order(engine, "a", "o1", "BUY", 1)
    assert o.status == "FINISHED" and o.exchange_order_id == "" and o.last_msg == "开仓资金不足"
    batch = engine.flush()
    assert batch.users["a"]["orders"]["o1"]["status"] == "FINISHED"
    assert batch.notifies["a"][0][1] == "ERROR"


@pytest.mark.parametrize(
    ("price", "volume", "fragment"),
    [
        (86005.0, 1, "最小变动价位"),
        (99990.0, 1, "涨停"),
        (70000.0, 1, "跌停"),
        (86000.0, 501, "委托数量"),
    ],
)
def test_price_and_volume_bounds_reject(price: float, volume: int, fragment: str) -> None:
    engine = make_engine("a")
    o = order(engine, "a", "o1", "BUY", volume, price)
    assert o.status == "FINISHED" and fragment in o.last_msg


def test_unknown_and_suspended_instruments_reject() -> None:
    engine = make_engine("a")
    assert "不支持的合约" in order(engine, "a", "o1", "BUY", 1, 100.0, symbol="SHFE.xx9999").last_msg
    engine.apply(SetSuspended(ts=ts(), symbol="SHFE.cu2601", suspended=True))
    assert "暂停交易" in order(engine, "a", "o2", "BUY", 1).last_msg
    engine.apply(SetSuspended(ts=ts(), symbol="SHFE.cu2601", suspended=False))
    assert order(engine, "a", "o3", "BUY", 1).status == "ALIVE"


def test_duplicate_order_id_is_refused_and_leaves_the_first_order_alone() -> None:
    engine = make_engine("a")
    order(engine, "a", "o1", "BUY", 1)
    with pytest.raises(RiskError) as info:
        order(engine, "a", "o1", "BUY", 1)
    assert info.value.diff_code == 407
    assert engine.users["a"].orders["o1"].status == "ALIVE"


def test_fak_fills_what_crosses_and_cancels_the_rest() -> None:
    engine = make_engine("a", "b")
    order(engine, "a", "s1", "SELL", 2, 86000.0)
    o = order(engine, "b", "b1", "BUY", 5, 86000.0, time_condition="IOC")
    assert o.status == "FINISHED" and o.volume_left == 3
    assert engine.users["b"].account.frozen_margin == 0.0
    assert engine.books["SHFE.cu2601"].best_bid() is None


def test_fok_that_cannot_fill_completely_fills_nothing() -> None:
    engine = make_engine("a", "b")
    order(engine, "a", "s1", "SELL", 2, 86000.0)
    o = order(engine, "b", "b1", "BUY", 3, 86000.0, time_condition="IOC", volume_condition="ALL")
    assert o.status == "FINISHED" and o.volume_left == o.volume_orign == 3
    assert engine.users["b"].trades == {}
    assert engine.users["a"].orders["s1"].volume_left == 2


def test_market_order_takes_the_best_prices_and_cancels_the_rest() -> None:
    engine = make_engine("a", "b")
    order(engine, "a", "s1", "SELL", 1, 86000.0)
    order(engine, "a", "s2", "SELL", 1, 86100.0)
    o = order(engine, "b", "m1", "BUY", 3, None)
    assert o.status == "FINISHED" and o.volume_left == 1
    prices = sorted(t.price for t in engine.users["b"].trades.values())
    assert prices == [86000.0, 86100.0]
    assert engine.users["b"].account.frozen_margin == 0.0


def test_self_trade_is_rejected_before_any_fill() -> None:
    engine = make_engine("a")
    order(engine, "a", "s1", "SELL", 1, 86000.0)
    o = order(engine, "a", "b1", "BUY", 1, 86000.0)
    assert o.status == "FINISHED" and "自成交" in o.last_msg and o.exchange_order_id == ""
    assert engine.users["a"].account.frozen_margin == pytest.approx(86000 * 5 * 0.1)


def test_cancel_releases_frozen_margin_and_removes_the_order_from_the_book() -> None:
    engine = make_engine("a")
    order(engine, "a", "o1", "BUY", 2)
    o = engine.apply(Cancel(ts=ts(), user_id="a", order_id="o1"))
    assert o.status == "FINISHED" and o.last_msg == "已撤单" and o.volume_left == 2
    account = engine.users["a"].account
    assert account.frozen_margin == 0.0 and account.frozen_commission == 0.0
    assert account.available == account.balance
    assert engine.books["SHFE.cu2601"].best_bid() is None


def test_cancel_after_partial_fill_releases_only_the_rest() -> None:
    engine = make_engine("a", "b")
    order(engine, "a", "s1", "SELL", 3, 86000.0)
    order(engine, "b", "b1", "BUY", 1, 86000.0)
    engine.apply(Cancel(ts=ts(), user_id="a", order_id="s1"))
    account = engine.users["a"].account
    assert account.frozen_margin == 0.0
    assert account.margin == pytest.approx(86000 * 5 * 0.1)


def test_cancel_errors_for_unknown_and_finished_orders() -> None:
    engine = make_engine("a", "b")
    with pytest.raises(NotFound):
        engine.apply(Cancel(ts=ts(), user_id="a", order_id="nope"))
    order(engine, "a", "o1", "BUY", 1)
    engine.apply(Cancel(ts=ts(), user_id="a", order_id="o1"))
    with pytest.raises(QaexError) as info:
        engine.apply(Cancel(ts=ts(), user_id="a", order_id="o1"))
    assert info.value.diff_code == 420
    # Another user's order id is simply not found in the caller's own order list.
    order(engine, "b", "o9", "BUY", 1)
    with pytest.raises(NotFound):
        engine.apply(Cancel(ts=ts(), user_id="a", order_id="o9"))


def test_rate_limit_rejects_orders_beyond_the_per_second_budget() -> None:
    engine = make_engine("a", max_orders_per_second=3)
    t = T0 + 10**12

    def insert(i: int, price: float = 85000.0, at: int = 0) -> Any:
        request = InsertOrder(user_id="a", order_id=f"o{i}", exchange_id="SHFE", instrument_id="cu2601",
                              direction="BUY", offset="OPEN", volume=1, limit_price=price)  # fmt: skip
        return engine.apply(Insert(ts=t + at + i, order=request))

    # Refused orders count too (the off-tick price): a flood of refusals is rate-limited like any other.
    results = [insert(0), insert(1, price=85001.0), insert(2)]
    assert [r.status for r in results] == ["ALIVE", "FINISHED", "ALIVE"]
    # One over the rate is refused as a whole: nothing kept, nothing journaled.
    with pytest.raises(RiskError) as refused:
        insert(3)
    assert refused.value.code == "rate_limited" and "频率" in refused.value.message
    assert "o3" not in engine.users["a"].orders
    assert insert(3, at=10**9).status == "ALIVE"  # the next second has a fresh budget


def test_deposit_and_withdraw_change_the_account_and_record_transfers() -> None:
    engine = make_engine("a", cash=100.0)
    engine.apply(Deposit(ts=ts(), user_id="a", amount=50.0))
    engine.apply(Withdraw(ts=ts(), user_id="a", amount=30.0))
    account = engine.users["a"].account
    assert account.balance == pytest.approx(120.0)
    assert len(engine.users["a"].transfers) == 2
    with pytest.raises(QaexError):
        engine.apply(Withdraw(ts=ts(), user_id="a", amount=1000.0))
    with pytest.raises(QaexError):
        engine.apply(Deposit(ts=ts(), user_id="a", amount=-5.0))
    assert account.balance == pytest.approx(120.0)


@pytest.mark.parametrize("amount", [0.0, -1.0, math.nan, math.inf, limits.MAX_AMOUNT * 2])
def test_a_transfer_amount_out_of_bounds_is_refused_as_a_whole(amount: float) -> None:
    engine = make_engine("a", cash=1_000.0)
    before = engine.user_tree("a")
    for command in (Deposit, Withdraw):
        with pytest.raises(QaexError) as refused:
            engine.apply(command(ts=ts(), user_id="a", amount=amount))
        assert refused.value.code == "bad_amount" and refused.value.diff_code == 422
    assert engine.user_tree("a") == before and not engine.flush()


def test_an_account_is_opened_once_for_a_well_formed_id() -> None:
    engine = make_engine("a")
    seq = engine.seq
    with pytest.raises(Conflict) as taken:
        engine.apply(OpenAccount(ts=ts(), user_id="a", password_hash="y", init_cash=5.0))
    assert taken.value.code == "user_exists"
    with pytest.raises(QaexError) as malformed:
        engine.apply(OpenAccount(ts=ts(), user_id="a.b", password_hash="y", init_cash=5.0))
    assert malformed.value.code == "bad_user_id"
    assert engine.seq == seq and engine.users["a"].password_hash == "x"
    engine.check_new_user("b")  # what Exchange.open_account asks before hashing: nothing to refuse


def test_fill_participants_are_marked_at_once_and_other_holders_by_the_mark_pass() -> None:
    engine = make_engine("a", "b", "c")
    order(engine, "a", "s1", "SELL", 1, 86000.0)
    order(engine, "b", "b1", "BUY", 1, 86000.0)
    engine.flush()
    order(engine, "a", "s2", "SELL", 1, 86500.0)
    order(engine, "c", "c1", "BUY", 1, 86500.0)
    batch = engine.flush()
    assert batch.users["a"]["positions"]["SHFE.cu2601"]["last_price"] == 86500.0
    assert "b" not in batch.users  # not a participant: waits for the mark pass
    assert engine.prices_moved
    assert engine.apply(MarkToMarket(ts=ts())) >= 3
    batch = engine.flush()
    # b holds a long position: the pass marks it at the new price.
    assert batch.users["b"]["positions"]["SHFE.cu2601"]["last_price"] == 86500.0
    assert batch.users["b"]["accounts"]["CNY"]["position_profit"] == pytest.approx(500 * 5)
    assert not engine.prices_moved


def test_a_risk_check_uses_current_prices_even_before_the_mark_pass() -> None:
    engine = make_engine("a", "b", "c", "d")
    order(engine, "a", "s1", "SELL", 2, 86000.0)
    order(engine, "b", "b1", "BUY", 2, 86000.0)
    order(engine, "c", "s2", "SELL", 1, 80000.0)
    order(engine, "d", "d1", "BUY", 1, 80000.0)
    engine.flush()
    # b lost 2 * 6000 * 5 = 60,000 on paper; its available must already say so.
    record = engine.users["b"]
    order(engine, "b", "b2", "BUY", 1, 79000.0)
    assert record.account.position_profit == pytest.approx(-60_000)


def test_settlement_expires_orders_rolls_positions_and_clears_the_day() -> None:
    engine = make_engine("a", "b")
    order(engine, "a", "s1", "SELL", 2, 86000.0)
    order(engine, "b", "b1", "BUY", 1, 86000.0)
    day = engine.trading_day
    engine.apply(Settle(ts=ts(), prices={"SHFE.cu2601": 86200.0}))
    assert engine.trading_day > day
    assert engine.users["a"].orders == {} and engine.users["a"].trades == {}
    position = engine.users["b"].account.positions["SHFE.cu2601"]
    assert position.volume_long_his == 1 and position.volume_long_today == 0
    assert position.position_price_long == 86200.0
    instrument = engine.instruments["SHFE.cu2601"]
    assert instrument.pre_settlement == 86200.0
    assert engine.users["a"].account.frozen_margin == 0.0
    batch = engine.flush()
    assert batch.users["a"]["orders"]["s1"] is None


def test_settlement_price_off_the_tick_is_refused() -> None:
    engine = make_engine("a")
    with pytest.raises(QaexError):
        engine.apply(Settle(ts=ts(), prices={"SHFE.cu2601": 86005.0}))


def test_upsert_instrument_adds_a_tradeable_contract_and_updates_one() -> None:
    engine = make_engine("a")
    engine.apply(
        UpsertInstrument(
            ts=ts(),
            spec={
                "exchange_id": "DCE",
                "instrument_id": "y2601",
                "product_id": "y",
                "instrument_name": "豆油2601",
                "price_tick": 2.0,
                "volume_multiple": 10,
                "margin_ratio_long": 0.08,
                "margin_ratio_short": 0.08,
                "pre_settlement": 8000.0,
            },
        )
    )
    assert order(engine, "a", "o1", "BUY", 1, 8000.0, symbol="DCE.y2601").status == "ALIVE"
    engine.apply(
        UpsertInstrument(
            ts=ts(), spec={"exchange_id": "DCE", "instrument_id": "y2601", "pre_settlement": 9000.0}
        )
    )
    assert engine.instruments["DCE.y2601"].upper_limit > 9000.0
    with pytest.raises(QaexError):
        engine.apply(
            UpsertInstrument(ts=ts(), spec={"exchange_id": "DCE", "instrument_id": "zz", "price_tick": -1})
        )


def test_flush_renders_only_touched_objects() -> None:
    engine = make_engine("a", "b")
    order(engine, "a", "o1", "BUY", 1)
    batch = engine.flush()
    assert set(batch.users) == {"a"}
    assert set(batch.users["a"]) == {"orders", "accounts"}
    assert not engine.flush()


def test_same_commands_give_the_same_state() -> None:
    def run() -> str:
        engine = Engine()
        t = T0
        commands: list[Any] = [
            OpenAccount(ts=t, user_id="a", password_hash="h", init_cash=1e6),
            OpenAccount(ts=t + 1, user_id="b", password_hash="h", init_cash=1e6),
        ]
        for i in range(40):
            user = "ab"[i % 2]
            commands.append(
                Insert(
                    ts=t + 10 + i,
                    order=InsertOrder(
                        user_id=user,
                        order_id=f"o{i}",
                        exchange_id="SHFE",
                        instrument_id="rb2601",
                        direction="BUY" if i % 3 else "SELL",
                        offset="OPEN",
                        volume=1 + i % 4,
                        limit_price=3100.0 + (i % 5) - 2,
                    ),
                )
            )
        for command in commands:
            engine.apply(command)
            engine.flush()
        return engine.state_digest()

    assert run() == run()


def test_trading_day_rolls_over_at_six_pm_and_skips_weekends() -> None:
    # 2025-11-28 is a Friday: 20:00 China time belongs to Monday 2025-12-01.
    friday_evening = 1_764_331_200_000_000_000
    assert trading_day_of(friday_evening) == "20251201"


@pytest.mark.parametrize("order_id", ["", "x" * (limits.MAX_ID_LENGTH + 1)])
def test_an_empty_or_oversized_order_id_is_refused_without_a_trace(order_id: str) -> None:
    engine = make_engine("a")
    with pytest.raises(RiskError):
        order(engine, "a", order_id, "BUY", 1)
    assert engine.users["a"].orders == {}
    assert order(engine, "a", "x" * limits.MAX_ID_LENGTH, "BUY", 1).status == "ALIVE"


@pytest.mark.parametrize(("volume", "price"), [(2**64, 86000.0), (-(2**64), 86000.0), (0, 86000.0), (-1, 86000.0),
                                               (1, 1e308), (1, -1.0), (1, float("nan")), (1, float("inf"))])  # fmt: skip
def test_numbers_beyond_the_global_bounds_are_refused_as_a_whole(volume: int, price: float) -> None:
    # Built in-process (no decoder in front): still refused before anything is kept or journaled.
    engine = make_engine("a")
    with pytest.raises(RiskError):
        order(engine, "a", "big", "BUY", volume, price)
    assert engine.users["a"].orders == {}


def test_a_price_far_above_the_limit_on_a_small_tick_is_a_limit_rejection() -> None:
    engine = make_engine("a")
    request = InsertOrder(user_id="a", order_id="far", exchange_id="SHFE", instrument_id="au2602",
                          direction="BUY", offset="OPEN", volume=1, limit_price=limits.MAX_PRICE)  # fmt: skip
    rejected = engine.apply(Insert(ts=ts(), order=request))
    assert rejected.status == "FINISHED" and "涨停" in rejected.last_msg


def test_the_day_keeps_only_the_newest_rejected_orders() -> None:
    engine = make_engine("a")
    engine.flush()
    for number in range(MAX_REJECTED_KEPT + 5):
        assert order(engine, "a", f"r{number}", "BUY", 1, 86005.0).status == "FINISHED"  # off the tick grid
    kept = engine.users["a"].orders
    assert len(kept) == MAX_REJECTED_KEPT and "r0" not in kept and f"r{MAX_REJECTED_KEPT + 4}" in kept
    rendered = engine.flush().users["a"]["orders"]
    assert rendered["r0"] is None and rendered["r4"] is None and rendered["r5"] is not None
    assert order(engine, "a", "good", "BUY", 1, 86000.0).status == "ALIVE"  # a dropped refusal is no limit
