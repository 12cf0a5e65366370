"""Futures account behaviour, one rule per test, with numbers worked out by hand.

Contracts used (from the built-in registry):
  SHFE.rb2601  multiplier 10, margin 7 %, commission 0.01 % of turnover for open/close/close-today
  SHFE.cu2601  multiplier 5, margin 10 %, open/close 0.005 %, close-today 0.01 %
  SHFE.au2602  multiplier 1000, margin 14 %, open/close 10 per lot, close-today 0
  DCE.m2601    multiplier 10, margin 7 %, 1.5 per lot for everything
  CFFEX.IF2512 multiplier 300, margin 12 %, open/close 0.0023 %, close-today 0.023 % (10×)
"""

from __future__ import annotations

import itertools
import math
import pickle

import pytest

from qaex.core.account import (
    ACCOUNT_FIELDS,
    MSG_CLOSE,
    MSG_CLOSE_HIS,
    MSG_CLOSE_TODAY,
    MSG_OPEN_FUNDS,
    MSG_WITHDRAW_FUNDS,
    POSITION_FIELDS,
    Account,
)
from qaex.core.errors import RiskError
from qaex.core.instruments import Instrument, InstrumentRegistry
from qaex.core.orders import Direction, Offset, Order

INSTRUMENTS = InstrumentRegistry()
RB = INSTRUMENTS["SHFE.rb2601"]
CU = INSTRUMENTS["SHFE.cu2601"]
AU = INSTRUMENTS["SHFE.au2602"]
M = INSTRUMENTS["DCE.m2601"]
IF = INSTRUMENTS["CFFEX.IF2512"]
_ids = itertools.count(1)


def order(instrument: Instrument, direction: Direction, offset: Offset, volume: int, price: float) -> Order:
    """A new order as the engine builds it: volume_left == volume_orign."""
    seqno = next(_ids)
    return Order(
        seqno=seqno, user_id="u", order_id=f"o{seqno}", exchange_id=instrument.exchange_id,
        instrument_id=instrument.instrument_id, direction=direction, offset=offset, volume_orign=volume,
        price_type="LIMIT", limit_price=price, time_condition="GFD", volume_condition="ANY",
        insert_date_time=0, volume_left=volume,
    )  # fmt: skip


def fill(account: Account, o: Order, instrument: Instrument, price: float, volume: int) -> float:
    """Fill the way the engine does: account first, then lower volume_left."""
    commission = account.fill(o, instrument, price, volume)
    o.volume_left -= volume
    return commission


def trade(
    account: Account, instrument: Instrument, direction: Direction, offset: Offset, volume: int, price: float
) -> Order:
    """Insert an order and fill it completely at its price."""
    o = order(instrument, direction, offset, volume, price)
    account.freeze(o, instrument, price)
    fill(account, o, instrument, price, volume)
    return o


def snapshot(account: Account) -> dict[str, object]:
    """Every DIFF field of the account and its positions, NaN made comparable."""

    def clean(diff: dict[str, object]) -> dict[str, object]:
        return {k: "NaN" if isinstance(v, float) and math.isnan(v) else v for k, v in diff.items()}

    return {"account": clean(account.to_diff())} | {
        s: clean(p.to_diff()) for s, p in account.positions.items()
    }


def rejection(account: Account, o: Order, instrument: Instrument, price: float) -> RiskError:
    """Freeze an order expected to be refused; check that the account did not change at all."""
    before = snapshot(account)
    with pytest.raises(RiskError) as caught:
        account.freeze(o, instrument, price)
    assert snapshot(account) == before
    assert o.frozen_margin == 0.0 and o.frozen_commission == 0.0
    assert o.frozen_volume_his == 0 and o.frozen_volume_today == 0
    return caught.value


def account_with_position(
    instrument: Instrument, *, his: int, today: int, direction: Direction = "BUY", price: float = 0.0
) -> Account:
    """An account holding `his` lots opened yesterday and `today` lots opened today, all at `price`."""
    price = price or instrument.pre_settlement
    account = Account("u", 10_000_000.0)
    if his:
        trade(account, instrument, direction, "OPEN", his, price)
        account.settle({instrument.symbol: price}, INSTRUMENTS)
    if today:
        trade(account, instrument, direction, "OPEN", today, price)
    return account


# -- fields -----------------------------------------------------------------------------------------


def test_new_account_starts_with_init_cash_as_pre_balance() -> None:
    account = Account("u", 1_000_000.0)
    assert (
        account.pre_balance == account.static_balance == account.balance == account.available == 1_000_000.0
    )
    assert account.deposit == 0.0
    assert account.currency == "CNY"


def test_account_to_diff_has_exactly_the_diff_fields() -> None:
    diff = Account("u", 100.0).to_diff()
    assert tuple(diff) == ACCOUNT_FIELDS
    assert all(
        isinstance(value, int | float) for key, value in diff.items() if key not in ("user_id", "currency")
    )


def test_position_to_diff_has_exactly_the_diff_fields() -> None:
    diff = Account("u").position(RB).to_diff()
    assert tuple(diff) == POSITION_FIELDS
    assert diff["exchange_id"] == "SHFE" and diff["instrument_id"] == "rb2601"
    assert diff["last_price"] == "-"  # NaN travels as "-" (DIFF.md)


def test_risk_ratio_is_margin_over_balance() -> None:
    account = Account("u", 100_000.0)
    trade(account, RB, "BUY", "OPEN", 2, 3100.0)  # margin 4340, commission 6.2
    assert account.risk_ratio == pytest.approx(4340.0 / (100_000.0 - 6.2))


def test_risk_ratio_is_zero_when_balance_is_not_positive() -> None:
    account = Account("u", 0.0)
    assert account.risk_ratio == 0.0


# -- opening ----------------------------------------------------------------------------------------


def test_open_order_freezes_margin_and_commission() -> None:
    account = Account("u", 1_000_000.0)
    o = order(RB, "BUY", "OPEN", 2, 3100.0)
    account.freeze(o, RB, 3100.0)
    # margin 3100 × 10 × 7 % × 2 = 4340; commission 3100 × 10 × 0.01 % × 2 = 6.2
    assert o.frozen_margin == pytest.approx(4340.0)
    assert o.frozen_commission == pytest.approx(6.2)
    assert account.frozen_margin == pytest.approx(4340.0)
    assert account.frozen_commission == pytest.approx(6.2)
    assert account.available == pytest.approx(1_000_000.0 - 4346.2)
    assert account.balance == 1_000_000.0


def test_cancel_releases_frozen_amounts_exactly() -> None:
    account = Account("u", 1_000_000.0)
    o = order(RB, "BUY", "OPEN", 3, 3101.0)
    account.freeze(o, RB, 3101.0)
    account.release(o)
    assert account.frozen_margin == 0.0 and account.frozen_commission == 0.0
    assert o.frozen_margin == 0.0 and o.frozen_commission == 0.0
    assert account.available == 1_000_000.0


def test_frozen_money_is_exactly_zero_once_no_open_order_is_left_though_a_close_order_rests() -> None:
    account = Account("u", 1_000_000.0)
    trade(account, RB, "BUY", "OPEN", 1, 3100.0)
    close = order(RB, "SELL", "CLOSETODAY", 1, 3200.0)
    account.freeze(close, RB, 3200.0)  # freezes a lot, no money
    first, second = order(RB, "BUY", "OPEN", 1, 3101.0), order(RB, "BUY", "OPEN", 2, 3101.0)
    account.freeze(first, RB, 3101.0)
    account.freeze(second, RB, 3101.0)
    account.release(first)
    account.release(second)  # 2170.7 + 4341.4 − 2170.7 − 4341.4 leaves −9.1e-13 when summed as floats
    assert account.frozen_margin == 0.0 and account.frozen_commission == 0.0
    assert account.positions["SHFE.rb2601"].volume_long_frozen == 1  # the close order still rests
    third = order(RB, "BUY", "OPEN", 1, 3101.0)
    account.freeze(third, RB, 3101.0)
    fill(account, third, RB, 3101.0, 1)  # a last fill ends an OPEN order too
    assert account.frozen_margin == 0.0 and account.frozen_commission == 0.0


def test_an_account_pickled_before_money_orders_were_tracked_loads_and_snaps_to_zero() -> None:
    account = Account("u", 1_000_000.0)
    trade(account, RB, "BUY", "OPEN", 1, 3100.0)
    close = order(RB, "SELL", "CLOSETODAY", 1, 3200.0)
    account.freeze(close, RB, 3200.0)
    opens = [order(RB, "BUY", "OPEN", volume, 3101.0) for volume in (1, 2)]
    for o in opens:
        account.freeze(o, RB, 3101.0)
    _, slots = account.__getstate__()
    assert "_money_orders" in slots
    old_slots = {name: value for name, value in slots.items() if name != "_money_orders"}

    class Checkpointed:  # pickles as the Account class did before it had _money_orders
        def __reduce__(self) -> tuple[object, ...]:
            return object.__new__, (Account,), (None, old_slots)

    loaded = pickle.loads(pickle.dumps(Checkpointed()))
    assert type(loaded) is Account
    assert snapshot(loaded) == snapshot(account)
    for o in opens:
        loaded.release(o)
    # What the old checkpoint could not tell apart counts as holding money until it ends.
    assert loaded.frozen_margin != 0.0
    loaded.release(close)
    assert loaded.frozen_margin == 0.0 and loaded.frozen_commission == 0.0
    again = order(RB, "BUY", "OPEN", 1, 3101.0)
    loaded.freeze(again, RB, 3101.0)
    loaded.release(again)
    assert loaded.frozen_margin == 0.0
    # The current format keeps the set.
    current = pickle.loads(pickle.dumps(account))
    for o in opens:
        current.release(o)
    assert current.frozen_margin == 0.0 and current.frozen_commission == 0.0


def test_fill_moves_frozen_margin_to_margin_and_charges_commission() -> None:
    account = Account("u", 1_000_000.0)
    o = order(RB, "BUY", "OPEN", 2, 3100.0)
    account.freeze(o, RB, 3100.0)
    commission = fill(account, o, RB, 3090.0, 2)  # filled better than the limit
    # margin at the fill price: 3090 × 10 × 7 % × 2 = 4326; commission 3090 × 10 × 0.01 % × 2 = 6.18
    assert commission == pytest.approx(6.18)
    assert account.frozen_margin == 0.0 and account.frozen_commission == 0.0
    assert account.margin == pytest.approx(4326.0)
    assert account.commission == pytest.approx(6.18)
    assert account.balance == pytest.approx(1_000_000.0 - 6.18)
    assert account.available == pytest.approx(1_000_000.0 - 6.18 - 4326.0)
    position = account.positions["SHFE.rb2601"]
    assert (position.volume_long_today, position.volume_long_his, position.volume_long) == (2, 0, 2)
    assert (position.pos_long_today, position.pos_long_his) == (2, 0)
    assert position.open_price_long == position.position_price_long == pytest.approx(3090.0)
    assert position.open_cost_long == position.position_cost_long == pytest.approx(61_800.0)
    assert position.last_price == 3090.0  # the first price the position sees
    assert position.margin_long == position.margin == pytest.approx(4326.0)
    assert math.isnan(position.open_price_short)


def test_partial_fill_releases_its_share_and_cancel_releases_the_rest() -> None:
    account = Account("u", 1_000_000.0)
    o = order(RB, "BUY", "OPEN", 4, 3100.0)
    account.freeze(o, RB, 3100.0)  # 4 × 2170 margin, 4 × 3.1 commission
    fill(account, o, RB, 3100.0, 1)
    assert o.frozen_margin == pytest.approx(3 * 2170.0)
    assert o.frozen_commission == pytest.approx(3 * 3.1)
    assert account.frozen_margin == pytest.approx(3 * 2170.0)
    assert account.margin == pytest.approx(2170.0)
    account.release(o)
    assert account.frozen_margin == 0.0 and account.frozen_commission == 0.0
    assert account.available == pytest.approx(1_000_000.0 - 3.1 - 2170.0)


def test_last_fill_releases_everything_left_frozen() -> None:
    account = Account("u", 1_000_000.0)
    o = order(CU, "SELL", "OPEN", 3, 86010.0)
    account.freeze(o, CU, 86010.0)
    for _ in range(3):
        fill(account, o, CU, 86010.0, 1)
    assert o.frozen_margin == 0.0 and o.frozen_commission == 0.0
    assert account.frozen_margin == 0.0 and account.frozen_commission == 0.0


def test_open_without_enough_funds_is_rejected_with_the_sim_text_and_changes_nothing() -> None:
    account = Account("u", 5_000.0)
    o = order(RB, "BUY", "OPEN", 3, 3100.0)  # needs 6510 margin + 9.3 commission
    error = rejection(account, o, RB, 3100.0)
    assert error.message == MSG_OPEN_FUNDS == "开仓资金不足"
    assert error.code == "insufficient_funds" and error.diff_code == 413


def test_open_that_needs_exactly_the_available_funds_is_accepted() -> None:
    # 1 lot of au at 950: margin 950 × 1000 × 14 % = 133000, commission 10 per lot.
    account = Account("u", 133_010.0)
    account.freeze(order(AU, "BUY", "OPEN", 1, 950.0), AU, 950.0)
    assert account.available == pytest.approx(0.0)


def test_frozen_funds_count_against_the_next_order() -> None:
    account = Account("u", 140_000.0)
    account.freeze(order(AU, "BUY", "OPEN", 1, 950.0), AU, 950.0)  # 133010 frozen
    error = rejection(account, order(AU, "SELL", "OPEN", 1, 950.0), AU, 950.0)
    assert error.message == MSG_OPEN_FUNDS


# -- closing: which lots ----------------------------------------------------------------------------


def test_shfe_close_takes_only_yesterdays_lots() -> None:
    account = account_with_position(CU, his=3, today=2)
    error = rejection(account, order(CU, "SELL", "CLOSE", 4, 86000.0), CU, 86000.0)
    assert error.message == MSG_CLOSE_HIS == "平昨仓手数不足"
    assert error.code == "insufficient_position"
    o = order(CU, "SELL", "CLOSE", 3, 86000.0)
    account.freeze(o, CU, 86000.0)
    assert (o.frozen_volume_his, o.frozen_volume_today) == (3, 0)
    position = account.positions["SHFE.cu2601"]
    assert (position.volume_long_frozen_his, position.volume_long_frozen_today) == (3, 0)
    assert position.volume_long_frozen == 3


def test_shfe_closetoday_takes_only_todays_lots() -> None:
    account = account_with_position(CU, his=3, today=2)
    error = rejection(account, order(CU, "SELL", "CLOSETODAY", 3, 86000.0), CU, 86000.0)
    assert error.message == MSG_CLOSE_TODAY == "平今仓手数不足"
    o = order(CU, "SELL", "CLOSETODAY", 2, 86000.0)
    account.freeze(o, CU, 86000.0)
    assert (o.frozen_volume_his, o.frozen_volume_today) == (0, 2)


def test_ine_keeps_today_and_yesterday_apart_like_shfe() -> None:
    sc = INSTRUMENTS["INE.sc2601"]
    account = account_with_position(sc, his=0, today=1, direction="SELL")
    error = rejection(account, order(sc, "BUY", "CLOSE", 1, 480.0), sc, 480.0)
    assert error.message == MSG_CLOSE_HIS


@pytest.mark.parametrize("symbol", ["DCE.m2601", "CZCE.SR601", "CFFEX.IF2512"])
@pytest.mark.parametrize("offset", ["CLOSE", "CLOSETODAY"])
def test_other_exchanges_close_any_lots_yesterdays_first(symbol: str, offset: Offset) -> None:
    instrument = INSTRUMENTS[symbol]
    account = account_with_position(instrument, his=2, today=3)
    o = order(instrument, "SELL", offset, 4, instrument.pre_settlement)
    account.freeze(o, instrument, instrument.pre_settlement)
    assert (o.frozen_volume_his, o.frozen_volume_today) == (2, 2)
    error = rejection(
        account, order(instrument, "SELL", offset, 2, instrument.pre_settlement), instrument, 0.0
    )
    assert error.message == MSG_CLOSE == "平仓手数不足"


def test_close_without_any_position_is_rejected() -> None:
    account = Account("u", 1_000_000.0)
    error = rejection(account, order(M, "BUY", "CLOSE", 1, 3000.0), M, 3000.0)
    assert error.message == MSG_CLOSE
    assert "DCE.m2601" not in account.positions  # a refused close creates no position


def test_buy_close_takes_the_short_side() -> None:
    account = account_with_position(M, his=0, today=2, direction="SELL")
    rejection(account, order(M, "SELL", "CLOSE", 1, 3000.0), M, 3000.0)  # no long lots
    o = order(M, "BUY", "CLOSE", 2, 3000.0)
    account.freeze(o, M, 3000.0)
    assert account.positions["DCE.m2601"].volume_short_frozen_today == 2


def test_a_second_close_cannot_take_lots_frozen_by_the_first() -> None:
    account = account_with_position(CU, his=3, today=0)
    first = order(CU, "SELL", "CLOSE", 2, 86000.0)
    account.freeze(first, CU, 86000.0)
    error = rejection(account, order(CU, "SELL", "CLOSE", 2, 86000.0), CU, 86000.0)
    assert error.message == MSG_CLOSE_HIS
    account.release(first)
    assert account.positions["SHFE.cu2601"].volume_long_frozen == 0
    account.freeze(order(CU, "SELL", "CLOSE", 2, 86000.0), CU, 86000.0)


def test_close_freezes_no_money() -> None:
    account = account_with_position(M, his=1, today=0)
    available = account.available
    account.freeze(order(M, "SELL", "CLOSE", 1, 3000.0), M, 3000.0)
    assert account.available == available
    assert account.frozen_margin == 0.0


# -- closing: money ---------------------------------------------------------------------------------


def test_close_profit_of_a_long_is_fill_minus_position_price() -> None:
    account = Account("u", 1_000_000.0)
    trade(account, RB, "BUY", "OPEN", 2, 3100.0)
    trade(account, RB, "SELL", "CLOSETODAY", 2, 3150.0)
    # (3150 − 3100) × 10 × 2
    assert account.close_profit == pytest.approx(1000.0)
    assert account.margin == 0.0 and account.position_profit == 0.0
    position = account.positions["SHFE.rb2601"]
    assert position.volume_long == 0 and position.margin == 0.0 and position.open_cost_long == 0.0
    assert math.isnan(position.open_price_long) and math.isnan(position.position_price_long)
    # commissions: open 3100 × 10 × 0.01 % × 2 = 6.2, close-today 3150 × 10 × 0.01 % × 2 = 6.3
    assert account.balance == pytest.approx(1_000_000.0 + 1000.0 - 6.2 - 6.3)
    assert account.available == account.balance


def test_close_profit_of_a_short_is_position_price_minus_fill() -> None:
    account = Account("u", 1_000_000.0)
    trade(account, M, "SELL", "OPEN", 3, 3000.0)
    trade(account, M, "BUY", "CLOSE", 1, 2980.0)
    # (3000 − 2980) × 10 × 1
    assert account.close_profit == pytest.approx(200.0)
    position = account.positions["DCE.m2601"]
    assert position.volume_short == 2
    assert position.open_cost_short == pytest.approx(60_000.0)
    assert position.margin_short == pytest.approx(2 * 3000 * 10 * 0.07)


def test_partial_close_keeps_the_average_price_of_the_rest() -> None:
    account = Account("u", 1_000_000.0)
    trade(account, RB, "BUY", "OPEN", 1, 3100.0)
    trade(account, RB, "BUY", "OPEN", 1, 3120.0)  # average 3110
    trade(account, RB, "SELL", "CLOSETODAY", 1, 3130.0)
    assert account.close_profit == pytest.approx((3130.0 - 3110.0) * 10)
    position = account.positions["SHFE.rb2601"]
    assert position.open_price_long == pytest.approx(3110.0)
    assert position.margin_long == pytest.approx(3110.0 * 10 * 0.07)


def test_cffex_closing_todays_lot_pays_the_close_today_rate() -> None:
    account = Account("u", 10_000_000.0)
    trade(account, IF, "BUY", "OPEN", 1, 4500.0)
    o = order(IF, "SELL", "CLOSE", 1, 4500.0)
    account.freeze(o, IF, 4500.0)
    # close-today 0.023 % of 4500 × 300: 310.5 (the close rate would be 31.05)
    assert fill(account, o, IF, 4500.0, 1) == pytest.approx(310.5)


def test_cffex_closing_yesterdays_lot_pays_the_close_rate() -> None:
    account = account_with_position(IF, his=1, today=0)
    o = order(IF, "SELL", "CLOSE", 1, 4500.0)
    account.freeze(o, IF, 4500.0)
    assert fill(account, o, IF, 4500.0, 1) == pytest.approx(31.05)


def test_mixed_close_outside_shfe_charges_each_part_at_its_rate() -> None:
    account = account_with_position(IF, his=1, today=1)
    o = order(IF, "SELL", "CLOSE", 2, 4500.0)
    account.freeze(o, IF, 4500.0)
    assert fill(account, o, IF, 4500.0, 2) == pytest.approx(31.05 + 310.5)
    position = account.positions["CFFEX.IF2512"]
    assert position.volume_long_his == position.volume_long_today == 0


def test_shfe_gold_close_today_is_free_and_close_yesterday_costs_10() -> None:
    account = account_with_position(AU, his=1, today=1)
    close_today = order(AU, "SELL", "CLOSETODAY", 1, 950.0)
    account.freeze(close_today, AU, 950.0)
    assert fill(account, close_today, AU, 950.0, 1) == 0.0
    close = order(AU, "SELL", "CLOSE", 1, 950.0)
    account.freeze(close, AU, 950.0)
    assert fill(account, close, AU, 950.0, 1) == pytest.approx(10.0)


def test_close_fill_unfreezes_the_lots_it_took() -> None:
    account = account_with_position(M, his=2, today=2)
    o = order(M, "SELL", "CLOSE", 3, 3000.0)
    account.freeze(o, M, 3000.0)  # 2 yesterday's + 1 today's
    fill(account, o, M, 3000.0, 2)  # yesterday's go first
    position = account.positions["DCE.m2601"]
    assert (position.volume_long_his, position.volume_long_today) == (0, 2)
    assert (position.volume_long_frozen_his, position.volume_long_frozen_today) == (0, 1)
    account.release(o)
    assert position.volume_long_frozen == 0
    assert (o.frozen_volume_his, o.frozen_volume_today) == (0, 0)


# -- mark to market ---------------------------------------------------------------------------------


def test_mark_moves_long_float_and_position_profit() -> None:
    account = Account("u", 1_000_000.0)
    trade(account, RB, "BUY", "OPEN", 2, 3100.0)
    assert account.mark(RB, 3120.0) is True
    position = account.positions["SHFE.rb2601"]
    # (3120 − 3100) × 10 × 2
    assert position.float_profit_long == position.position_profit_long == pytest.approx(400.0)
    assert position.float_profit == position.position_profit == pytest.approx(400.0)
    assert account.position_profit == account.float_profit == pytest.approx(400.0)
    assert account.balance == pytest.approx(1_000_000.0 - 6.2 + 400.0)
    assert account.margin == pytest.approx(4340.0)  # margin stays on the position price


def test_mark_moves_short_profit_the_other_way() -> None:
    account = Account("u", 1_000_000.0)
    trade(account, RB, "SELL", "OPEN", 2, 3100.0)
    account.mark(RB, 3120.0)
    position = account.positions["SHFE.rb2601"]
    assert position.float_profit_short == position.position_profit_short == pytest.approx(-400.0)
    assert account.position_profit == pytest.approx(-400.0)


def test_mark_nets_both_sides_of_a_position() -> None:
    account = Account("u", 1_000_000.0)
    trade(account, RB, "BUY", "OPEN", 3, 3100.0)
    trade(account, RB, "SELL", "OPEN", 1, 3110.0)
    account.mark(RB, 3090.0)
    position = account.positions["SHFE.rb2601"]
    assert position.position_profit_long == pytest.approx(-300.0)
    assert position.position_profit_short == pytest.approx(200.0)
    assert account.position_profit == pytest.approx(-100.0)


def test_mark_reports_no_change_for_same_price_nan_or_no_position() -> None:
    account = Account("u", 1_000_000.0)
    assert account.mark(RB, 3100.0) is False  # no position: none is created
    assert account.positions == {}
    trade(account, RB, "BUY", "OPEN", 1, 3100.0)
    assert account.mark(RB, 3100.0) is False
    assert account.mark(RB, math.nan) is False


# -- cash -------------------------------------------------------------------------------------------


def test_deposit_adds_to_static_balance_and_available() -> None:
    account = Account("u", 1_000.0)
    account.deposit_cash(500.0)
    assert account.deposit == 500.0
    assert account.static_balance == account.balance == account.available == 1_500.0


def test_withdraw_up_to_available() -> None:
    account = Account("u", 1_000.0)
    account.withdraw_cash(1_000.0)
    assert account.withdraw == 1_000.0 and account.available == 0.0


def test_withdraw_beyond_available_is_rejected() -> None:
    account = Account("u", 200_000.0)
    account.freeze(order(AU, "BUY", "OPEN", 1, 950.0), AU, 950.0)  # 133010 frozen, 66990 available
    with pytest.raises(RiskError) as caught:
        account.withdraw_cash(70_000.0)
    assert caught.value.message == MSG_WITHDRAW_FUNDS
    assert caught.value.code == "insufficient_funds"
    assert account.withdraw == 0.0


# -- settlement -------------------------------------------------------------------------------------


def test_settlement_worked_example() -> None:
    account = Account("u", 1_000_000.0)
    account.deposit_cash(10_000.0)
    # Buy 2 cu at 86000: margin 86000 × 5 × 10 % × 2 = 86000, commission 86000 × 5 × 0.005 % × 2 = 43.
    trade(account, CU, "BUY", "OPEN", 2, 86000.0)
    account.mark(CU, 86500.0)
    assert account.position_profit == pytest.approx(5000.0)

    account.settle({"SHFE.cu2601": 86400.0}, INSTRUMENTS)

    # The day's result at the settlement price: (86400 − 86000) × 5 × 2 = 4000 position profit.
    # pre_balance = 1000000 + 10000 − 43 + 4000 = 1013957.
    assert account.pre_balance == pytest.approx(1_013_957.0)
    assert account.static_balance == account.balance == pytest.approx(1_013_957.0)
    assert (account.deposit, account.withdraw, account.close_profit, account.commission) == (
        0.0,
        0.0,
        0.0,
        0.0,
    )
    assert account.position_profit == 0.0
    position = account.positions["SHFE.cu2601"]
    assert (position.volume_long_his, position.volume_long_today) == (2, 0)
    assert (position.pos_long_his, position.pos_long_today) == (2, 0)
    assert position.position_price_long == pytest.approx(86400.0)
    assert position.open_price_long == pytest.approx(86000.0)  # open price is kept
    assert position.float_profit_long == pytest.approx(4000.0)  # still measured from the open price
    assert account.float_profit == pytest.approx(4000.0)
    # Margin at the settlement price: 86400 × 5 × 10 % × 2 = 86400.
    assert account.margin == position.margin == pytest.approx(86400.0)
    assert account.available == pytest.approx(1_013_957.0 - 86400.0)

    # Next day: closing a lot realizes profit against the settlement price, at the close rate.
    close = order(CU, "SELL", "CLOSE", 1, 86600.0)
    account.freeze(close, CU, 86600.0)
    assert fill(account, close, CU, 86600.0, 1) == pytest.approx(86600.0 * 5 * 0.00005)  # 21.65
    assert account.close_profit == pytest.approx((86600.0 - 86400.0) * 5)  # 1000


def test_settlement_uses_last_price_when_no_settlement_price_is_given() -> None:
    account = Account("u", 1_000_000.0)
    trade(account, M, "SELL", "OPEN", 1, 3000.0)
    account.mark(M, 2990.0)
    account.settle({}, INSTRUMENTS)
    assert account.pre_balance == pytest.approx(1_000_000.0 - 1.5 + 100.0)
    assert account.positions["DCE.m2601"].position_price_short == pytest.approx(2990.0)


def test_settlement_with_an_open_order_is_refused() -> None:
    account = Account("u", 1_000_000.0)
    account.freeze(order(M, "BUY", "OPEN", 1, 3000.0), M, 3000.0)
    with pytest.raises(AssertionError):
        account.settle({}, INSTRUMENTS)
